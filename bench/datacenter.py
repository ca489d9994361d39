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
  ``bytes_from_seeder`` / ``bytes_from_peers`` where the minions' bytes came
  from (the table shows the seeder's share as copies of the release);
* **salt-fileserver**: what Salt users do today: ``cp.get_file salt://…`` of
  the archive, then unpack it and switch the ``current`` link with
  ``cmd.run`` on every minion;

and the **bound**, S / B: the time one host's link needs to receive S bytes.
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
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # devtools/ (the embedded lab) lives in the checkout, not the package

from netlab import Network  # noqa: E402  (bench/ is a directory of scripts, not a package)

log = logging.getLogger("bench.datacenter")

MASTER = "master"
APP = "bench"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,2,4,8,16", help="comma-separated N of the sweep (default 1,2,4,8,16)")
    parser.add_argument("--size-mib", type=int, default=64, help="release size in MiB (default 64)")
    parser.add_argument("--link-mbit", type=int, default=100, help="every host's link rate B, Mbit/s (default 100)")
    parser.add_argument("--methods", default="murder,salt-fileserver", help="methods to run (default both)")
    parser.add_argument("--results", default=str(HERE / "results" / "latest.json"))
    parser.add_argument("--plot", default=str(HERE / "results" / "latest.png"), help="PNG path; '' for none")
    parser.add_argument("--timeout", type=int, default=600, help="deadline of one delivery, seconds")
    parser.add_argument("--murder-setting", action="append", default=[], metavar="KEY=VALUE",
                        help="a murder setting (YAML value) for master and minions, e.g. piece_size=1048576")
    parser.add_argument("-v", "--verbose", action="store_true")
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


def run_murder(lab, top, minions, size, timeout, run_id):
    source = make_release(top / "sources" / run_id, size)
    base_dir = str(top / "fleet" / "{minion}" / "{app}")
    argv = lab.command("salt-run", "--out=json", "--out-indent=-1", "murder.deploy", f"source={source}",
                       f"app={APP}", f"tgt={','.join(minions)}", "tgt_type=list", f"release={run_id}",
                       f"base_dir={base_dir}", f"timeout={timeout}", "keep=2")
    started = time.monotonic()
    answer = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 120)
    seconds = time.monotonic() - started
    summary = last_json(answer.stdout, "deploy_id")
    if answer.returncode != 0 or not summary or summary.get("result") is not True:
        raise RuntimeError(f"murder deploy to {len(minions)} hosts failed: {answer.stdout[-2000:]} {answer.stderr[-2000:]}")
    shutil.rmtree(source, ignore_errors=True)
    reports = summary["minions"].values()
    return {"seconds": round(seconds, 3), "distribution_seconds": summary.get("distribution_seconds"),
            "runner_seconds": summary.get("seconds"),
            "minion_seconds": sorted(r["seconds"] for r in reports),
            "bytes_from_peers": sum(r["bytes_from_peers"] for r in reports),
            "bytes_from_seeder": sum(r["bytes_from_seeder"] for r in reports)}


def run_fileserver(lab, top, minions, size, timeout, run_id):
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
    started = time.monotonic()
    fetched = subprocess.run(fetch, capture_output=True, text=True, timeout=timeout + 120)
    activated = subprocess.run(activate, capture_output=True, text=True, timeout=timeout + 120)
    seconds = time.monotonic() - started
    for minion in minions:
        payload = top / "sfs" / minion / "releases" / run_id / "payload.bin"
        if not payload.is_file() or payload.stat().st_size != size:
            raise RuntimeError(f"salt fileserver delivery to {minion} failed: {fetched.stdout[-1000:]} "
                               f"{activated.stdout[-1000:]}")
    archive.unlink()
    return {"seconds": round(seconds, 3)}


METHODS = {"murder": run_murder, "salt-fileserver": run_fileserver}


def cpu_times():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


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


def table(results):
    bound = results["bound_seconds"]
    lines = [f"{results['size_bytes'] // 2**20} MiB, {results['link_mbit']} Mbit/s links, bound {bound:.2f} s",
             f"{'method':<16} {'hosts':>5} {'seconds':>8} {'x bound':>8} {'distribution s':>15} "
             f"{'per minion s':>13} {'seeder copies':>14} {'cpu busy':>9}"]
    for run in results["runs"]:
        dist = run.get("distribution_seconds")
        each = run.get("minion_seconds") or []
        spread = f"{each[0]:.1f}-{each[-1]:.1f}" if each else ""
        copies = f"{run['bytes_from_seeder'] / results['size_bytes']:.2f}" if "bytes_from_seeder" in run else ""
        lines.append(f"{run['method']:<16} {run['hosts']:>5} {run['seconds']:>8.2f} {run['seconds'] / bound:>8.2f} "
                     f"{'' if dist is None else f'{dist:.2f}':>15} {spread:>13} {copies:>14} "
                     f"{run.get('cpu_busy', 0):>9.2f}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")
    import yaml

    settings = {}
    for item in args.murder_setting:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    if os.geteuid() != 0:
        print("make bench needs root: it creates network namespaces and shapes links with tc", file=sys.stderr)
        return 2
    from devtools.lab import Lab

    size = args.size_mib * 2**20
    minions = [f"m{index:02}" for index in range(1, max(args.hosts) + 1)]
    results = {"size_bytes": size, "link_mbit": args.link_mbit,
               "bound_seconds": size * 8 / (args.link_mbit * 10**6), "machine": machine(),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "murder_settings": settings, "runs": []}
    top = pathlib.Path(tempfile.mkdtemp(prefix="murder-bench-"))
    try:
        with Network([MASTER, *minions], args.link_mbit) as net:
            results["latency"] = net.latency
            master_address = net.address(MASTER)
            lab = Lab(top / "salt", master_address=master_address, publish_port=4505, ret_port=4506,
                      murder_master={"seeder_address": master_address, "announce_interval": 1, **settings},
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
                for hosts in args.hosts:
                    for method in args.methods:
                        run_id = f"{method.split('-')[0]}-n{hosts}"
                        log.info("%s to %d hosts ...", method, hosts)
                        busy, total = cpu_times()
                        figures = METHODS[method](lab, top, minions[:hosts], size, args.timeout, run_id)
                        busy_after, total_after = cpu_times()
                        # Share of both cores busy during the run: near 1.0 means the machine, not the links, set the pace.
                        figures["cpu_busy"] = round((busy_after - busy) / max(total_after - total, 1), 2)
                        results["runs"].append({"method": method, "hosts": hosts, **figures})
                        log.info("%s to %d hosts: %s", method, hosts, figures)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    pathlib.Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    if args.plot:
        plot(results, args.plot)
    print(table(results))
    print(f"results: {args.results}" + (f", plot: {args.plot}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
