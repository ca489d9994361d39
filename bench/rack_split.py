"""Experiment: does splitting each peer into two libtorrent sessions keep a release to one copy per rack?

docs/topology.md proposed it in session 18: libtorrent cannot be told to
take a piece from a rack-mate rather than from another rack, so split the
connections. Each host runs an **outward** session that wants only its
stripe of the pieces (piece ``p`` with ``p % H == k`` for the host's index
``k`` in its rack of ``H``) and talks to the seeder and to the hosts of the
same stripe in other racks, and an **inward** session that wants every
piece and, through an IP filter, talks to its rack-mates only. Each piece
the outward session finishes is read back (``read_piece``) and handed to
the inward one (``add_piece``), so each piece should enter a rack once.

This is a measurement, not murder's code path: no Salt, no tracker (every
session is told its peers with ``connect_peer``), so that the three ways of
choosing peers below are compared on the same footing, in one run:

* ``split``: the two sessions above;
* ``rack``: one session, connected to the seeder, its rack-mates and one host
  of another rack (what murder's ``peer_choice: rack`` hands out);
* ``random``: one session, connected to the seeder and every other host;
* ``split_leave`` (only when asked for with ``--modes``): the split, where
  each outward session takes its own share of its stripe from the seeder
  first and then blocks the seeder's address, getting the rest of the
  stripe from the same stripe's hosts in other racks (back to the seeder
  after ``SEEDER_FALLBACK`` seconds without progress).

Every session has the datacenter profile (``murder_core.profile``). The
network is ``netlab.Network`` with racks, as in ``make bench TOPOLOGY=RxH``:
R racks of H hosts behind uplinks of ``--uplink-mbit``, the seeder on the
core. It records, per run, the copies of the release that entered each rack
through its uplink, when each host and each rack's last host had every
piece, what each host's outward (or only) session downloaded, in copies,
and the seeder's copies; results go to ``bench/results/rack-split-latest.json``.
Needs root. Bounded: every run has ``--timeout``; every process and
namespace is removed at the end, also on failure.
"""
import argparse
import datetime
import json
import logging
import os
import pathlib
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import libtorrent as lt  # noqa: E402

import report  # noqa: E402
from murder_core import pack, profile, torrent  # noqa: E402
from netlab import Network  # noqa: E402

log = logging.getLogger("bench.rack_split")

MODES = ("split", "rack", "random")
# Also measurable (--modes): the split, with the seeder's duplicates cut as murder's stripes cut them.
EXTRA_MODES = ("split_leave",)
# Seconds without progress after leaving the seeder before a split_leave host goes back to it.
SEEDER_FALLBACK = 5.0
OUT_PORT, IN_PORT = 6881, 6882
MiB = 1024 * 1024
RESULTS = HERE / "results" / "rack-split-latest.json"


# ---- the process on each simulated host -------------------------------------------------------------------------

def _session(address, port, seeder=False):
    return profile.make_session(f"{address}:{port}", seeder=seeder)


def _add(session, data, save_path, seeding=False):
    params = lt.add_torrent_params()
    params.ti = torrent.load(data)
    params.save_path = save_path
    params.flags = (params.flags | (lt.torrent_flags.seed_mode if seeding else 0)) \
        & ~lt.torrent_flags.auto_managed & ~lt.torrent_flags.paused
    handle = session.add_torrent(params)
    handle.replace_trackers([])  # peers are told whom to meet; nothing announces
    return handle


def child(job):
    """Run one host (or the seeder) as ``job`` says; print ``done <monotonic>`` once it has every piece,
    then serve until stdin says ``stop``, and print what it uploaded and downloaded as JSON."""
    data = bytes.fromhex(job["torrent"])
    info = torrent.describe(data)
    sessions, handles = [], {}
    own, left_seeder, last_done, last_change = set(), None, -1, time.monotonic()
    if job["role"] == "seeder":
        session = _session(job["address"], OUT_PORT, seeder=True)
        sessions.append(session)
        handles["out"] = _add(session, data, job["save"], seeding=True)
    else:
        outward = _session(job["address"], OUT_PORT)
        sessions.append(outward)
        handles["out"] = _add(outward, data, os.path.join(job["save"], "out"))
        if job["mode"].startswith("split"):
            pieces = info.size // info.piece_size + bool(info.size % info.piece_size)
            stripe = [p for p in range(pieces) if p % job["stripes"] == job["stripe"]]
            if job["mode"] == "split_leave":
                # Within the stripe's outward swarm (one host a rack) each host takes its own share from the
                # seeder first and leaves it once that is in, as murder's stripes do for the whole swarm.
                own = {p for p in stripe if (p // job["stripes"]) % job["racks"] == job["rack_index"]}
            handles["out"].prioritize_pieces([(7 if p in own else 1) if p in stripe else 0 for p in range(pieces)])
            # The profile leaves piece alerts off; the hand-over needs them.
            mask = outward.get_settings()["alert_mask"] | int(lt.alert.category_t.piece_progress_notification)
            outward.apply_settings({"alert_mask": mask})
            inward = _session(job["address"], IN_PORT)
            rack_filter = lt.ip_filter()
            rack_filter.add_rule("0.0.0.0", "255.255.255.255", 1)
            rack_filter.add_rule(job["rack_first"], job["rack_last"], 0)
            inward.set_ip_filter(rack_filter)
            sessions.append(inward)
            handles["in"] = _add(inward, data, os.path.join(job["save"], "in"))
    connect = {name: [tuple(e) for e in job["connect"].get(name, [])] for name in handles}
    done = job["role"] == "seeder"
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    last_connect = 0.0
    handed = 0
    while not stop.is_set():
        now = time.monotonic()
        if now - last_connect > 2:  # again and again: a session refused at first, or dropped, is met again
            last_connect = now
            for name, endpoints in connect.items():
                known = {(p.ip[0], p.ip[1]) for p in handles[name].get_peer_info()}
                for endpoint in endpoints:
                    if endpoint not in known:
                        handles[name].connect_peer(endpoint)
        for session in sessions:
            session.wait_for_alert(50)
            for alert in session.pop_alerts():
                if "in" in handles and session is sessions[0]:
                    if isinstance(alert, lt.piece_finished_alert):
                        handles["out"].read_piece(alert.piece_index)
                    elif isinstance(alert, lt.read_piece_alert) and not alert.error.value():
                        handles["in"].add_piece(alert.piece, alert.buffer, 0)
                        handed += 1
        if own:
            status = handles["out"].status()
            if status.total_wanted_done != last_done:
                last_done, last_change = status.total_wanted_done, now
            if left_seeder is None and all(handles["out"].have_piece(p) for p in own):
                blocked = lt.ip_filter()
                blocked.add_rule(job["seeder_ip"], job["seeder_ip"], 1)
                sessions[0].set_ip_filter(blocked)
                left_seeder = now
            elif left_seeder and not status.is_finished and now - last_change > SEEDER_FALLBACK:
                sessions[0].set_ip_filter(lt.ip_filter())
                left_seeder = 0.0  # back for good
        if not done:
            final = handles.get("in", handles["out"])
            if final.status().is_seeding:
                done = True
                print(f"done {time.monotonic()}", flush=True)
    figures = {name: {"uploaded": h.status().total_payload_upload, "downloaded": h.status().total_payload_download}
               for name, h in handles.items()}
    figures["handed"] = handed
    figures["left_seeder"] = left_seeder is not None
    figures["back_to_seeder"] = left_seeder == 0.0
    print(json.dumps(figures), flush=True)
    return 0


# ---- the experiment -----------------------------------------------------------------------------------------------

def jobs_for(mode, net, racks, data, workdir):
    """What each host is told: its role, its stripe and whom its sessions connect to."""
    hosts = [host for members in racks.values() for host in members]
    seeder = [net.address("seeder"), OUT_PORT]
    jobs = {"seeder": {"role": "seeder", "address": net.address("seeder"), "save": workdir, "connect": {}}}
    names = sorted(racks)
    for r, rack in enumerate(names):
        members = racks[rack]
        addresses = sorted(net.address(h) for h in members)
        for k, host in enumerate(members):
            job = {"role": "peer", "mode": mode, "address": net.address(host), "stripe": k, "stripes": len(members),
                   "racks": len(names), "rack_index": r, "seeder_ip": net.address("seeder"),
                   "rack_first": addresses[0].rsplit(".", 1)[0] + ".0",
                   "rack_last": addresses[0].rsplit(".", 1)[0] + ".255",
                   "save": os.path.join(workdir, host)}
            mates = [h for h in members if h != host]
            if mode.startswith("split"):
                same_stripe = [racks[other][k] for other in names if other != rack and len(racks[other]) > k]
                job["connect"] = {"out": [seeder] + [[net.address(h), OUT_PORT] for h in same_stripe],
                                  "in": [[net.address(h), IN_PORT] for h in mates]}
            elif mode == "rack":
                outside = racks[names[(r + 1) % len(names)]][k]
                job["connect"] = {"out": [seeder] + [[net.address(h), OUT_PORT] for h in mates + [outside]]}
            else:
                job["connect"] = {"out": [seeder] + [[net.address(h), OUT_PORT] for h in hosts if h != host]}
            jobs[host] = job
    for job in jobs.values():
        job["torrent"] = data.hex()
    return jobs


def run_once(mode, args, artifact, data, size, workdir):
    racks = {f"r{r}": [f"h{r}x{k}" for k in range(args.hosts_per_rack)] for r in range(args.racks)}
    placement = {host: rack for rack, members in racks.items() for host in members}
    hosts = ["seeder"] + list(placement)
    procs = {}
    with Network(hosts, args.link_mbit, racks=placement, uplink_mbit=args.uplink_mbit) as net:
        jobs = jobs_for(mode, net, racks, data, workdir)
        shutil.copy(artifact, os.path.join(workdir, os.path.basename(artifact)))
        try:
            for host, job in jobs.items():
                os.makedirs(job["save"], exist_ok=True)
                procs[host] = subprocess.Popen(
                    ["ip", "netns", "exec", net.netns(host), sys.executable, __file__, "--child"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                procs[host].stdin.write(json.dumps(job) + "\n")
                procs[host].stdin.flush()
            for host, proc in procs.items():
                line = proc.stdout.readline()
                if line.strip() != "ready":
                    raise RuntimeError(f"{host} did not start: {line!r}")
            before = {rack: net.uplink_bytes(rack) for rack in racks}
            jiffies = report.machine_jiffies()
            started = time.monotonic()
            # Start is when every session listens; the hosts connect within their first loop.
            done = {}
            deadline = started + args.timeout
            waiting = {procs[h].stdout: h for h in placement}
            while waiting and time.monotonic() < deadline:
                readable, _, _ = select.select(list(waiting), [], [], 1.0)
                for stream in readable:
                    line = stream.readline()
                    host = waiting.pop(stream)
                    if line.startswith("done "):
                        done[host] = float(line.split()[1]) - started
                    else:
                        raise RuntimeError(f"{host} ended without its pieces: {line!r}")
            finished = time.monotonic()
            after = {rack: net.uplink_bytes(rack) for rack in racks}
            busy, total = report.machine_jiffies()
            figures = {}
            for host, proc in procs.items():
                proc.stdin.write("stop\n")
                proc.stdin.flush()
            for host, proc in procs.items():
                out, _ = proc.communicate(timeout=60)
                figures[host] = json.loads(out.strip().splitlines()[-1])
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    missing = sorted(set(placement) - set(done))
    return {
        "policy": mode,
        "seconds": round(max(done.values()), 2) if not missing else None,
        "missing": missing,
        "uplink_copies": [round((after[r]["in"] - before[r]["in"]) / size, 3) for r in sorted(racks)],
        "rack_finish_seconds": [round(max(done.get(h, finished - started) for h in racks[r]), 2)
                                for r in sorted(racks)],
        "host_done_seconds": {host: round(done[host], 2) for host in sorted(done)},
        "host_outward_copies": {host: round(figures[host]["out"]["downloaded"] / size, 3)
                                   for host in placement if host in figures},
        "seeder_copies": round(figures["seeder"]["out"]["uploaded"] / size, 3),
        "handed_pieces": sum(f.get("handed", 0) for f in figures.values()),
        "left_seeder": sum(bool(f.get("left_seeder")) for host, f in figures.items() if host != "seeder"),
        "back_to_seeder": sum(bool(f.get("back_to_seeder")) for host, f in figures.items() if host != "seeder"),
        "cpu_busy": round((busy - jiffies[0]) / max(total - jiffies[1], 1), 3),
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--racks", type=int, default=4)
    parser.add_argument("--hosts-per-rack", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--link-mbit", type=int, default=12)
    parser.add_argument("--uplink-mbit", type=int, default=None, help="default: twice the link")
    parser.add_argument("--modes", nargs="+", choices=MODES + EXTRA_MODES, default=list(MODES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    args.uplink_mbit = args.uplink_mbit or 2 * args.link_mbit
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--child"]:
        return child(json.loads(sys.stdin.readline()))
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if os.geteuid() != 0:
        print("this experiment needs root (network namespaces and tc)", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="murder-rack-split-")
    os.chmod(workdir, 0o755)
    results = {"benchmark": "rack-split",
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "racks": args.racks, "hosts_per_rack": args.hosts_per_rack, "link_mbit": args.link_mbit,
               "uplink_mbit": args.uplink_mbit, "runs": []}
    try:
        build = os.path.join(workdir, "build")
        os.makedirs(build)
        with open(os.path.join(build, "payload.bin"), "wb") as handle:
            handle.write(os.urandom(args.size_mib * MiB))
        artifact = pack.pack(build, os.path.join(workdir, "app.tar.zst"))
        data = torrent.make_torrent(artifact.path, ["http://127.0.0.1:9/announce"], piece_size=0)
        info = torrent.describe(data)
        results.update(size_bytes=artifact.size, piece_size=info.piece_size, torrent_format=info.torrent_format)
        for round_ in range(args.rounds):
            modes = args.modes if round_ % 2 == 0 else list(reversed(args.modes))
            for mode in modes:
                run = run_once(mode, args, artifact.path, data, artifact.size,
                               tempfile.mkdtemp(prefix=f"{mode}-", dir=workdir))
                run["round"] = round_
                results["runs"].append(run)
                log.info("%s: %s s, copies into each rack %s, rack finish %s, seeder %s copies, busy %s",
                         mode, run["seconds"], run["uplink_copies"], run["rack_finish_seconds"],
                         run["seeder_copies"], run["cpu_busy"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {}
    for mode in args.modes:
        runs = [r for r in results["runs"] if r["policy"] == mode and r["seconds"] is not None]
        if runs:
            copies = [c for r in runs for c in r["uplink_copies"]]
            summary[mode] = {"seconds_median": statistics.median(r["seconds"] for r in runs),
                             "uplink_copies_median": statistics.median(copies),
                             "uplink_copies_range": [min(copies), max(copies)]}
    results["summary"] = summary
    report.write(results, args.results)
    print(json.dumps(summary, indent=1))
    return 0 if all(r["seconds"] is not None for r in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
