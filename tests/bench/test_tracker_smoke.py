"""`make bench-tracker` in small: both trackers are loaded and the result file is well-formed.

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
         "--results", str(results), "--plot", str(picture)],
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
