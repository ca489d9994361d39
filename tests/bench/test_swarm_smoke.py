"""`make bench-swarm` in small: the swarm, the host and the floor are measured and the result file is well-formed.

Not a timing test: it only keeps the benchmark from rotting.
"""
import json
import pathlib
import subprocess
import sys

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "swarm.py"


def test_small_swarm_run_completes_and_writes_results(tmp_path):
    results, picture = tmp_path / "swarm.json", tmp_path / "swarm.png"
    answer = subprocess.run(
        [sys.executable, str(BENCH), "--size-mib", "4", "--repeat", "1", "--settle", "0",
         "--torrent-format", "v2", "v1", "--dir", str(tmp_path), "--results", str(results), "--plot", str(picture)],
        capture_output=True, text=True, timeout=300,
    )
    assert answer.returncode == 0, answer.stdout[-3000:] + answer.stderr[-3000:]
    data = json.loads(results.read_text())
    assert data["size"] > 4 * 2**20  # one 4 MiB file, packed
    assert {entry["torrent_format"] for entry in data["summary"]} == {"v2", "v1"}
    assert all(entry["ratio"] > 0 and entry["failed"] == 0 for entry in data["summary"])
    assert data["floor"]["cpu_seconds_per_gib"] > 0
    hosts = {entry["torrent_format"]: entry for entry in data["host_summary"]}
    assert set(hosts) == {"v2", "v1"}
    for torrent_format, entry in hosts.items():
        assert entry["cpu_seconds_per_gib"] > 0 and entry["floor_ratio"] > 0
        assert entry["steps"]["download"] > 0 and entry["steps"]["unpack"] > 0
    # Only the v1 host pays for the whole-file SHA-256 pass.
    assert hosts["v1"]["steps"]["verify"] > 0 and hosts["v2"]["steps"]["verify"] == 0
    assert data["fixed_cost"]["cpu_seconds"] > 0
    assert all(0 <= entry["machine_busy"] <= 1 for entry in data["summary"] + data["host_summary"])
    assert "floor" in answer.stdout and "fixed cost" in answer.stdout
    # The two targets, judged on the default format (v2), each with a verdict.
    assert [t["id"] for t in data["targets"]] == ["host_floor_ratio", "copy_ratio"]
    assert [t["limit"] for t in data["targets"]] == [1.5, 0.5]
    assert all(isinstance(t["met"], bool) and t["value"] > 0 for t in data["targets"])
    assert data["targets"][0]["value"] == hosts["v2"]["floor_ratio"]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "target: " in answer.stdout
