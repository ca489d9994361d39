"""`make bench-tracker` in small: both trackers are loaded, the engine accounts for its simulated peers,
and the result file is well-formed.

Not a timing test: it only keeps the benchmark from rotting.
"""
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "tracker.py"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("wrk", "opentracker", "taskset")),
    reason="the tracker benchmark needs wrk and opentracker (apt-get install wrk opentracker); CI installs them",
)


def test_small_tracker_run_completes_and_writes_results(tmp_path):
    results, picture = tmp_path / "tracker.json", tmp_path / "tracker.png"
    answer = subprocess.run(
        [sys.executable, str(BENCH), "--peers", "300", "--seconds", "1", "--rounds", "1",
         "--engine-peers", "200", "--results", str(results), "--plot", str(picture)],
        capture_output=True, text=True, timeout=300,
    )
    assert answer.returncode == 0, answer.stdout[-3000:] + answer.stderr[-3000:]
    data = json.loads(results.read_text())
    assert data["peers"] == 300 and data["rounds"] == 1
    runs = {run["tracker"]: run for run in data["runs"]}
    assert set(runs) == {"murder", "opentracker"}
    for run in runs.values():
        # Every peer the load announced is held by the tracker afterwards.
        assert run["swarm_peers"] == 300
        assert run["requests"] > 0 and run["rate"] > 0 and run["p99_ms"] > 0
        assert 0 <= run["cpu_core_share"] and 0 <= run["machine_busy"] <= 1
    assert data["interval"] >= data["announce_interval"]
    assert {"murder", "opentracker", "ratio_per_core", "fleet_announce_rate"} <= set(data["summary"])
    assert [t["limit"] for t in data["targets"]] == [0.3, 0.5] and all(isinstance(t["met"], bool) for t in data["targets"])
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "opentracker" in answer.stdout and "announces/s" in answer.stdout
    # The engine's section: every simulated peer's three events fired, each peer done with its own report.
    engine = data["engine"]
    assert engine["peers"] == 200 and engine["events"] == 600 and engine["fire_failures"] == 0
    assert engine["accounted"] == {"done": 200, "failed": 0, "timed out": 0, "other": 0, "mismatched": 0,
                                   "missing": 0}
    assert engine["all_accounted"] is True and engine["deploy_state"] == "succeeded"
    assert engine["events_per_second"] > 0 and engine["seconds_to_accounted"] >= 0
    assert engine["engine_cpu_seconds"] > 0 and 0 <= engine["machine_busy"] <= 1
    assert "engine: 200 peers" in answer.stdout
