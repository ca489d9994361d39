"""`make bench` in small: every method completes on a 2-host datacenter and the result file is well-formed.

Not a timing test: it only keeps the benchmark from rotting (its figures, the per-host CPU from cgroups, the
floor and the target verdicts are checked for shape, never for value).
"""
import json
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import needs_netns

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "datacenter.py"
TARGETS = {"distribution", "full_deploy", "flat", "seeder_copies", "fileserver", "cpu_busy"}

pytestmark = needs_netns("the simulated datacenter")


def test_small_datacenter_run_completes_and_writes_results(tmp_path):
    results, picture = tmp_path / "latest.json", tmp_path / "latest.png"
    answer = subprocess.run(
        [sys.executable, str(BENCH), "--hosts", "2", "--size-mib", "4", "--link-mbit", "200",
         "--results", str(results), "--plot", str(picture), "--timeout", "180", "--quiet-seconds", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert answer.returncode == 0, answer.stdout[-3000:] + answer.stderr[-3000:]
    data = json.loads(results.read_text())
    assert data["size_bytes"] == 4 * 2**20 and data["link_mbit"] == 200
    assert data["bound_seconds"] == pytest.approx(4 * 2**20 * 8 / 200e6)
    assert data["piece_size"] == 64 * 2**10  # piece_size 0: a 4 MiB release in 64 KiB pieces
    assert {"nproc", "cpu", "libtorrent", "salt"} <= set(data["machine"])
    assert data["salt_run_alone_seconds"] > 0
    accounting = data["cpu_accounting"]
    measured = accounting["kind"] is not None  # no writable cgroup hierarchy: figures are null, the reason given
    assert accounting["kind"] in ("cgroup2", "cpuacct") if measured else accounting["reason"]
    runs = {(run["method"], run["hosts"]): run for run in data["runs"]}
    assert set(runs) == {(m, n) for m in ("murder", "salt-fileserver") for n in (2,)}
    for (method, hosts), run in runs.items():
        assert run["seconds"] > 0 and 0 <= run["cpu_busy"] <= 1
        # The run started only after a quiet second (--quiet-seconds 1), or said that it never came.
        assert isinstance(run["quiet_before"]["quiet"], bool) and run["quiet_before"]["waited_seconds"] >= 1.0
        assert 0 <= run["quiet_before"]["busy"] <= 1
        assert (run.get("distribution_seconds") or 0) > 0 if method == "murder" else "distribution_seconds" not in run
        if measured:
            # One figure per minion of the run, and the master's apart.
            assert len(run["cpu_seconds_per_host"]) == hosts and all(s > 0 for s in run["cpu_seconds_per_host"])
            assert run["master_cpu_seconds"] > 0
        else:
            assert run["cpu_seconds_per_host"] is None and run["master_cpu_seconds"] is None
        # What TCP lost on the way: counters of every host's namespace and of its link's two queues.
        tcp = run["tcp"]
        assert set(tcp["master"]) == set(tcp["minions"]) == TCP_COUNTERS
        assert all(count >= 0 for count in tcp["master"].values()) and tcp["master"]["segments_out"] > 0
        assert all(0 <= least <= most for least, most in tcp["minions"].values())
        assert tcp["minions"]["segments_out"][0] > 0
        if method == "murder":
            # Every minion's own time, and every byte it received, from the seeder or from peers.
            assert len(run["minion_seconds"]) == hosts and all(s > 0 for s in run["minion_seconds"])
            assert run["bytes_from_seeder"] + run["bytes_from_peers"] >= hosts * 4 * 2**20
            # The seeder's own count: the minions started empty, so at least one copy left it.
            assert run["seeder_bytes_sent"] >= data["size_bytes"]
            assert run["seeder_copies"] == pytest.approx(run["seeder_bytes_sent"] / data["size_bytes"], abs=1e-3)
            assert 0 <= run["back_to_seeder"] <= run["left_seeder"] <= hosts
            check_steps(run, measured)
    floor = data["floor"]
    assert data["floor_cpu_seconds_per_gib"] > 0 and floor["artifact_bytes"] >= 4 * 2**20
    assert data["floor_cpu_seconds_per_gib"] == pytest.approx(
        floor["sha256_cpu_seconds_per_gib"] + floor["unpack_cpu_seconds_per_gib"], abs=1e-2)
    assert {target["id"] for target in data["targets"]} == TARGETS
    for target in data["targets"]:
        assert isinstance(target["name"], str) and isinstance(target["limit"], (int, float))
        assert target["met"] is None if target["value"] is None else isinstance(target["met"], bool)
    assert data["counts"] is next(t["met"] for t in data["targets"] if t["id"] == "cpu_busy")
    # The bench removed every cgroup it made.
    assert not measured or not pathlib.Path(accounting["path"]).exists()
    assert picture.stat().st_size > 1000 and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "murder" in answer.stdout and "bound" in answer.stdout and "floor" in answer.stdout
    assert "distribution at most 1.15x the bound" in answer.stdout
    assert "steps, murder N=2" in answer.stdout


TCP_COUNTERS = {"segments_out", "retransmitted", "timeouts", "dropped_up", "dropped_down"}
DEPLOY_STEPS = ("salt_run_start", "publishing", "distributing", "activating", "salt_run_exit")
MINION_STEPS = ("job_start", "download", "unpack")  # verify only for v1 torrents


def check_steps(run, measured):
    """A murder run's fixed steps: the deploy's cover the whole run; each minion step spans its minions."""
    steps = run["steps"]
    assert set(DEPLOY_STEPS + MINION_STEPS) <= set(steps) <= set(DEPLOY_STEPS + MINION_STEPS + ("verify",))
    assert all(steps[name]["seconds"] >= 0 for name in DEPLOY_STEPS)
    assert sum(steps[name]["seconds"] for name in DEPLOY_STEPS) == pytest.approx(run["seconds"], abs=0.5)
    for name in MINION_STEPS:
        least, most = steps[name]["seconds"]
        assert 0 <= least <= most
    for name, step in steps.items():
        if not measured:
            assert not {"master_cpu_seconds", "minions_cpu_seconds", "cpu_seconds"} & set(step)
        elif name in DEPLOY_STEPS:
            assert step["master_cpu_seconds"] >= 0 and step["minions_cpu_seconds"] >= 0
        else:
            assert 0 <= step["cpu_seconds"][0] <= step["cpu_seconds"][1]
    assert steps["download"]["seconds"][1] > 0
    # Each minion's link while it downloaded, and the master's while its seeder served: shares of the link rate.
    least, most = steps["download"]["link_busy"]
    assert 0 < least <= most <= 1.5
    assert 0 < steps["distributing"]["master_uplink_busy"] <= 1.5


def test_without_root_it_refuses_clearly(tmp_path):
    nobody = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, str(BENCH),
         "--results", str(tmp_path / "x.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert nobody.returncode == 2
    assert "needs root" in nobody.stderr
    assert not (tmp_path / "x.json").exists()
