"""`make bench TOPOLOGY=RxH`: rack-aware peer choice, measured on oversubscribed rack uplinks.

Builds R racks of H minions (``netlab.Network`` with racks): the hosts of a
rack on a bridge of their own, the rack joined to the core by one uplink
shaped to ``--uplink-mbit`` each way (default twice a host's link), the
master on the core. Every minion says where it is in its config
(``murder: {rack: r<i>, datacenter: dc1}``). Then it deploys a fresh,
incompressible release of ``--size-mib`` to all R × H minions with
``salt-run murder.deploy``, with the master's ``peer_choice`` set to
``rack`` and to ``random`` in turn (the master restarts between them),
``--rounds`` times each, and records per run:

* ``uplink_copies``: bytes that entered each rack through its uplink, in
  copies of the release (one is the least a rack can take; the counters
  include Salt's own traffic and TCP/IP headers, a few per cent);
* ``rack_finish_seconds``: when each rack's last minion said ``done``,
  counted from the deploy's start;
* ``seconds`` (the whole ``salt-run``), ``distribution_seconds``, the
  seeder's copies, and how busy the machine was (``cpu_busy``, and the
  simulated hosts alone, ``hosts_cpu_busy``).

Writes ``bench/results/topology-latest.json`` (and a plot) and prints the
targets of issue #17: with the rack policy at most 1.5 copies into each
rack, the deploy no slower than with random choice, and no rack finishing
more than 20 % later than the first. Needs root; exits 2 without it.
"""
import argparse
import datetime
import logging
import os
import pathlib
import shutil
import signal
import statistics
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # devtools/ (the embedded lab) lives in the checkout

import report  # noqa: E402  (bench/ is a directory of scripts, not a package)
from cgroups import HostCgroups  # noqa: E402
from datacenter import (APP, MASTER, RunMeter, add_run_options, last_json,  # noqa: E402
                        machine, make_release, murder_settings)
from netlab import Network  # noqa: E402

log = logging.getLogger("bench.topology")

POLICIES = ("rack", "random")
DATACENTER = "dc1"
UPLINK_COPIES_LIMIT = 1.5
RACK_SPREAD_LIMIT = 0.2
CPU_BUSY_LIMIT = 0.6
HOST_KEYS = ("done_seconds", "stripe", "left_seeder", "back_to_seeder", "rescued", "bytes_from_seeder",
             "bytes_from_outside")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="4x4", help="R racks x H hosts per rack (default 4x4)")
    parser.add_argument("--uplink-mbit", type=int, default=None, help="a rack's uplink, Mbit/s (default 2 x link)")
    parser.add_argument("--rounds", type=int, default=2, help="deploys per policy, alternating (default 2)")
    parser.add_argument("--policies", default=",".join(POLICIES), help="peer_choice values to run (default both)")
    parser.add_argument("--keep", action="store_true", help="keep the lab directory (the daemons' logs) at the end")
    add_run_options(parser, "topology-latest")
    args = parser.parse_args(argv)
    args.settings = murder_settings(args.murder_setting)
    try:
        args.racks, args.hosts_per_rack = (int(n) for n in args.topology.lower().split("x"))
    except ValueError:
        parser.error(f"--topology must be RxH, for example 4x4, got {args.topology!r}")
    if args.racks < 1 or args.hosts_per_rack < 1 or args.rounds < 1:
        parser.error("--topology and --rounds need whole numbers >= 1")
    args.uplink_mbit = args.uplink_mbit or 2 * args.link_mbit
    args.policies = [p for p in args.policies.split(",") if p]
    if not args.policies or set(args.policies) - set(POLICIES):
        parser.error(f"--policies takes {', '.join(POLICIES)}")
    return args


def rack_of(minion):
    return minion.split("h", 1)[0]


def run_deploy(lab, net, top, minions, size, timeout, run_id, meter):
    """One ``salt-run murder.deploy`` to every minion; the figures of the run."""
    source = make_release(top / "sources" / run_id, size)
    before = {rack: net.uplink_bytes(rack) for rack in net.rack_names}
    argv = lab.command("salt-run", "--out=json", "--out-indent=-1", "murder.deploy", f"source={source}",
                       f"app={APP}", f"tgt={','.join(minions)}", "tgt_type=list", f"release={run_id}",
                       f"base_dir={top / 'fleet' / '{minion}' / '{app}'}", f"timeout={timeout}", "keep=2")
    with meter:
        answer = meter.on_master(argv, timeout)
    after = {rack: net.uplink_bytes(rack) for rack in net.rack_names}
    shutil.rmtree(source, ignore_errors=True)
    summary = last_json(answer.stdout, "deploy_id")
    if answer.returncode != 0 or not summary or summary.get("result") is not True:
        raise RuntimeError(f"deploy {run_id} failed: {answer.stdout[-2000:]} {answer.stderr[-2000:]}")
    reports = summary["minions"]
    finish = {rack: max(reports[m]["done_seconds"] for m in minions if rack_of(m) == rack) for rack in net.rack_names}
    return {
        "distribution_seconds": summary.get("distribution_seconds"),
        "uplink_copies": [round((after[r]["in"] - before[r]["in"]) / size, 3) for r in net.rack_names],
        "uplink_copies_out": [round((after[r]["out"] - before[r]["out"]) / size, 3) for r in net.rack_names],
        "rack_finish_seconds": [finish[r] for r in net.rack_names],
        "seeder_copies": round(summary["seeder_bytes_sent"] / size, 3),  # the seeder's own count, as make bench
        # Minions whose peer announced the place their config gives (the rest were placed by address).
        "placed": sum(1 for m in minions if reports[m].get("place") == f"{DATACENTER}/{rack_of(m)}"),
        # Minions whose peer ran as two sessions (rack_split), and those of them whose rack gave them nothing
        # for a while, so that they fetched the rest from outside.
        "split": sum(1 for m in minions if reports[m].get("split")),
        "rescued": sum(1 for m in minions if reports[m].get("rescued")),
        # Each host's own account, for tracing a slow rack.
        "hosts": {m: {key: reports[m].get(key) for key in HOST_KEYS} for m in minions},
    }


def targets(results):
    """Issue #17's targets over the runs (medians of each policy's runs); None where a policy did not run."""
    by_policy = {p: [r for r in results["runs"] if r["policy"] == p] for p in POLICIES}
    rack, rand = by_policy["rack"], by_policy["random"]

    def median(runs, key):
        return statistics.median(r[key] for r in runs) if runs else None

    worst_copies = max((max(r["uplink_copies"]) for r in rack), default=None)
    spread = max((max(r["rack_finish_seconds"]) / min(r["rack_finish_seconds"]) - 1 for r in rack), default=None)
    slower = (round(median(rack, "seconds") / median(rand, "seconds"), 3) if rack and rand else None)
    busiest = max((r["cpu_busy"] for r in results["runs"]), default=None)
    rows = [
        ("uplink_copies", "rack policy: copies into each rack at most", worst_copies, UPLINK_COPIES_LIMIT),
        ("no_slower", "rack policy's deploy / random's (median seconds) at most", slower, 1.0),
        ("rack_spread", "rack policy: last rack's finish / first rack's - 1 at most", spread and round(spread, 3),
         RACK_SPREAD_LIMIT),
        ("cpu_busy", "machine busy during any run at most (else the run does not count)", busiest, CPU_BUSY_LIMIT),
    ]
    return report.judge((key, name, value, limit, False) for key, name, value, limit in rows)


def table(results):
    lines = [f"{results['racks']} racks x {results['hosts_per_rack']} hosts, {results['size_bytes'] >> 20} MiB, "
             f"hosts at {results['link_mbit']} Mbit/s, uplinks at {results['uplink_mbit']} Mbit/s "
             f"(a host's bound {results['bound_seconds']:.1f} s)",
             f"{'policy':8} {'seconds':>8} {'distrib.':>8} {'seeder':>7} {'busy':>5}  copies into each rack / "
             "rack finish (s)"]
    for run in results["runs"]:
        lines.append(f"{run['policy']:8} {run['seconds']:8.1f} {run['distribution_seconds']:8.1f} "
                     f"{run['seeder_copies']:7.2f} {run['cpu_busy']:5.2f}  "
                     + " ".join(f"{c:.2f}" for c in run["uplink_copies"]) + " / "
                     + " ".join(f"{s:.1f}" for s in run["rack_finish_seconds"]))
    for target in results["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        lines.append(f"target {target['id']}: {target['name']} {target['limit']}: {target['value']} {verdict}")
    if results["counts"] is False:
        lines.append("THIS RUN DOES NOT COUNT: the machine was too busy to measure murder")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (copies, finish) = plt.subplots(1, 2, figsize=(10, 4))
    racks = range(1, results["racks"] + 1)
    for run in results["runs"]:
        style = "-o" if run["policy"] == "rack" else "--x"
        copies.plot(racks, run["uplink_copies"], style, label=run["policy"])
        finish.plot(racks, run["rack_finish_seconds"], style, label=run["policy"])
    copies.axhline(UPLINK_COPIES_LIMIT, color="grey", linewidth=0.8)
    copies.set(xlabel="rack", ylabel="copies into the rack", ylim=(0, None))
    finish.set(xlabel="rack", ylabel="last done (s)", ylim=(0, None))
    copies.legend()
    figure.suptitle(f"{results['racks']}x{results['hosts_per_rack']}, uplink {results['uplink_mbit']} Mbit/s")
    figure.tight_layout()
    figure.savefig(path)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")
    if os.geteuid() != 0:
        print("make bench needs root: it creates network namespaces and shapes links with tc", file=sys.stderr)
        return 2
    from devtools.lab import Lab

    size = args.size_mib * 2**20
    minions = [f"r{r}h{h}" for r in range(args.racks) for h in range(args.hosts_per_rack)]
    results = {"racks": args.racks, "hosts_per_rack": args.hosts_per_rack, "size_bytes": size,
               "link_mbit": args.link_mbit, "uplink_mbit": args.uplink_mbit,
               "bound_seconds": size * 8 / (args.link_mbit * 10**6), "machine": machine(),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "murder_settings": args.settings, "runs": []}
    top = pathlib.Path(tempfile.mkdtemp(prefix="murder-topology-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    order = [args.policies[(i + j) % len(args.policies)] for i in range(args.rounds) for j in range(len(args.policies))]
    try:
        racks = {m: rack_of(m) for m in minions}
        with Network([MASTER, *minions], args.link_mbit, racks=racks, uplink_mbit=args.uplink_mbit,
                     mtu=args.mtu) as net, \
                HostCgroups([MASTER, *minions]) as cgroups:
            results["latency"] = net.latency
            results["cpu_accounting"] = cgroups.describe()
            address = net.address(MASTER)
            lab = Lab(top / "salt", master_address=address, publish_port=4505, ret_port=4506,
                      murder_master={"seeder_address": address, "announce_interval": 1, **args.settings,
                                     "peer_choice": order[0]},
                      murder_minion={"stall_timeout": 60, "linger": 10, "progress_interval": 2, **args.settings})
            with lab:
                lab.start_master(netns=net.netns(MASTER))
                for minion in minions:
                    lab.start_minion(minion, netns=net.netns(minion),
                                     murder={"rack": racks[minion], "datacenter": DATACENTER})
                lab.wait_for_minions(timeout=300)
                results["idle_busy"] = round(report.busy_over(max(args.quiet_seconds, 1.0)), 3)
                policy = order[0]
                for index, wanted in enumerate(order):
                    if wanted != policy:
                        log.info("restarting the master with peer_choice %s ...", wanted)
                        lab.restart_master(peer_choice=wanted)
                        lab.wait_for_minions(timeout=300)
                        policy = wanted
                    for host in cgroups.hosts:
                        cgroups.adopt(host, net.pids(host))
                    meter = RunMeter(cgroups, minions, cgroups.hosts, args.quiet_seconds,
                                     results["idle_busy"] + report.QUIET_MARGIN)
                    run_id = f"{policy}-{index}"
                    log.info("deploy %s to %d hosts ...", run_id, len(minions))
                    figures = run_deploy(lab, net, top, minions, size, args.timeout, run_id, meter)
                    run = {"policy": policy, **meter.figures, **figures}
                    results["runs"].append(run)
                    log.info("%s: %s", run_id, run)
    finally:
        if args.keep:
            log.info("kept the lab (the daemons' logs, the fleet) in %s", top)
        else:
            shutil.rmtree(top, ignore_errors=True)
    report.finish(results, targets(results), table, plot, args.results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
