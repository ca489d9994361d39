"""`make bench TOPOLOGY=…` in small: 2 racks of 2 minions behind shaped uplinks, the result file well-formed.

Not a timing test: it keeps the topology bench from rotting. The crossing figures are checked against the
one thing a rack cannot avoid, a copy of the release coming in, never against a target.
"""
import json
import pathlib
import subprocess
import sys

from tests.conftest import needs_netns

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "topology.py"

pytestmark = needs_netns("the simulated racks")


def test_small_topology_run_completes_and_writes_the_crossing_figures(tmp_path):
    results, picture = tmp_path / "topology.json", tmp_path / "topology.png"
    answer = subprocess.run(
        [sys.executable, str(BENCH), "--topology", "2x2", "--size-mib", "4", "--link-mbit", "100",
         "--rounds", "1", "--policies", "rack", "--results", str(results), "--plot", str(picture),
         "--timeout", "180", "--quiet-seconds", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert answer.returncode == 0, answer.stdout[-3000:] + answer.stderr[-3000:]
    data = json.loads(results.read_text())
    assert (data["racks"], data["hosts_per_rack"], data["size_bytes"]) == (2, 2, 4 * 2**20)
    assert (data["link_mbit"], data["uplink_mbit"]) == (100, 200)
    [run] = data["runs"]
    assert run["policy"] == "rack" and run["seconds"] > 0 and 0 <= run["cpu_busy"] <= 1
    assert isinstance(run["quiet_before"]["quiet"], bool) and run["quiet_before"]["waited_seconds"] >= 1.0
    # Each minion's place came from its config, through Salt, to the tracker; and through its grains and
    # the master's minion data cache to the engine, which split every peer into its two sessions.
    assert run["placed"] == 4 and run["split"] == 4
    # Every rack took at least one copy of the release through its uplink, and finished.
    assert len(run["uplink_copies"]) == 2 and all(copies >= 0.95 for copies in run["uplink_copies"])
    assert len(run["rack_finish_seconds"]) == 2 and all(0 < s <= run["distribution_seconds"]
                                                         for s in run["rack_finish_seconds"])
    assert {t["id"] for t in data["targets"]} == {"uplink_copies", "no_slower", "rack_spread", "cpu_busy"}
    assert next(t for t in data["targets"] if t["id"] == "no_slower")["met"] is None  # random did not run
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "copies into each rack" in answer.stdout
