-- wrk script of `make bench-tracker`: announces of PEERS distinct peers into one swarm.
--
-- wrk -s tracker_announce.lua URL -- <info_hash, percent-encoded> <peers> <threads> <mode>
--
-- Thread t of T announces peers t, t+T, t+2T, ... in turn, as a fleet does
-- (every peer once per interval), each with its own peer_id and port (all
-- come from 127.0.0.1: trackers key peers by address and port). A quarter
-- of the peers have the whole release (left=0). Requests are made once in
-- init(), so wrk measures the tracker, not Lua.
-- mode "fill": each thread stops after announcing each of its peers once,
-- and failure replies are counted; mode "load": run for wrk's -d.
-- done() prints one JSON line starting with "RESULT ".

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local hash, peers, count, mode = args[1], tonumber(args[2]), tonumber(args[3]), args[4]
  requests = {}
  for i = tid, peers - 1, count do
    local left = (i % 4 == 0) and 0 or 1048576
    local path = string.format(
      "/announce?info_hash=%s&peer_id=-BM0001-%012d&port=%d&uploaded=0&downloaded=0&left=%d&compact=1&numwant=50",
      hash, i, 1024 + i, left)
    table.insert(requests, wrk.format("GET", path))
  end
  sent, answered, failures = 0, 0, 0
  if mode ~= "fill" then
    response = nil
  end
end

function request()
  sent = sent + 1
  return requests[(sent - 1) % #requests + 1]
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 or string.find(body, "failure reason", 1, true) then
    failures = failures + 1
  end
  if answered >= #requests then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests_)
  local failed = 0
  for _, thread in ipairs(threads) do
    failed = failed + (thread:get("failures") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, '
    .. '"failure_replies": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout, failed))
end
