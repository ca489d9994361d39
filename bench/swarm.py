"""Benchmark: one seeder and one peer on loopback against a plain file copy.

Run with ``make bench-swarm`` (or ``.venv/bin/python bench/swarm.py --help``).

It writes an incompressible artifact (1 GiB by default) into a temporary
directory, times a plain copy of it on the same disk (``shutil.copyfile``
then ``fsync``), then runs the real thing: our tracker, a seeder and one peer
(``murder_core.swarm`` with the datacenter profile, all on 127.0.0.1) and
times the peer from its start until the downloaded file is on disk
(``Peer.download()`` then ``fsync``, so both sides end with durable bytes).
The downloaded file's SHA-256 is checked. The figure is the swarm's rate as a
ratio to the copy's; docs/tuning.md records it.

One invocation makes ``--repeat`` rounds (default 3); each round times the
copy and then one swarm per ``--piece-size-kib`` value, and the figure is the
median of the rounds' ratios (on a virtual machine the copy's rate can
change fourfold from one run to the next, see docs/tuning.md). Nothing is dropped from the page cache:
the artifact was just written, so both the copy and the seeder read it from
memory and both pay for writing to disk; dirty pages and deleted files are
synced between measurements so that one does not pay for the previous one.

``--setting [seeder:|peer:]NAME=VALUE`` overrides one libtorrent setting of
the profile for this run only; that is how the profile's values were chosen.

Each round also runs, per torrent format, a **host**: what ``murder.peer``
does on a minion (``minion.fetch``: download, the SHA-256 pass where the
format needs it, unpack) in a process of its own, whose CPU is measured
alone (the seeder and the tracker stay in this process). Its CPU per GiB
is set beside the **floor** of that work done by hand on the same artifact
(``bench/floor.py``: one ``sha256sum`` and ``zstd -d | tar -x``), and a
fetch of a one-byte release gives the fixed cost of one fetch, on its own.
The artifact is a real release: one incompressible file packed by murder.

After the table it prints the issue's two targets for the default torrent
format: the host's CPU per GiB at most 1.5x the floor, and the swarm's ratio
to a copy at least 0.5.

Results go to ``bench/results/swarm-latest.json`` and a plot to
``swarm-latest.png`` (the ratio to a copy per format, and the host's CPU per
GiB beside the floor); the temporary directory is removed whatever happens.
The exit status is non-zero when a download fails.
"""
import argparse
import base64
import datetime
import hashlib
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import libtorrent as lt  # noqa: E402

import floor  # noqa: E402  (bench/ is a directory of scripts)
import report  # noqa: E402
from murder_core import minion, pack, profile, swarm, torrent  # noqa: E402
from murder_core.config import DEFAULTS  # noqa: E402
from murder_core.errors import MurderError  # noqa: E402
from murder_core.tracker import Tracker  # noqa: E402

log = logging.getLogger("bench.swarm")

MiB = 1024 * 1024
KiB = 1024
GiB = 1024 * MiB
CHUNK = 4 * MiB
RESULTS = os.path.join(HERE, "results", "swarm-latest.json")
# What a user gets without a `torrent_format` setting; the targets are judged on it.
DEFAULT_FORMAT = DEFAULTS["torrent_format"]
# The default first: the fixed cost of one fetch is measured with the first format given.
FORMATS = [DEFAULT_FORMAT] + [kind for kind in torrent.FORMATS if kind != DEFAULT_FORMAT]
HOST_FLOOR_LIMIT = 1.5
COPY_RATIO_GOAL = 0.5
# Seconds the seeder gets to announce itself before the peer starts.
SEEDER_ANNOUNCE_WAIT = 10
# Seconds of quiet before each measurement. On a virtual machine that hands
# free memory back to its host (virtio-balloon free page reporting) writing
# into pages freed a moment ago is up to four times faster than into pages
# idle for a few seconds; the same pause before the copy and the swarm makes
# both start from idle memory, and lets the previous run's writeback finish.
SETTLE = 5.0


def machine():
    """What the figure was measured on."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu or platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libtorrent": lt.__version__,
    }


def disk_of(path):
    """``device (fstype, mount point)`` of the mount holding ``path``."""
    path = os.path.realpath(path)
    best = ("", "", "")
    try:
        with open("/proc/mounts") as handle:
            for line in handle:
                device, mount, fstype = line.split()[:3]
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[1]):
                    best = (device, mount, fstype)
    except OSError:
        return "unknown"
    return f"{best[0]} ({best[2]}, mounted on {best[1]})"


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cpu_seconds():
    """User plus system CPU seconds of this process (libtorrent's threads included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy(before):
    """Share of all cores busy since ``before`` (a :func:`machine_jiffies`)."""
    busy, total = report.machine_jiffies()
    return round((busy - before[0]) / max(total - before[1], 1), 3)


def write_artifact(path, size):
    """Write ``size`` random bytes to ``path``, flushed to disk; return the SHA-256."""
    digest = hashlib.sha256()
    left = size
    with open(path, "wb") as handle:
        while left:
            block = os.urandom(min(CHUNK, left))
            digest.update(block)
            handle.write(block)
            left -= len(block)
        handle.flush()
        os.fsync(handle.fileno())
    return digest.hexdigest()


def settle(seconds):
    """Flush dirty pages and deleted files, then wait: every measurement starts alike."""
    os.sync()
    time.sleep(seconds)


def time_copy(src, dst, pause):
    """Seconds and CPU seconds to copy ``src`` to ``dst`` and fsync it; the copy is removed after."""
    settle(pause)
    cpu_before = cpu_seconds()
    started = time.monotonic()
    shutil.copyfile(src, dst)
    fsync_path(dst)
    seconds = time.monotonic() - started
    cpu = cpu_seconds() - cpu_before
    os.unlink(dst)
    return seconds, cpu


def parse_setting(text):
    """``[seeder:|peer:]name=value`` -> (role or None, name, value with its type)."""
    role, _, assignment = text.partition(":") if text.startswith(("seeder:", "peer:")) else ("", "", text)
    name, sep, raw = assignment.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: use [seeder:|peer:]NAME=VALUE")
    if name not in lt.default_settings():
        raise argparse.ArgumentTypeError(f"{text!r}: libtorrent has no setting {name!r}")
    default = lt.default_settings()[name]
    try:
        if isinstance(default, bool):
            value = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}[raw.lower()]
        elif isinstance(default, int):
            value = int(raw, 0)
        else:
            value = raw
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r}: {raw!r} is not a {type(default).__name__}") from None
    return role or None, name, value


def override_profile(overrides):
    """Make ``profile.settings`` apply the benchmark's overrides (this process only)."""
    if not overrides:
        return
    original = profile.settings

    def settings(listen, *, seeder=False, **kwargs):
        pack = original(listen, seeder=seeder, **kwargs)
        role = "seeder" if seeder else "peer"
        pack.update({name: value for who, name, value in overrides if who in (None, role)})
        return pack

    profile.settings = settings


def announced_seeder(tracker, info, data, artifact):
    """A seeder of ``artifact``, once the tracker lists it: a peer finds it in its first announce, as in a deploy."""
    seeder = swarm.Seeder(data, artifact, listen="127.0.0.1:0")
    wait_until = time.monotonic() + SEEDER_ANNOUNCE_WAIT
    while tracker.swarm(info.tracker_keys[0])["complete"] < 1:
        if time.monotonic() > wait_until:
            seeder.close()
            raise MurderError(f"seeder did not announce within {SEEDER_ANNOUNCE_WAIT} s")
        time.sleep(0.05)
    return seeder


def time_swarm(tracker, data, artifact, sha256, workdir, timeout, pause):
    """Run a seeder and one peer through ``tracker``; return the measurements."""
    info = torrent.describe(data)
    tracker.serve(*info.tracker_keys)
    save_dir = os.path.join(workdir, "peer")
    seeder = peer = None
    run = {"piece_size": info.piece_size, "torrent_format": info.torrent_format}
    try:
        seeder = announced_seeder(tracker, info, data, artifact)
        settle(pause)
        cpu_before, jiffies = cpu_seconds(), report.machine_jiffies()
        started = time.monotonic()
        peer = swarm.Peer(data, save_dir, listen="127.0.0.1:0", stall_timeout=30)
        result = peer.download(deadline=started + timeout)
        downloaded = time.monotonic()
        fsync_path(result.path)
        finished = time.monotonic()
        cpu = cpu_seconds() - cpu_before
        run.update(
            seconds=finished - started,
            cpu_seconds=cpu,
            download_seconds=downloaded - started,
            fsync_seconds=finished - downloaded,
            cpu_cores_busy=cpu / (finished - started),
            machine_busy=machine_busy(jiffies),
            hash_failures=result.hash_failures,
            seeder_uploaded=seeder.stats()["uploaded"],
        )
        peer.verify(sha256)
    finally:
        for member in (peer, seeder):
            if member is not None:
                member.close()
        tracker.forget(*info.tracker_keys)
        shutil.rmtree(save_dir, ignore_errors=True)
    return run


def host_child():
    """The host process: one ``minion.fetch`` of the job on stdin; prints its own CPU and steps as JSON."""
    job = json.loads(sys.stdin.read())
    cpu_before, started = cpu_seconds(), time.monotonic()
    peer, report = minion.fetch(torrent=base64.b64decode(job["torrent"]), sha256=job["sha256"],
                                base_dir=job["base_dir"], release="r1", listen="127.0.0.1:0",
                                stall_timeout=30, deadline=started + job["timeout"])
    peer.close()
    os.sync()
    print(json.dumps({"seconds": time.monotonic() - started, "cpu_seconds": cpu_seconds() - cpu_before,
                      "steps": report["steps"], "hash_failures": report["hash_failures"]}))
    return 0


def time_host(tracker, data, artifact, sha256, workdir, timeout, pause):
    """Run a seeder here and ``minion.fetch`` in a process of its own; return the host's figures."""
    info = torrent.describe(data)
    tracker.serve(*info.tracker_keys)
    base_dir = os.path.join(workdir, "host")
    seeder = None
    run = {"piece_size": info.piece_size, "torrent_format": info.torrent_format, "size": info.size}
    try:
        seeder = announced_seeder(tracker, info, data, artifact)
        settle(pause)
        job = {"torrent": base64.b64encode(data).decode(), "sha256": sha256, "base_dir": base_dir,
               "timeout": timeout}
        jiffies = report.machine_jiffies()
        answer = subprocess.run([sys.executable, __file__, "--host-child"], input=json.dumps(job),
                                capture_output=True, text=True, timeout=timeout + 60)
        run["machine_busy"] = machine_busy(jiffies)
        if answer.returncode != 0:
            raise MurderError(f"host fetch failed: {answer.stderr.strip()[-2000:]}")
        run.update(json.loads(answer.stdout.strip().splitlines()[-1]))
    finally:
        if seeder is not None:
            seeder.close()
        tracker.forget(*info.tracker_keys)
        shutil.rmtree(base_dir, ignore_errors=True)
    return run


def make_release(workdir, name, size):
    """A release of one incompressible file of ``size`` bytes, packed by murder; returns pack's Artifact."""
    build = os.path.join(workdir, f"build-{name}")
    os.makedirs(build)
    write_artifact(os.path.join(build, "payload.bin"), size)
    try:
        return pack.pack(build, os.path.join(workdir, "master", f"app-{name}.tar.zst"))
    finally:
        shutil.rmtree(build, ignore_errors=True)


def rate(size, seconds):
    """MB/s (10^6 bytes per second), as disk tools print it."""
    return size / seconds / 1e6 if seconds > 0 else float("inf")


def summarize(size, copies, runs):
    """Per piece size and torrent format: median rates and the median (min, max) of the rounds' ratios."""
    summary = []
    for piece_size, torrent_format in sorted({(run["piece_size"], run["torrent_format"]) for run in runs}):
        mine = [run for run in runs if (run["piece_size"], run["torrent_format"]) == (piece_size, torrent_format)]
        good = [run for run in mine if "error" not in run]
        entry = {"piece_size": piece_size, "torrent_format": torrent_format, "runs": len(mine),
                 "failed": len(mine) - len(good)}
        if good:
            ratios = [rate(size, run["seconds"]) / rate(size, copies[run["round"]]) for run in good]
            entry.update(
                copy_mb_s=statistics.median(rate(size, copies[run["round"]]) for run in good),
                swarm_mb_s=statistics.median(rate(size, run["seconds"]) for run in good),
                download_mb_s=statistics.median(rate(size, run["download_seconds"]) for run in good),
                ratio=statistics.median(ratios),
                ratio_min=min(ratios),
                ratio_max=max(ratios),
                cpu_cores_busy=statistics.median(run["cpu_cores_busy"] for run in good),
                machine_busy=statistics.median(run["machine_busy"] for run in good),
                cpu_seconds_per_gib=statistics.median(run["cpu_seconds"] * GiB / size for run in good),
            )
        summary.append(entry)
    return summary


def summarize_hosts(hosts, floor_per_gib):
    """Per torrent format: the host's median CPU per GiB, beside the floor, and its median steps."""
    summary = []
    for torrent_format in sorted({run["torrent_format"] for run in hosts}):
        good = [run for run in hosts if run["torrent_format"] == torrent_format and "error" not in run]
        entry = {"torrent_format": torrent_format, "runs": len(good)}
        if good:
            per_gib = statistics.median(run["cpu_seconds"] * GiB / run["size"] for run in good)
            entry.update(cpu_seconds_per_gib=round(per_gib, 3), floor_ratio=round(per_gib / floor_per_gib, 2),
                         seconds=statistics.median(run["seconds"] for run in good),
                         machine_busy=statistics.median(run["machine_busy"] for run in good),
                         steps={step: statistics.median(run["steps"].get(step, 0.0) for run in good)
                                for step in ("download", "verify", "unpack")})
        summary.append(entry)
    return summary


def targets(results):
    """The issue's targets for the default format, each {id, name, value, limit, met}; None where not measured."""
    swarm_ = next((e for e in results["summary"] if e["torrent_format"] == DEFAULT_FORMAT and "ratio" in e), {})
    host = next((e for e in results.get("host_summary", []) if e["torrent_format"] == DEFAULT_FORMAT), {})
    rows = [
        ("host_floor_ratio", f"{DEFAULT_FORMAT}: a host's CPU per GiB at most {HOST_FLOOR_LIMIT}x the floor",
         host.get("floor_ratio"), HOST_FLOOR_LIMIT, False),
        ("copy_ratio", f"{DEFAULT_FORMAT}: the swarm's rate at least {COPY_RATIO_GOAL}x a plain copy's",
         None if "ratio" not in swarm_ else round(swarm_["ratio"], 3), COPY_RATIO_GOAL, True),
    ]
    return report.judge(rows)


def plot(results, path):
    """Two panels: the swarm's ratio to a copy per format (median, min-max), the host's CPU per GiB by the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ratios, cpu) = plt.subplots(1, 2, figsize=(9, 3.8))
    swarms = [e for e in results["summary"] if "ratio" in e]
    names = [f"{e['torrent_format']}\n{e['piece_size'] // KiB} KiB" for e in swarms]
    medians = [e["ratio"] for e in swarms]
    spread = [[m - e["ratio_min"] for m, e in zip(medians, swarms)],
              [e["ratio_max"] - m for m, e in zip(medians, swarms)]]
    ratios.bar(names, medians, yerr=spread, capsize=4, color="tab:blue")
    ratios.axhline(COPY_RATIO_GOAL, color="tab:red", linestyle="--", label=f"goal {COPY_RATIO_GOAL}")
    ratios.set_ylabel("swarm rate / plain copy rate")
    ratios.set_title("one seeder, one peer, loopback", fontsize=9)
    ratios.legend(fontsize=8)
    hosts = [e for e in results.get("host_summary", []) if "cpu_seconds_per_gib" in e]
    if hosts:
        cpu.bar([e["torrent_format"] for e in hosts], [e["cpu_seconds_per_gib"] for e in hosts], color="tab:blue")
        floor_ = results["floor"]["cpu_seconds_per_gib"]
        cpu.axhline(floor_, color="tab:grey", label=f"floor {floor_:.2f}")
        cpu.axhline(floor_ * HOST_FLOOR_LIMIT, color="tab:red", linestyle="--",
                    label=f"target {HOST_FLOOR_LIMIT}x floor")
        cpu.legend(fontsize=8)
    cpu.set_ylabel("host CPU-s per GiB (minion.fetch)")
    cpu.set_title("fetch, verify, unpack in one process", fontsize=9)
    figure.suptitle(f"make bench-swarm: {results['size'] / MiB:.0f} MiB release, {results['machine']['nproc']} cores, "
                    f"{results['date']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def print_table(results):
    print(f"artifact {results['size'] // MiB} MiB, incompressible; {results['machine']['nproc']} cores, "
          f"{results['machine']['cpu']}; disk {results['disk']}; libtorrent {results['machine']['libtorrent']}")
    if results["settings"]:
        print("settings overridden: " + ", ".join(results["settings"]))
    print(f"{'piece size':>10}  {'format':>6}  {'copy MB/s':>9}  {'swarm MB/s':>10}  {'ratio':>5}  "
          f"{'(min-max)':>11}  {'CPU s/GiB':>9}  {'machine busy':>12}  runs")
    for entry in results["summary"]:
        kib = f"{entry['piece_size'] // KiB} KiB"
        kib = f"{kib:>10}  {entry['torrent_format']:>6}"
        if "ratio" not in entry:
            print(f"{kib}  {'failed':>9}")
            continue
        spread = f"{entry['ratio_min']:.2f}-{entry['ratio_max']:.2f}"
        failed = f" ({entry['failed']} failed)" if entry["failed"] else ""
        print(f"{kib}  {entry['copy_mb_s']:9.0f}  {entry['swarm_mb_s']:10.0f}  {entry['ratio']:5.2f}  "
              f"{spread:>11}  {entry['cpu_seconds_per_gib']:9.1f}  {entry['machine_busy']:12.2f}  "
              f"{entry['runs']}{failed}")
    if "copy_cpu_seconds_per_gib" in results:
        print(f"the copy used {results['copy_cpu_seconds_per_gib']:.1f} CPU s/GiB")
    if results.get("floor"):
        floor_ = results["floor"]
        print(f"floor (one SHA-256 pass + zstd -d | tar -x, by hand): {floor_['cpu_seconds_per_gib']:.2f} CPU s/GiB "
              f"({floor_['sha256_cpu_seconds_per_gib']:.2f} + {floor_['unpack_cpu_seconds_per_gib']:.2f})")
        print(f"{'host (minion.fetch)':>20}  {'CPU s/GiB':>9}  {'x floor':>7}  {'download s':>10}  "
              f"{'verify s':>8}  {'unpack s':>8}  {'machine busy':>12}")
        for entry in results["host_summary"]:
            if "cpu_seconds_per_gib" not in entry:
                print(f"{entry['torrent_format']:>20}  failed")
                continue
            steps = entry["steps"]
            print(f"{entry['torrent_format']:>20}  {entry['cpu_seconds_per_gib']:9.2f}  {entry['floor_ratio']:7.2f}  "
                  f"{steps['download']:10.2f}  {steps['verify']:8.2f}  {steps['unpack']:8.2f}  "
                  f"{entry['machine_busy']:12.2f}")
    if results.get("fixed_cost"):
        fixed = results["fixed_cost"]
        print(f"fixed cost of one fetch (a 1-byte release, {fixed['torrent_format']}): {fixed['seconds']:.2f} s, "
              f"{fixed['cpu_seconds']:.2f} CPU s; a Salt job's own start is measured by make bench")
    for target in results.get("targets", []):
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        print(f"target: {target['name']}: {target['value']} ({verdict})")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="artifact size in MiB (default 1024)")
    parser.add_argument(
        "--piece-size-kib", type=int, nargs="+", default=None,
        help="torrent piece size(s) in KiB, one swarm per round each (default: what piece_size 0, "
             "the default, chooses for the artifact's size)",
    )
    parser.add_argument("--torrent-format", nargs="+", choices=torrent.FORMATS, default=FORMATS,
                        help=f"torrent format(s), one swarm per round each (default all three, "
                             f"{' '.join(FORMATS)}; the targets are judged on {DEFAULT_FORMAT}, the default)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of copy + swarms (default 3)")
    parser.add_argument("--setting", type=parse_setting, action="append", default=[],
                        metavar="[seeder:|peer:]NAME=VALUE",
                        help="override a libtorrent setting of the profile for this run (repeatable)")
    parser.add_argument("--settle", type=float, default=SETTLE,
                        help=f"seconds of quiet (after a sync) before every measurement (default {SETTLE:g})")
    parser.add_argument("--dir", default=None,
                        help="where to make the temporary directory (default: the system temp dir); "
                             "the copy and the swarm both write there")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one download may take (default 600)")
    parser.add_argument("--results", default=RESULTS,
                        help="JSON results file (default bench/results/swarm-latest.json)")
    parser.add_argument("--plot", default=RESULTS[:-len(".json")] + ".png",
                        help="PNG path; '' for none (default bench/results/swarm-latest.png)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log tracker and swarm diagnostics")
    args = parser.parse_args(argv)
    if args.size_mib < 1:
        parser.error("--size-mib must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.piece_size_kib is None:
        args.piece_size_kib = [torrent.auto_piece_size(args.size_mib * MiB) // KiB]
    for kib in args.piece_size_kib:
        if kib < 16 or kib & (kib - 1):
            parser.error(f"--piece-size-kib {kib}: a power of two of at least 16")
    return args


def main(argv=None):
    if (argv if argv is not None else sys.argv[1:]) == ["--host-child"]:
        return host_child()
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    override_profile(args.setting)
    size = args.size_mib * MiB
    workdir = tempfile.mkdtemp(prefix="murder-bench-swarm-", dir=args.dir)
    results = {
        "benchmark": "swarm",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "disk": disk_of(workdir),
        "size": size,
        "repeat": args.repeat,
        "settle_seconds": args.settle,
        "loadavg_before": os.getloadavg(),
        "settings": [f"{who + ':' if who else ''}{name}={value}" for who, name, value in args.setting],
        "copy_seconds": [],
        "copy_cpu_seconds": [],
        "runs": [],
        "hosts": [],
    }
    failed = False
    try:
        with Tracker(host="127.0.0.1", port=0, interval=1) as tracker:
            log.info("packing a release of %d MiB of random bytes", args.size_mib)
            packed = make_release(workdir, "bench", size)
            artifact, sha256 = packed.path, packed.sha256
            size = packed.size
            results["size"] = size
            results["floor"] = floor.measure(artifact, workdir)
            log.info("floor: %.2f CPU s/GiB", results["floor"]["cpu_seconds_per_gib"])
            tiny = make_release(workdir, "tiny", 1)
            tiny_torrent = torrent.make_torrent(tiny.path, [tracker.url], torrent_format=args.torrent_format[0])
            fixed = time_host(tracker, tiny_torrent, tiny.path, tiny.sha256, workdir, args.timeout, args.settle)
            results["fixed_cost"] = {key: fixed[key] for key in ("torrent_format", "seconds", "cpu_seconds", "steps")}
            torrents = {}
            kinds = [(kib, kind) for kib in args.piece_size_kib for kind in args.torrent_format]
            for kib, kind in kinds:
                started = time.monotonic()
                torrents[kib, kind] = torrent.make_torrent(artifact, [tracker.url], piece_size=kib * KiB,
                                                           torrent_format=kind)
                log.info("%s torrent with %d KiB pieces made in %.1f s", kind, kib, time.monotonic() - started)
            os.sync()

            for round_ in range(args.repeat):
                seconds, cpu = time_copy(artifact, os.path.join(workdir, "copy.tar"), args.settle)
                results["copy_seconds"].append(seconds)
                results["copy_cpu_seconds"].append(cpu)
                log.info("round %d: copy %.2f s, %.0f MB/s", round_ + 1, seconds, rate(size, seconds))
                for kib, kind in kinds:
                    try:
                        run = time_swarm(tracker, torrents[kib, kind], artifact, sha256, workdir, args.timeout,
                                         args.settle)
                    except MurderError as exc:  # StallError and VerifyError included
                        log.error("round %d: swarm with %d KiB pieces failed: %s", round_ + 1, kib, exc)
                        results["runs"].append({"round": round_, "piece_size": kib * KiB, "torrent_format": kind,
                                                "error": str(exc)})
                        failed = True
                        continue
                    run["round"] = round_
                    results["runs"].append(run)
                    if kib == args.piece_size_kib[0]:
                        try:
                            host = time_host(tracker, torrents[kib, kind], artifact, sha256, workdir,
                                             args.timeout, args.settle)
                        except MurderError as exc:
                            log.error("round %d: host fetch (%s) failed: %s", round_ + 1, kind, exc)
                            results["hosts"].append({"round": round_, "torrent_format": kind, "error": str(exc)})
                            failed = True
                        else:
                            host["round"] = round_
                            results["hosts"].append(host)
                            log.info("round %d: host (%s) %.2f s, %.2f CPU s", round_ + 1, kind,
                                     host["seconds"], host["cpu_seconds"])
                    log.info("round %d: swarm with %d KiB pieces %.2f s (%.2f s download + %.2f s fsync), "
                             "%.0f MB/s, ratio %.2f, %.2f cores busy", round_ + 1, kib, run["seconds"],
                             run["download_seconds"], run["fsync_seconds"], rate(size, run["seconds"]),
                             seconds / run["seconds"], run["cpu_cores_busy"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    results["loadavg_after"] = os.getloadavg()
    results["summary"] = summarize(results["size"], results["copy_seconds"], results["runs"])
    if results.get("floor"):
        results["host_summary"] = summarize_hosts(results["hosts"], results["floor"]["cpu_seconds_per_gib"])
    if results["copy_cpu_seconds"]:
        results["copy_cpu_seconds_per_gib"] = statistics.median(results["copy_cpu_seconds"]) * GiB / size
    results["targets"] = targets(results)
    report.write(results, args.results, plot, args.plot)
    print_table(results)
    print(f"results: {args.results}" + (f", plot: {args.plot}" if args.plot else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
