"""`make bench-tracker`: murder's tracker against Debian's opentracker under the same announce load.

Each tracker runs alone on one core (``taskset``), serving one whitelisted
swarm; ``wrk`` (on the other core, ``--threads`` threads and
``--connections`` kept-alive connections) first has every one of
``--peers`` distinct peers announce once (the swarm is then full), then
announces them in turn for ``--seconds`` (``bench/tracker_announce.lua``).
Rounds alternate the two trackers; the figures are the medians of
``--rounds``. Per run it records the sustained rate, the p50 and p99
latency, the tracker's CPU (share of its one core) and how busy the whole
machine was, and checks that the tracker holds all the peers (a scrape).

Then it reads the interval our tracker hands out with the swarm full, and
the announce rate that fleet would send (peers / interval), against the
targets: that rate at most half of what our tracker sustained, and our
tracker at least 0.3x opentracker's rate.

Then, unless ``--engine-peers 0``, the engine's side of the same fleet
(``bench/engine_events.py``): the events of ``--engine-peers`` simulated
peers fired on a real master's bus, all accounted for, under ``engine``.

Writes ``bench/results/tracker-latest.json`` and ``tracker-latest.png``;
exits non-zero when a run fails or wrk or opentracker is missing.
"""
import argparse
import datetime
import http.client
import json
import logging
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
from urllib.parse import quote_from_bytes

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import libtorrent  # noqa: E402

import report  # noqa: E402  (bench/: the script's own directory)
from devtools.opentracker import OpenTracker  # noqa: E402
from murder_core.config import DEFAULTS  # noqa: E402

log = logging.getLogger("bench.tracker")

SCRIPT = HERE / "tracker_announce.lua"
RESULTS = HERE / "results" / "tracker-latest.json"
INFO_HASH = bytes.fromhex("4d55524445522d42454e43482d545241434b4552")  # "MURDER-BENCH-TRACKER"
TICKS = os.sysconf("SC_CLK_TCK")
# Each fill run's length; it stops announcing once every peer has, and is retried until the swarm is full.
FILL_SECONDS = 3
FILL_ATTEMPTS = 10


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=10_000, help="distinct peers in the swarm (default 10000)")
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each measuring both trackers (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    parser.add_argument("--engine-peers", type=int, default=10_000,
                        help="then the engine's events of this many simulated peers (bench/engine_events.py); "
                             "0: skip (default 10000)")
    parser.add_argument("--results", default=str(RESULTS),
                        help="JSON results file (default bench/results/tracker-latest.json, the committed one)")
    parser.add_argument("--plot", default=str(RESULTS.with_suffix(".png")), help="PNG path; '' for none")
    parser.add_argument("--serve-murder", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.peers < args.threads or args.seconds < 1 or args.rounds < 1:
        parser.error("--peers must be at least --threads, --seconds and --rounds at least 1")
    if args.engine_peers < 0:
        parser.error("--engine-peers must be 0 (skip) or more")
    return args


def serve_murder(port):
    """The child process: our tracker with the master's defaults, until stdin closes."""
    from murder_core.tracker import Tracker

    with Tracker(host="127.0.0.1", port=port, interval=DEFAULTS["announce_interval"],
                 max_peers=DEFAULTS["max_peers_per_announce"],
                 max_announce_rate=DEFAULTS["max_announce_rate"]) as tracker:
        tracker.serve(INFO_HASH)
        print("ready", flush=True)
        sys.stdin.read()
    return 0


def cores():
    """(tracker core, wrk cores): the tracker alone on the last core, wrk on the others."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return available[0], available
    return available[-1], available[:-1]


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MurderTracker:
    name = "murder"

    def __init__(self, core):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/announce"
        self.process = subprocess.Popen(
            ["taskset", "-c", str(core), sys.executable, __file__, "--serve-murder", str(self.port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError("murder's tracker did not start")

    def stop(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Opentracker:
    name = "opentracker"

    def __init__(self, core, directory):
        self.tracker = OpenTracker(directory).start(whitelisted=[INFO_HASH.hex()],
                                                    wrap=["taskset", "-c", str(core)])
        self.process = self.tracker.process
        self.url = self.tracker.url
        self.port = self.tracker.port

    def stop(self):
        self.tracker.stop()


def process_cpu(pid):
    """CPU-seconds (user + system, all threads) of a running process."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wrk(url, args, mode, seconds, wrk_cores):
    argv = ["taskset", "-c", ",".join(map(str, wrk_cores)), "wrk", "-t", str(args.threads),
            "-c", str(args.connections), "-d", f"{seconds}s", "--timeout", "5s", "-s", str(SCRIPT), url,
            "--", quote_from_bytes(INFO_HASH), str(args.peers), str(args.threads), mode]
    answer = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in answer.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"wrk gave no result (exit {answer.returncode}): {answer.stdout[-1000:]} {answer.stderr[-1000:]}")


def get(port, target):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", target)
        return libtorrent.bdecode(connection.getresponse().read())
    finally:
        connection.close()


def swarm_peers(port):
    """Peers the tracker holds in the bench's swarm, by scrape."""
    reply = get(port, f"/scrape?info_hash={quote_from_bytes(INFO_HASH)}")
    counts = reply[b"files"][INFO_HASH]
    return counts[b"complete"] + counts[b"incomplete"]


def interval_handed_out(port):
    """The interval one more announce of a peer of the full swarm is answered with."""
    reply = get(port, f"/announce?info_hash={quote_from_bytes(INFO_HASH)}&peer_id=-BM0001-{0:012d}"
                      f"&port=1024&uploaded=0&downloaded=0&left=0&compact=1")
    return reply[b"interval"]


def fill(tracker, args, wrk_cores):
    """Have every peer announce once; wrk keeps its -d even after the script stops, so go in short runs."""
    for _ in range(FILL_ATTEMPTS):
        filled = wrk(tracker.url, args, "fill", FILL_SECONDS, wrk_cores)
        if filled["failure_replies"]:
            raise RuntimeError(f"{tracker.name} refused announces while filling the swarm: {filled}")
        if swarm_peers(tracker.port) == args.peers:
            return
    raise RuntimeError(f"{tracker.name} holds {swarm_peers(tracker.port)} of {args.peers} peers after filling")


def measure(tracker, args, wrk_cores):
    fill(tracker, args, wrk_cores)
    cpu, (busy, total) = process_cpu(tracker.process.pid), report.machine_jiffies()
    loaded = wrk(tracker.url, args, "load", args.seconds, wrk_cores)
    cpu_after, (busy_after, total_after) = process_cpu(tracker.process.pid), report.machine_jiffies()
    seconds = loaded["duration_us"] / 1e6
    # opentracker closes the connection after every answer, which wrk counts as a read error;
    # a failed announce of ours is an error status, a timeout or a refused connection.
    failed = loaded["connect_errors"] + loaded["status_errors"] + loaded["timeouts"]
    if failed:
        raise RuntimeError(f"{failed} announces to {tracker.name} failed under load: {loaded}")
    run = {"tracker": tracker.name, "rate": round(loaded["requests"] / seconds, 1),
           "requests": loaded["requests"], "seconds": round(seconds, 2),
           "read_errors": loaded["read_errors"],
           "p50_ms": loaded["p50_us"] / 1000, "p99_ms": loaded["p99_us"] / 1000,
           "cpu_core_share": round((cpu_after - cpu) / seconds, 2),
           "machine_busy": round((busy_after - busy) / max(total_after - total, 1), 2),
           "swarm_peers": swarm_peers(tracker.port)}
    if run["swarm_peers"] != args.peers:
        raise RuntimeError(f"{tracker.name} holds {run['swarm_peers']} peers, the bench announced {args.peers}")
    return run


def summarize(results):
    summary = {}
    for name in ("murder", "opentracker"):
        runs = [run for run in results["runs"] if run["tracker"] == name]
        # wrk on one core cannot always keep opentracker busy: its rate per second of its own CPU
        # is what it would sustain with a whole core, and the fair figure to compare.
        summary[name] = {"rate": statistics.median(r["rate"] for r in runs),
                         "rate_per_core": round(statistics.median(r["rate"] / max(r["cpu_core_share"], 0.01)
                                                                  for r in runs), 1),
                         "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                         "cpu_core_share": statistics.median(r["cpu_core_share"] for r in runs)}
    ours = summary["murder"]["rate"]
    fleet_rate = results["peers"] / results["interval"]
    summary["ratio_to_opentracker"] = round(ours / summary["opentracker"]["rate"], 3)
    summary["ratio_per_core"] = round(summary["murder"]["rate_per_core"] / summary["opentracker"]["rate_per_core"], 3)
    summary["fleet_announce_rate"] = round(fleet_rate, 1)
    results["summary"] = summary
    results["targets"] = [
        {"name": "our rate / opentracker's, each per second of its own core", "value": summary["ratio_per_core"],
         "limit": 0.3, "met": summary["ratio_per_core"] >= 0.3},
        {"name": f"announces/s of {results['peers']} peers / our sustained rate", "value": round(fleet_rate / ours, 3),
         "limit": 0.5, "met": fleet_rate <= ours / 2},
    ]


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["murder", "opentracker"]
    figure, (rates, latency) = plt.subplots(1, 2, figsize=(8, 3.5))
    rates.bar(names, [results["summary"][n]["rate"] for n in names], color=["tab:blue", "tab:grey"])
    rates.axhline(results["summary"]["fleet_announce_rate"], color="tab:red", linestyle="--",
                  label=f"{results['peers']} peers every {results['interval']} s")
    rates.set_ylabel("announces / s (one core)")
    rates.legend(fontsize=8)
    latency.bar(names, [results["summary"][n]["p99_ms"] for n in names], color=["tab:blue", "tab:grey"])
    latency.set_ylabel("p99 latency, ms")
    figure.suptitle(f"{results['peers']} peers, wrk {results['threads']} threads x {results['connections']} connections")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    if args.serve_murder:
        return serve_murder(args.serve_murder)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")
    missing = [tool for tool in ("wrk", "opentracker", "taskset") if shutil.which(tool) is None]
    if missing:
        print(f"make bench-tracker needs {', '.join(missing)} (apt-get install wrk opentracker util-linux)",
              file=sys.stderr)
        return 2
    tracker_core, wrk_cores = cores()
    import platform

    results = {"benchmark": "tracker", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
               "peers": args.peers, "seconds": args.seconds, "rounds": args.rounds, "threads": args.threads,
               "connections": args.connections, "tracker_core": tracker_core, "wrk_cores": wrk_cores,
               "announce_interval": DEFAULTS["announce_interval"], "max_announce_rate": DEFAULTS["max_announce_rate"],
               "runs": []}
    # opentracker drops to nobody, who must read its whitelist.
    directory = tempfile.mkdtemp(prefix="murder-bench-tracker-", dir="/tmp")
    os.chmod(directory, 0o755)
    try:
        for round_ in range(args.rounds):
            for make in (lambda: MurderTracker(tracker_core), lambda: Opentracker(tracker_core, directory)):
                tracker = make()
                try:
                    run = measure(tracker, args, wrk_cores)
                    if tracker.name == "murder":
                        results["interval"] = interval_handed_out(tracker.port)
                finally:
                    tracker.stop()
                run["round"] = round_
                results["runs"].append(run)
                log.info("%s: %s", tracker.name, run)
        if args.engine_peers:
            import engine_events  # bench/: the script's own directory

            results["engine"] = engine_events.measure(args.engine_peers, os.path.join(directory, "engine"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    summarize(results)
    report.write(results, args.results, plot, args.plot)
    print(table(results))
    if "engine" in results:
        import engine_events

        print(engine_events.line(results["engine"]))
    print(f"results: {args.results}" + (f", plot: {args.plot}" if args.plot else ""))
    return 0 if results.get("engine", {}).get("all_accounted", True) else 1


def table(results):
    lines = [f"{results['peers']} peers, wrk {results['threads']} threads x {results['connections']} connections, "
             f"{results['seconds']} s x {results['rounds']} rounds (medians)",
             f"{'tracker':<12} {'announces/s':>12} {'per core':>9} {'p99 ms':>8} {'core share':>11}"]
    for name in ("murder", "opentracker"):
        row = results["summary"][name]
        lines.append(f"{name:<12} {row['rate']:>12.0f} {row['rate_per_core']:>9.0f} {row['p99_ms']:>8.2f} "
                     f"{row['cpu_core_share']:>11.2f}")
    lines.append(f"measured ratio {results['summary']['ratio_to_opentracker']}, per core "
                 f"{results['summary']['ratio_per_core']}; machine busy "
                 f"{statistics.median(r['machine_busy'] for r in results['runs']):.2f} of {results['machine']['nproc']} cores")
    lines.append(f"our tracker hands {results['peers']} peers an interval of {results['interval']} s: "
                 f"{results['summary']['fleet_announce_rate']:.0f} announces/s")
    for target in results["targets"]:
        lines.append(f"  {target['name']}: {target['value']} (limit {target['limit']}) "
                     f"{'met' if target['met'] else 'MISSED'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
