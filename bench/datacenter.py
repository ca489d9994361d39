"""`make bench`: murder vs Salt's file server vs the link's physical bound.

Builds a simulated datacenter (``netlab.Network``: one network namespace per
host, links shaped to ``--link-mbit``), runs a real salt-master in the
master's namespace and a real salt-minion in each minion's, then for each N
of the sweep delivers an incompressible release of ``--size-mib`` to N
minions twice, timed from the call to the returned answer:

* **murder**: ``salt-run murder.deploy`` (distribution, verification,
  unpack and activation on all N); its ``distribution_seconds`` is the time
  until the last minion's ``done`` event, ``runner_seconds`` the runner's own
  time (without the ``salt-run`` tool's start), ``minion_seconds`` each
  minion's time from its peer's start to the release unpacked, and
  ``bytes_from_seeder`` / ``bytes_from_peers`` where the minions say their
  bytes came from, ``seeder_bytes_sent`` what the master's seeder says it
  sent (the table shows it as copies of the release), and
  ``steps``, the wall seconds and CPU of each fixed step of the deploy
  (:func:`deploy_steps`);
* **salt-fileserver**: what Salt users do today: ``cp.get_file salt://…`` of
  the archive, then unpack it and switch the ``current`` link with
  ``cmd.run`` on every minion;

and the **bound**, S / B: the time one host's link needs to receive S bytes.

Every run also records the CPU it cost: ``cpu_busy``, the share of all the
machine's cores busy during it (what else ran shows here too), and, from one
cgroup per simulated host (``cgroups.HostCgroups``), ``cpu_seconds_per_host``
(one figure per minion of the run, in order of minion id) and
``master_cpu_seconds`` (the salt-master, and the ``salt-run`` or ``salt``
commands with their tracker and seeder). Before the sweep the bench measures
the **floor** of one minion's work by hand, on an artifact of the same size
packed by murder (``floor.py``: one SHA-256 pass and ``zstd -d | tar -x``), in
CPU seconds per GiB. After the table it prints the issue's targets at the
sweep's largest N, met or missed; a run whose largest murder deploy found the
machine more than 0.6 busy does not count, and it says so.

Prints a table and writes ``bench/results/latest.json`` and ``latest.png``.
Needs root; exits non-zero without it.
"""
import argparse
import datetime
import json
import logging
import os
import pathlib
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # devtools/ (the embedded lab) lives in the checkout, not the package

import floor  # noqa: E402  (bench/ is a directory of scripts, not a package)
import report  # noqa: E402
from cgroups import HostCgroups, UsageTimeline  # noqa: E402
from netlab import LinkTimeline, Network  # noqa: E402

log = logging.getLogger("bench.datacenter")

MASTER = "master"
APP = "bench"
# The defaults model a datacenter, where every host has cores of its own: here 17 hosts share this machine's,
# so the links are slow enough that the 16-host murder deploy leaves the machine mostly idle (0.44-0.53 busy of
# 2 cores at 12 Mbit/s, 0.57-0.58 at 16, 0.60 at 20, 0.73 with 64 MiB at 40; docs/datacenter.md). 32 MiB keeps
# 32 pieces to trade and a bound of 22.4 s, and the whole default sweep within about 17 minutes.
SIZE_MIB = 32
LINK_MBIT = 12
# Jumbo frames, as datacenter networks commonly run: at 1500 the kernel's work on the simulated links' packets
# (veth, bridge, two token buckets a hop), all on these two cores, took 0.4 CPU-s of each minion's 2.3-2.7 in
# a 16-host deploy (docs/datacenter.md), work a real host's NIC and cores of its own would do.
MTU = 9000
# Each run starts on a quiet machine: what the one before left running is not counted in it.
QUIET_SECONDS = 3.0
QUIET_DEADLINE = 90


def add_run_options(parser, results):
    """The options ``make bench`` and its topology run share; ``results`` is the default results file's name."""
    parser.add_argument("--size-mib", type=int, default=SIZE_MIB, help=f"release size in MiB (default {SIZE_MIB})")
    parser.add_argument("--link-mbit", type=int, default=LINK_MBIT,
                        help=f"every host's link rate B, Mbit/s (default {LINK_MBIT})")
    parser.add_argument("--results", default=str(HERE / "results" / f"{results}.json"))
    parser.add_argument("--plot", default=str(HERE / "results" / f"{results}.png"), help="PNG path; '' for none")
    parser.add_argument("--timeout", type=int, default=600, help="deadline of one delivery, seconds")
    parser.add_argument("--murder-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="a murder setting (YAML value) for master and minions, e.g. piece_size=1048576")
    parser.add_argument("--master-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="a murder setting for the master alone (after --murder-setting), e.g. "
                             "'libtorrent={unchoke_slots_limit: 1}' for the seeder")
    parser.add_argument("--mtu", type=int, default=MTU,
                        help=f"MTU of every simulated link (default {MTU}, jumbo frames; 1500 for standard Ethernet)")
    parser.add_argument("--quiet-seconds", type=float, default=QUIET_SECONDS,
                        help=f"before each run, wait until the machine has been within {report.QUIET_MARGIN} of "
                             f"its idle busy share for this long (default {QUIET_SECONDS:g}, at most "
                             f"{QUIET_DEADLINE} s; 0: no wait)")
    parser.add_argument("-v", "--verbose", action="store_true")


def murder_settings(items):
    """``KEY=VALUE`` items of ``--murder-setting`` as a dict, each value read as YAML."""
    import yaml

    settings = {}
    for item in items:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    return settings


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,2,4,8,16", help="comma-separated N of the sweep (default 1,2,4,8,16)")
    parser.add_argument("--methods", default="murder,salt-fileserver", help="methods to run (default both)")
    add_run_options(parser, "latest")
    args = parser.parse_args(argv)
    args.hosts = sorted({int(n) for n in args.hosts.split(",")})
    args.methods = [m for m in args.methods.split(",") if m]
    if not args.hosts or args.hosts[0] < 1:
        parser.error("--hosts needs whole numbers >= 1")
    unknown = set(args.methods) - {"murder", "salt-fileserver"}
    if unknown:
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    return args


def make_release(directory, size):
    """A release directory holding one incompressible file (fresh bytes for every run)."""
    directory.mkdir(parents=True)
    with open(directory / "payload.bin", "wb") as handle:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 1 << 20))
            handle.write(block)
            remaining -= len(block)
    return directory


def last_json(text, key):
    """The last JSON object on its own line that holds ``key`` (salt's --out=json with --out-indent=-1)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if key in value:
                return value
    return None


def run_murder(lab, top, minions, size, timeout, run_id, meter):
    source = make_release(top / "sources" / run_id, size)
    base_dir = str(top / "fleet" / "{minion}" / "{app}")
    argv = lab.command("salt-run", "--out=json", "--out-indent=-1", "murder.deploy", f"source={source}",
                       f"app={APP}", f"tgt={','.join(minions)}", "tgt_type=list", f"release={run_id}",
                       f"base_dir={base_dir}", f"timeout={timeout}", "keep=2")
    with meter:
        answer = meter.on_master(argv, timeout)
    summary = last_json(answer.stdout, "deploy_id")
    if answer.returncode != 0 or not summary or summary.get("result") is not True:
        raise RuntimeError(f"murder deploy to {len(minions)} hosts failed: {answer.stdout[-2000:]} {answer.stderr[-2000:]}")
    shutil.rmtree(source, ignore_errors=True)
    reports = summary["minions"].values()
    from_seeder = sum(r["bytes_from_seeder"] for r in reports)
    return {"distribution_seconds": summary.get("distribution_seconds"), "runner_seconds": summary.get("seconds"),
            "minion_seconds": sorted(r["seconds"] for r in reports),
            "bytes_from_peers": sum(r["bytes_from_peers"] for r in reports), "bytes_from_seeder": from_seeder,
            # The seeder's own count (the issue's definition). The minions' count misses what was still on its way
            # when a peer left the seeder (leave_seeder): a tenth of what it sent at 16 hosts (docs/datacenter.md).
            "seeder_bytes_sent": summary["seeder_bytes_sent"],
            "seeder_copies": round(summary["seeder_bytes_sent"] / size, 3),
            # How many peers left the seeder once their stripe was in (leave_seeder), and went back to it.
            "left_seeder": sum(1 for r in reports if r.get("left_seeder")),
            "back_to_seeder": sum(1 for r in reports if r.get("back_to_seeder")),
            "steps": deploy_steps(summary, meter)}


MINION_STEPS = ("job_start", "download", "verify", "unpack")  # each minion's, in order (verify: v1 torrents only)


def deploy_steps(summary, meter):
    """Wall seconds (and CPU-s, with cgroups) of each fixed step of one murder deploy, from its summary.

    The deploy's own steps (``publishing``, ``distributing``, ``activating``: the summary's ``steps``) and
    the minions' (``MINION_STEPS``, from each minion's ``steps``, as ``[least, most]`` over the minions), set
    on the wall clock by the summary's ``started``; around them, ``salt_run_start`` (the salt-run command's
    start up to the engine taking its request) and ``salt_run_exit`` (the end of the deploy up to the
    command's exit). The deploy's steps add up to ``seconds``. Each step's CPU, where cgroups measure it:
    the master's and all the minions' CPU-s in the deploy's steps; each minion's own in its steps.
    """
    timeline, own = meter.timeline, summary.get("steps") or {}
    started = summary["started"]
    ended = started + summary["seconds"]
    windows = [("salt_run_start", meter.wall_started, started)]
    mark = started
    for name in ("publishing", "distributing", "activating"):
        if name in own:
            windows.append((name, mark, mark + own[name]))
            mark += own[name]
    windows.append(("salt_run_exit", ended, meter.wall_ended))
    steps = {}
    for name, since, until in windows:
        step = {"seconds": round(until - since, 3)}
        if timeline is not None:
            step["master_cpu_seconds"] = round(timeline.between(MASTER, since, until), 3)
            step["minions_cpu_seconds"] = round(sum(timeline.between(m, since, until) for m in meter.run_minions), 3)
        if name == "distributing" and meter.links is not None:
            # The seeder's share of the master's link: one copy at full rate would keep it busy ~1.0.
            step["master_uplink_busy"] = _rounded(meter.links.busy(MASTER, since, until, "up"))
        steps[name] = step
    start_event = started + own.get("publishing", 0.0)
    per_minion = {name: [] for name in MINION_STEPS}
    for minion, answer in summary["minions"].items():
        mark = start_event
        for name in MINION_STEPS:
            seconds = (answer.get("steps") or {}).get(name)
            if seconds is None:
                continue
            cpu = None if timeline is None else timeline.between(minion, mark, mark + seconds)
            link = None if meter.links is None else meter.links.busy(minion, mark, mark + seconds, "down")
            per_minion[name].append((seconds, cpu, link))
            mark += seconds
    for name, found in per_minion.items():
        if found:
            seconds = [s for s, _, _ in found]
            step = {"seconds": [round(min(seconds), 3), round(max(seconds), 3)]}
            if timeline is not None:
                cpu = [c for _, c, _ in found]
                step["cpu_seconds"] = [round(min(cpu), 3), round(max(cpu), 3)]
            links = [link for _, _, link in found if link is not None]
            if name == "download" and links:
                # Each minion's link while it downloaded: below ~1.0 it waited on its peers, not on its link.
                step["link_busy"] = [round(min(links), 3), round(max(links), 3)]
            steps[name] = step
    return steps


def _rounded(value, digits=3):
    return None if value is None else round(value, digits)


def salt_run_alone(lab, rounds=3):
    """Wall seconds of a ``salt-run`` that does next to nothing (``murder.published``): the tool's own start
    and exit, what ``salt_run_start`` and ``salt_run_exit`` of a deploy hold besides the runner; least of
    ``rounds``."""
    argv = lab.command("salt-run", "--out=json", "murder.published")
    times = []
    for _ in range(rounds):
        started = time.monotonic()
        subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
        times.append(time.monotonic() - started)
    return round(min(times), 3)


def run_fileserver(lab, top, minions, size, timeout, run_id, meter):
    release = make_release(top / "sources" / run_id, size)
    archive = top / "fileroot" / APP / f"{run_id}.tar"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w") as tar:
        tar.add(release, arcname=".")
    shutil.rmtree(release, ignore_errors=True)
    home = f"{top}/sfs/{{{{ grains['id'] }}}}"
    targets = ",".join(minions)
    fetch = lab.command("salt", "--out=json", "--static", "-t", str(timeout), "-L", targets, "cp.get_file",
                        f"salt://{APP}/{run_id}.tar", f"{home}/{run_id}.tar", "makedirs=True", "template=jinja")
    switch = (f"set -e; d={home}; mkdir -p $d/releases/{run_id}; tar -xf $d/{run_id}.tar -C $d/releases/{run_id}; "
              f"ln -sfn releases/{run_id} $d/current.new; mv -T $d/current.new $d/current")
    activate = lab.command("salt", "--out=json", "--static", "-t", str(timeout), "-L", targets, "cmd.retcode",
                           switch, "python_shell=True", "template=jinja")
    with meter:
        fetched = meter.on_master(fetch, timeout)
        activated = meter.on_master(activate, timeout)
    for minion in minions:
        payload = top / "sfs" / minion / "releases" / run_id / "payload.bin"
        if not payload.is_file() or payload.stat().st_size != size:
            raise RuntimeError(f"salt fileserver delivery to {minion} failed: {fetched.stdout[-1000:]} "
                               f"{activated.stdout[-1000:]}")
    archive.unlink()
    return {}


METHODS = {"murder": run_murder, "salt-fileserver": run_fileserver}


class RunMeter:
    """The wall time and CPU of one timed run: the whole machine's busy share, and each host's CPU seconds.

    ``with meter:`` brackets what is timed; commands of the master's side run through :meth:`on_master`, so
    that they count as the master's CPU.
    """

    def __init__(self, cgroups, run_minions, all_hosts, quiet_seconds=QUIET_SECONDS, quiet_below=1.0, net=None):
        self.cgroups = cgroups
        self.run_minions = list(run_minions)
        self.all_hosts = list(all_hosts)
        self.figures = {}
        self._join_master = cgroups.joiner(MASTER)
        # Every host's CPU through the run, to give each step its own (None without cgroups).
        self.timeline = UsageTimeline(cgroups) if cgroups.available else None
        # Every host's bytes on its link through the run, to tell a link that waited from one that was full.
        self.links = LinkTimeline(net) if net is not None else None
        self.net = net
        self._tcp_before = None
        self.wall_started = self.wall_ended = None  # time.time(), to set the steps of a deploy's summary by
        self.quiet_seconds, self.quiet_below = quiet_seconds, quiet_below
        self.quiet = None  # what report.wait_quiet found: a run after a busy start is not comparable

    def on_master(self, argv, timeout):
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 120,
                              preexec_fn=self._join_master)

    def _tcp(self):
        if self.net is None:
            return None
        return {host: {**self.net.tcp_counters(host), **self.net.queue_drops(host)} for host in self.all_hosts}

    def _usage(self):
        return {host: self.cgroups.usage(host) for host in self.all_hosts} if self.cgroups.available else None

    def __enter__(self):
        self.quiet = report.wait_quiet(self.quiet_below, window=self.quiet_seconds, deadline=QUIET_DEADLINE)
        if self.quiet["quiet"] is False:
            log.warning("the machine was still %.2f busy after %.0f s: this run starts on a busy machine",
                        self.quiet["busy"], self.quiet["waited_seconds"])
        if self.timeline is not None:
            self.timeline.start()
        if self.links is not None:
            self.links.start()
        self._tcp_before = self._tcp()
        self._machine, self._hosts, self._started = report.machine_jiffies(), self._usage(), time.monotonic()
        self.wall_started = time.time()
        return self

    def __exit__(self, *exc):
        seconds = time.monotonic() - self._started
        self.wall_ended = time.time()
        if self.timeline is not None:
            self.timeline.stop()
        if self.links is not None:
            self.links.stop()
        (busy, total), hosts = report.machine_jiffies(), self._usage()
        tcp = self._tcp()
        # Share of all cores busy during the run: near 1.0 means the machine, not the links, set the pace.
        self.figures = {"seconds": round(seconds, 3), "quiet_before": self.quiet,
                        "cpu_busy": round((busy - self._machine[0]) / max(total - self._machine[1], 1), 2),
                        "cpu_seconds_per_host": None, "master_cpu_seconds": None, "hosts_cpu_busy": None,
                        "tcp": None}
        if tcp is not None:
            # Was a link idle because TCP lost packets? A drop in the host's own queue (dropped_up) costs its link
            # nothing but the pause; one at the switch's end (dropped_down) cost the sender's link the bytes.
            delta = {host: {key: tcp[host][key] - self._tcp_before[host][key] for key in tcp[host]}
                     for host in [MASTER] + self.run_minions}
            self.figures["tcp"] = {"master": delta[MASTER], "minions": {
                key: [min(delta[m][key] for m in self.run_minions), max(delta[m][key] for m in self.run_minions)]
                for key in delta[MASTER]}}
        if hosts is not None:
            used = {host: hosts[host] - self._hosts[host] for host in self.all_hosts}
            self.figures.update(cpu_seconds_per_host=[round(used[m], 3) for m in self.run_minions],
                                master_cpu_seconds=round(used[MASTER], 3),
                                hosts_cpu_busy=round(sum(used.values()) / (seconds * os.cpu_count()), 2))


def measure_floor(top, size):
    """The CPU a minion cannot avoid for this release (``floor.measure``), on an artifact packed by murder itself.

    The release is fresh random bytes, as every run's is, and ``murder_core.pack`` packs it as the master does
    (a pax tar from GNU tar, zstd-compressed).
    """
    from murder_core import pack

    work = top / "floor"
    release = make_release(work / "release", size)
    artifact = pack.pack(str(release), str(work / "release.tar.zst"))
    shutil.rmtree(release)
    try:
        return floor.measure(artifact.path, str(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


CPU_BUSY_LIMIT = 0.6  # above it the machine, not murder, sets the pace, and the run does not count


def targets(results):
    """The issue's targets at the sweep's largest N, each {name, value, limit, met}; a value not measured is None."""
    runs = {(run["method"], run["hosts"]): run for run in results["runs"]}
    sweep = sorted({hosts for _, hosts in runs})
    if not sweep:
        return []
    # Flatness compares with N=2, as the issue does; a sweep without N=2 compares with its smallest N.
    top, low = sweep[-1], 2 if 2 in sweep or len(sweep) == 1 else sweep[0]
    bound = results["bound_seconds"]
    murder, fileserver = runs.get(("murder", top)) or {}, runs.get(("salt-fileserver", top)) or {}
    murder_low = runs.get(("murder", low)) or {} if low != top else {}

    def ratio(numerator, denominator):
        return None if numerator is None or not denominator else round(numerator / denominator, 3)

    rows = [
        ("distribution", f"murder N={top}: distribution at most 1.15x the bound",
         ratio(murder.get("distribution_seconds"), bound), 1.15, False),
        ("full_deploy", f"murder N={top}: full salt-run at most the bound + 3 s", murder.get("seconds"),
         round(bound + 3, 3), False),
        ("flat", f"murder flat: N={top} at most 1.15x N={low}, full salt-run",
         ratio(murder.get("seconds"), murder_low.get("seconds")), 1.15, False),
        ("seeder_copies", f"murder N={top}: the seeder sends at most 1.2 copies", murder.get("seeder_copies"), 1.2,
         False),
        ("fileserver", f"file server N={top} at least 10x slower than murder",
         ratio(fileserver.get("seconds"), murder.get("seconds")), 10, True),
        ("cpu_busy", f"murder N={top}: at most {CPU_BUSY_LIMIT} CPU-busy, else the run does not count",
         murder.get("cpu_busy"), CPU_BUSY_LIMIT, False),
    ]
    return report.judge(rows)


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import libtorrent
    import salt.version

    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "python": platform.python_version(),
            "libtorrent": libtorrent.__version__, "salt": salt.version.__version__}


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for method, style in (("murder", "o-"), ("salt-fileserver", "s-")):
        runs = [r for r in results["runs"] if r["method"] == method]
        if runs:
            axes.plot([r["hosts"] for r in runs], [r["seconds"] for r in runs], style, label=method)
    axes.axhline(results["bound_seconds"], color="grey", linestyle="--",
                 label=f"bound S/B = {results['bound_seconds']:.1f} s")
    axes.set_xlabel("hosts (N)")
    axes.set_ylabel("seconds, call to answer")
    axes.set_title(f"{results['size_bytes'] // 2**20} MiB to N hosts, {results['link_mbit']} Mbit/s links")
    axes.set_xscale("log", base=2)
    axes.set_xticks([r["hosts"] for r in results["runs"]] or [1])
    axes.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _spread(values, digits):
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}" if values else ""


STEP_ORDER = ("salt_run_start", "publishing", *MINION_STEPS, "distributing", "activating", "salt_run_exit")


def steps_lines(results):
    """A line per murder run: each fixed step's seconds and, in brackets, its CPU-s (the master's, then the
    minions' together; for a minion's own step, each minion's)."""
    lines = []
    for run in results["runs"]:
        if "steps" not in run:
            continue
        parts = []
        for name in STEP_ORDER:
            step = run["steps"].get(name)
            if step is None:
                continue
            seconds, cpu = step["seconds"], None
            if isinstance(seconds, list):
                text = _spread(seconds, 2)
                cpu = _spread(step["cpu_seconds"], 2) if "cpu_seconds" in step else None
                if "link_busy" in step:
                    text += f" (link {_spread(step['link_busy'], 2)} busy)"
            else:
                text = f"{seconds:.2f}"
                if "master_cpu_seconds" in step:
                    cpu = f"{step['master_cpu_seconds']:.2f}/{step['minions_cpu_seconds']:.2f}"
                if step.get("master_uplink_busy") is not None:
                    text += f" (seeder's link {step['master_uplink_busy']:.2f} busy)"
            parts.append(f"{name} {text}" + (f" [{cpu}]" if cpu else ""))
        lines.append(f"  steps, murder N={run['hosts']} (s [CPU-s]): " + ", ".join(parts))
    return lines


def table(results):
    bound = results["bound_seconds"]
    lines = [f"{results['size_bytes'] // 2**20} MiB, {results['link_mbit']} Mbit/s links, bound {bound:.2f} s",
             f"{'method':<16} {'hosts':>5} {'seconds':>8} {'x bound':>8} {'distribution s':>15} "
             f"{'per minion s':>13} {'seeder copies':>14} {'cpu busy':>9} {'hosts busy':>11} {'cpu s per host':>15} "
             f"{'master cpu s':>13}"]
    for run in results["runs"]:
        dist, copies, master = run.get("distribution_seconds"), run.get("seeder_copies"), run["master_cpu_seconds"]
        hosts_busy = run["hosts_cpu_busy"]
        lines.append(f"{run['method']:<16} {run['hosts']:>5} {run['seconds']:>8.2f} {run['seconds'] / bound:>8.2f} "
                     f"{'' if dist is None else f'{dist:.2f}':>15} {_spread(run.get('minion_seconds'), 1):>13} "
                     f"{'' if copies is None else f'{copies:.2f}':>14} {run['cpu_busy']:>9.2f} "
                     f"{'' if hosts_busy is None else f'{hosts_busy:.2f}':>11} "
                     f"{_spread(run['cpu_seconds_per_host'], 2):>15} {'' if master is None else f'{master:.2f}':>13}")
    lines += steps_lines(results)
    for run in results["runs"]:
        quiet = run.get("quiet_before")
        if quiet and not quiet["quiet"]:
            lines.append(f"  {run['method']} N={run['hosts']} started on a busy machine ({quiet['busy']:.2f} busy "
                         f"after waiting {quiet['waited_seconds']:g} s)")
    if results.get("salt_run_alone_seconds") is not None:
        lines.append(f"  salt-run alone (murder.published, least of 3): {results['salt_run_alone_seconds']:.2f} s")
    accounting = results["cpu_accounting"]
    if accounting["kind"] is None:
        lines.append(f"cpu s per host: not measured, {accounting['reason']}")
    by_hand = results["floor"]
    lines.append(f"floor, one minion's work by hand: {results['floor_cpu_seconds_per_gib']:.2f} CPU-s per GiB "
                 f"(SHA-256 {by_hand['sha256_cpu_seconds_per_gib']:.2f} + zstd -d | tar -x "
                 f"{by_hand['unpack_cpu_seconds_per_gib']:.2f}), "
                 f"{results['floor_cpu_seconds_per_gib'] * by_hand['artifact_bytes'] / 2**30:.2f} CPU-s for this release")
    for target in results["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        value = "-" if target["value"] is None else f"{target['value']:g}"
        lines.append(f"  {verdict:<12} {target['name']}: {value} (limit {target['limit']:g})")
    if results["counts"] is False:
        cpu = next(t for t in results["targets"] if t["id"] == "cpu_busy")
        lines.append(f"THIS RUN DOES NOT COUNT: the machine was {cpu['value']:.2f} CPU-busy during the largest murder "
                     f"run (limit {cpu['limit']}), so the cores, not murder, set its pace")
        largest = max((r for r in results["runs"] if r["method"] == "murder"), key=lambda r: r["hosts"])
        if largest["hosts_cpu_busy"] is not None and cpu["value"] - largest["hosts_cpu_busy"] > 0.15:
            lines.append(f"  the simulated hosts were only {largest['hosts_cpu_busy']:.2f} of it: something else ran "
                         f"on this machine; rerun when it is quiet")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")
    settings = murder_settings(args.murder_setting)
    master_settings = {**settings, **murder_settings(args.master_setting)}
    if os.geteuid() != 0:
        print("make bench needs root: it creates network namespaces and shapes links with tc", file=sys.stderr)
        return 2
    from devtools.lab import Lab

    size = args.size_mib * 2**20
    minions = [f"m{index:02}" for index in range(1, max(args.hosts) + 1)]
    results = {"size_bytes": size, "link_mbit": args.link_mbit, "mtu": args.mtu,
               "bound_seconds": size * 8 / (args.link_mbit * 10**6), "machine": machine(),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "murder_settings": settings, "master_settings": master_settings, "runs": []}
    top = pathlib.Path(tempfile.mkdtemp(prefix="murder-bench-"))
    # A kill ends the run like Ctrl-C does, so the namespaces, cgroups and daemons are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        results["floor"] = measure_floor(top, size)
        results["floor_cpu_seconds_per_gib"] = results["floor"]["cpu_seconds_per_gib"]
        # The floor packs the release as the master does, so its artifact gets the deploys' piece size.
        from murder_core import torrent
        results["piece_size"] = master_settings.get("piece_size") or torrent.auto_piece_size(
            results["floor"]["artifact_bytes"])
        log.info("floor: %s", results["floor"])
        with Network([MASTER, *minions], args.link_mbit, mtu=args.mtu) as net, HostCgroups([MASTER, *minions]) as cgroups:
            results["latency"] = net.latency
            results["cpu_accounting"] = cgroups.describe()
            master_address = net.address(MASTER)
            lab = Lab(top / "salt", master_address=master_address, publish_port=4505, ret_port=4506,
                      murder_master={"seeder_address": master_address, "announce_interval": 1, **master_settings},
                      murder_minion={"stall_timeout": 60, "linger": 10, "progress_interval": 2, **settings})
            # Salt's file server, the method murder is compared with, serves the same artifact.
            lab.snippet["file_roots"]["base"].append(str(top / "fileroot"))
            (top / "fileroot").mkdir(parents=True)
            with lab:
                lab.start_master(netns=net.netns(MASTER))
                for minion in minions:
                    lab.start_minion(minion, netns=net.netns(minion))
                lab.wait_for_minions(timeout=300)
                log.info("master and %d minions are up", len(minions))
                results["salt_run_alone_seconds"] = salt_run_alone(lab)
                results["idle_busy"] = round(report.busy_over(max(args.quiet_seconds, 1.0)), 3)
                for hosts in args.hosts:
                    for method in args.methods:
                        run_id = f"{method.split('-')[0]}-n{hosts}"
                        log.info("%s to %d hosts ...", method, hosts)
                        # Every process of a host's namespace, new ones too, counts as that host's.
                        for host in cgroups.hosts:
                            cgroups.adopt(host, net.pids(host))
                        meter = RunMeter(cgroups, minions[:hosts], cgroups.hosts, args.quiet_seconds,
                                         results["idle_busy"] + report.QUIET_MARGIN, net=net)
                        figures = METHODS[method](lab, top, minions[:hosts], size, args.timeout, run_id, meter)
                        figures = {**meter.figures, **figures}
                        results["runs"].append({"method": method, "hosts": hosts, **figures})
                        log.info("%s to %d hosts: %s", method, hosts, figures)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    report.finish(results, targets(results), table, plot, args.results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
