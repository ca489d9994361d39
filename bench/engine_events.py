"""The engine keeps the books of a 10,000-host deploy: every peer's events fired on a real master's bus.

A real salt-master with the murder engine (``devtools/lab.py``, on
127.0.0.1, no root) is given ``--peers`` simulated minions: accepted public
keys in its ``pki_dir/minions/`` (copies of the master's own), which is all
Salt's target resolution (``CkMinions.check_minions``) looks at. A deploy of
a tiny release to ``sim*`` is asked for as a CI job asks (a
``murder/deploy/request`` event with a ``request_id``, ``activate`` False:
there is nobody to activate). Once the engine distributes it, each simulated
peer's events are fired on the master's bus as its ``murder.peer`` would
send them through the master: two progress events (the first report, and
the one forced when the download ends) then ``done`` with the report, from
``--processes`` processes, as fast as the bus takes them, phase by phase.

Measured: the rate of firing; the seconds from the last event until the
engine's record of the deploy (``deploys/<deploy_id>.json``, what ``salt-run
murder.status`` reads) holds every peer as done; whether each peer's own
report reached it (none lost, none mixed up); the engine process's CPU
(``/proc/<pid>/stat``, all its threads) and how busy the machine was
(``/proc/stat``), both from the first event to the record. The deploy's
``timeout`` is the bench's deadline: an engine that loses or sits on events
records the peers it never heard from as timed out (or silent) and the run
still ends.

Writes ``bench/results/engine-events-latest.json``; ``bench/tracker.py
--engine-peers N`` runs :func:`measure` after its tracker rounds.
"""
import argparse
import asyncio
import datetime
import json
import logging
import multiprocessing
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # devtools/ lives in the checkout, not the package

import salt.config  # noqa: E402
import salt.utils.event  # noqa: E402

from devtools.lab import Lab  # noqa: E402
from murder_core import config, lifecycle  # noqa: E402
from murder_core.store import Store  # noqa: E402
from report import machine_jiffies  # noqa: E402  (bench/ is a directory of scripts)
from tracker import free_port, process_cpu  # noqa: E402

log = logging.getLogger("bench.engine_events")

RESULTS = HERE / "results" / "engine-events-latest.json"
APP, RELEASE = "enginebench", "r1"
PROCESSES = 2
# The deploy's timeout is the start's bound, the firing's and this: by then the engine has recorded
# every peer as done, failed (silent) or timed out, and the bench waits no longer (plus a margin).
DEADLINE = 120.0
FIRE_SECONDS = 120.0  # firing stops here, whatever is left
START_SECONDS = 120.0  # the master and its engine up, the deploy distributing
JOB_EVENT_GRACE = 25.0  # the reactor publishes to 10,000 minions in 13-17 s
POLL = 0.02  # seconds between two looks at the deploy's record
# What Salt's event publisher logs when it drops a subscriber that does not keep up (10,000 writes queued).
DROPPED = "Publisher discarding slow subscriber"


def minion_ids(peers):
    width = max(5, len(str(peers - 1)))
    return [f"sim{i:0{width}d}" for i in range(peers)]


def simulate_minions(pki_dir, minions):
    """Accepted keys for ``minions``: one RSA public key (the master's), copied under each id."""
    key = (pathlib.Path(pki_dir) / "master.pub").read_bytes()
    accepted = pathlib.Path(pki_dir) / "minions"
    accepted.mkdir(exist_ok=True)
    for minion in minions:
        (accepted / minion).write_bytes(key)


def peer_events(deploy_id, minion, index, size):
    """``[(tag, data), …]`` a real minion's ``murder.peer`` fires for a one-piece release.

    ``data`` is what the master puts on its bus for a minion's event (its
    ``_minion_event`` load: the authenticated ``id``, the payload under
    ``data``). The report carries numbers of this peer's own, so the record
    shows whose report it holds.
    """
    report = {"deploy_id": deploy_id, "minion": minion, "release": RELEASE}
    first = dict(report, bytes_done=0, size=size, rate=0.0, bytes_from_seeder=0, bytes_from_peers=0,
                 peers=1, hash_failures=0)
    last = dict(first, bytes_done=size, rate=float(size), bytes_from_seeder=size - index % (size + 1),
                bytes_from_peers=index % (size + 1), peers=3)
    done = dict(report, changed=True, path=f"/srv/{APP}/releases/{RELEASE}", seconds=expected_seconds(index),
                bytes_from_seeder=last["bytes_from_seeder"], bytes_from_peers=last["bytes_from_peers"],
                hash_failures=0, stripe=[0, 1], steps={"download": 0.5, "unpack": 0.01}, size=size)
    found = []
    for kind, payload in (("progress", first), ("progress", last), ("done", done)):
        tag = getattr(config, f"TAG_PEER_{kind.upper()}").format(deploy_id=deploy_id, minion=minion)
        found.append((tag, {"cmd": "_minion_event", "id": minion, "pretag": None, "tag": tag, "data": payload}))
    return found


def expected_seconds(index):
    """A peer's own ``seconds``, distinct to the millisecond the record keeps."""
    return round(1.0 + index / 1000, 3)


def _fire_share(opts, deploy_id, share, size, barrier, answers):
    """A child process: fire ``share`` (``[(index, minion)]``) phase by phase; answer what it did."""
    phases = list(zip(*(peer_events(deploy_id, minion, index, size) for index, minion in share)))
    # Salt 3008's fire_event starts a thread for every event (a SyncWrapper inside a SyncWrapper),
    # which measures that thread, not the bus. Its own way around it, as the master's async
    # MWorkers relay minion events: fire_event_async on a running loop, over one kept-open connection.
    opts = dict(opts, master_async_mworker=True)
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
        bus.connect_pull(timeout=30)
        barrier.wait(timeout=60)
        answers.put(asyncio.run(_fire_phases(bus, phases)))


async def _fire_phases(bus, phases):
    counts = {"fired": 0, "failed": 0}
    first = time.monotonic()
    for tag, data in (event for phase in phases for event in phase):
        counts["fired" if await bus.fire_event_async(data, tag) is not False else "failed"] += 1
        if counts["fired"] % 1000 == 0 and time.monotonic() > first + FIRE_SECONDS:
            break
    return dict(counts, first=first, last=time.monotonic())


def fire(opts, deploy_id, minions, size, processes):
    """Fire every peer's events from ``processes`` processes at once; what was fired, and when."""
    context = multiprocessing.get_context("fork")
    barrier, answers = context.Barrier(processes + 1), context.Queue()
    shares = [list(enumerate(minions))[n::processes] for n in range(processes)]
    children = [context.Process(target=_fire_share, args=(opts, deploy_id, share, size, barrier, answers))
                for share in shares]
    for child in children:
        child.start()
    try:
        barrier.wait(timeout=90)
        went = time.monotonic()
        cpu_marks = machine_jiffies()
        done = [answers.get(timeout=FIRE_SECONDS + 60) for _ in children]
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
                child.join()
    return {"went": went, "machine": cpu_marks, "fired": sum(d["fired"] for d in done),
            "failed": sum(d["failed"] for d in done), "last": max(d["last"] for d in done)}


def request_deploy(opts, store, source, timeout):
    """Ask for the deploy as a CI job does (``salt-run event.send``); its record once peers would start.

    Real peers start once the reactor's ``murder.peer`` job reaches them, so
    the events are fired only after that job is published (its
    ``salt/job/<jid>/new``): earlier, the reactor, still busy with the start
    event of 10,000 minions, is the subscriber the bus drops.
    """
    request_id = f"engine-bench-{os.getpid()}"
    arguments = {"source": str(source), "app": APP, "tgt": "sim*", "release": RELEASE, "activate": False,
                 "timeout": timeout, "request_id": request_id}
    asked = time.monotonic()
    deadline = asked + START_SECONDS
    distributing_since = None
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True) as bus:
        bus.fire_event(arguments, config.TAG_DEPLOY_REQUEST)
        while True:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"the reactor published no murder.peer job within {START_SECONDS:g} s "
                                   f"of the request (record: {_state(store.deploy_by_request(request_id))})")
            event = bus.get_event(wait=1, tag="salt/job/", full=True)
            if event and event["tag"].endswith("/new") and event["data"].get("fun") == "murder.peer":
                break
            record = store.deploy_by_request(request_id)
            if record and record["state"] in lifecycle.FINAL:
                raise RuntimeError(f"the engine did not start the deploy: {_state(record)}")
            if record and record["state"] == lifecycle.DISTRIBUTING:
                distributing_since = distributing_since or now
                # Once seen missing from this subscription in a CI run: the job's own event is not
                # the only proof, and the deploy's silence limit (60 s) would fail every peer first.
                if now - distributing_since > JOB_EVENT_GRACE:
                    log.warning("no salt/job/*/new of murder.peer seen %g s into the deploy; firing the "
                                "peers' events all the same", JOB_EVENT_GRACE)
                    break
    record = store.deploy_by_request(request_id)
    if record["state"] != lifecycle.DISTRIBUTING:
        raise RuntimeError(f"a murder.peer job went out, but the deploy is {_state(record)}")
    return record, time.monotonic() - asked


def _state(record):
    return "none" if record is None else f"{record['state']} {record.get('error') or ''}".strip()


def wait_for_record(store, deploy_id, until):
    """The deploy's final record and when it was first seen, or the last record (not final) at ``until``."""
    path = os.path.join(store.deploys_dir, f"{deploy_id}.json")
    seen, record = None, None
    while True:
        now = time.monotonic()
        mtime = os.stat(path).st_mtime_ns
        if mtime != seen:
            seen, record = mtime, store.deploy(deploy_id)
            if record["state"] in lifecycle.FINAL:
                return record, now
        if now > until:
            return record, None
        time.sleep(POLL)


def accounting(record, minions):
    """Per state, how the record holds the simulated peers; ``mismatched``: done with another's report."""
    counts = {"done": 0, "failed": 0, "timed out": 0, "other": 0, "mismatched": 0, "missing": 0}
    held = record.get("minions", {})
    for index, minion in enumerate(minions):
        state = held.get(minion)
        if state is None:
            counts["missing"] += 1
            continue
        kind = state["state"] if state["state"] in counts else "other"
        counts[kind] += 1
        if kind == "done" and state["seconds"] != expected_seconds(index):
            counts["mismatched"] += 1
    return counts


def engine_pid(store, deadline, log_file):
    path = os.path.join(store.root, "engine.pid")
    while time.monotonic() < deadline:
        try:
            with open(path, encoding="ascii") as handle:
                pid = int(handle.read().strip())
            if os.path.exists(f"/proc/{pid}"):
                return pid
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.2)  # a poll with a deadline: the engine writes its pid once it listens
    raise RuntimeError(f"the murder engine did not start within {START_SECONDS:g} s; the master's log ends:\n"
                       + tail(log_file))


def tail(path, lines=15):
    """The last ``lines`` lines of a log (None: all of it)."""
    try:
        return "\n".join(pathlib.Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[-(lines or 0):])
    except OSError as exc:
        return f"(no log: {exc})"


def measure(peers, workdir, processes=PROCESSES, deadline=DEADLINE):
    """Run one master, one deploy to ``peers`` simulated minions and their events, in ``workdir``; the figures."""
    workdir = pathlib.Path(workdir)
    source = workdir / "release"
    source.mkdir(parents=True)
    (source / "index.html").write_text("murder engine bench\n", encoding="utf-8")
    minions = minion_ids(peers)
    lab = Lab(workdir / "lab", master_address="127.0.0.1", publish_port=free_port(), ret_port=free_port(),
              murder_master={"seeder_address": "127.0.0.1", "tracker_port": free_port()})
    store = Store(str(lab.snippet["murder"]["store_dir"]))
    master_dir = workdir / "lab" / "master"
    try:
        conf = lab.start_master()
        pid = engine_pid(store, time.monotonic() + START_SECONDS, master_dir / "log")
        opts = salt.config.master_config(str(conf / "master"))
        simulate_minions(opts["pki_dir"], minions)
        timeout = int(START_SECONDS + FIRE_SECONDS + deadline)
        record, job_seconds = request_deploy(opts, store, source, timeout)
        ends = time.monotonic() - job_seconds + timeout + 30  # the deploy's own end, and a margin
        deploy_id, size = record["deploy_id"], record["size"]
        if sorted(record["minions"]) != minions:
            raise RuntimeError(f"the deploy targets {len(record['minions'])} minions, not the {peers} simulated")
        cpu = process_cpu(pid)
        fired = fire(opts, deploy_id, minions, size, processes)
        final, seen = wait_for_record(store, deploy_id, ends)
        ended = seen or time.monotonic()
        cpu_after, (busy_after, total_after) = process_cpu(pid), machine_jiffies()
    finally:
        lab.stop()  # the master's whole process group, its engine and workers with it
    dropped = tail(master_dir / "log", lines=None).count(DROPPED)
    busy, total = fired["machine"]
    counts = accounting(final, minions)
    events = fired["fired"]
    fire_seconds = fired["last"] - fired["went"]
    window = ended - fired["went"]
    accounted = (counts["done"] == peers and counts["mismatched"] == 0 and events == 3 * peers
                 and final["state"] == lifecycle.SUCCEEDED)
    to_record = round(seen - fired["last"], 3) if seen is not None else None
    return {
        "peers": peers, "events": events, "events_per_peer": 3, "fire_failures": fired["failed"],
        "processes": processes, "deploy_id": deploy_id, "deploy_state": final["state"],
        "fire_seconds": round(fire_seconds, 3), "events_per_second": round(events / max(fire_seconds, 1e-6), 1),
        "seconds_to_accounted": to_record if accounted else None,
        "seconds_to_final_record": to_record,
        "distribution_seconds": final.get("distribution_seconds"),
        "request_to_peer_job_seconds": round(job_seconds, 2),
        "accounted": counts,
        "bus_dropped_subscribers": dropped,
        "all_accounted": accounted,
        "engine_cpu_seconds": round(cpu_after - cpu, 2),
        "engine_core_share": round((cpu_after - cpu) / max(window, 1e-6), 2),
        "engine_us_per_event": round((cpu_after - cpu) / max(events, 1) * 1e6, 1),
        "machine_busy": round((busy_after - busy) / max(total_after - total, 1), 2),
        "nproc": os.cpu_count(),
    }


def line(engine):
    """One line of figures for a run of :func:`measure`."""
    after, counts = engine["seconds_to_accounted"], engine["accounted"]
    if engine["all_accounted"]:
        outcome = f"all {counts['done']} done {after:.2f} s after the last event"
    else:
        outcome = (f"NOT all accounted for: {counts}, the deploy {engine['deploy_state']} "
                   f"{engine['seconds_to_final_record']} s after the last event")
    return (f"engine: {engine['peers']} peers, {engine['events']} events fired at {engine['events_per_second']:.0f}/s; "
            f"{outcome}; engine CPU {engine['engine_cpu_seconds']} s ({engine['engine_us_per_event']} us an event), "
            f"machine busy {engine['machine_busy']:.2f} of {engine['nproc']} cores")


def table(engine):
    counts = engine["accounted"]
    after = engine["seconds_to_accounted"]
    rows = [("peers", engine["peers"]), ("events fired", f"{engine['events']} ({engine['fire_failures']} failed)"),
            ("events/s fired", f"{engine['events_per_second']:.0f} ({engine['processes']} processes)"),
            ("last event to all accounted (s)", "-" if after is None else f"{after:.2f}"),
            ("last event to the final record (s)", engine["seconds_to_final_record"]),
            ("done / failed / timed out / mixed up",
             f"{counts['done']} / {counts['failed']} / {counts['timed out']} / {counts['mismatched']}"),
            ("all accounted", "yes" if engine["all_accounted"] else "NO"),
            ("subscribers the bus dropped", engine["bus_dropped_subscribers"]),
            ("engine CPU (s, share of a core)", f"{engine['engine_cpu_seconds']}, {engine['engine_core_share']}"),
            ("engine CPU per event (us)", engine["engine_us_per_event"]),
            ("machine busy", f"{engine['machine_busy']:.2f} of {engine['nproc']} cores")]
    return "\n".join(f"{name:<38} {value}" for name, value in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=10_000, help="simulated minions (default 10000)")
    parser.add_argument("--processes", type=int, default=PROCESSES, help=f"firing processes (default {PROCESSES})")
    parser.add_argument("--deadline", type=float, default=DEADLINE,
                        help=f"seconds the deploy's timeout adds to the bounds of the start and the "
                             f"firing (default {DEADLINE:g})")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.peers < 1 or args.processes < 1:
        parser.error("--peers and --processes must be at least 1")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")
    workdir = tempfile.mkdtemp(prefix="murder-bench-engine-", dir="/tmp")
    try:
        engine = measure(args.peers, os.path.join(workdir, "run"), args.processes, args.deadline)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = {"benchmark": "engine-events",
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": {"nproc": os.cpu_count(), "kernel": platform.release(),
                           "python": platform.python_version()},
               "engine": engine}
    pathlib.Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    print(table(engine))
    print(f"results: {args.results}")
    return 0 if engine["all_accounted"] else 1


if __name__ == "__main__":
    sys.exit(main())
