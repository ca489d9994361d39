"""`bench/rack_split.py` in small: 2 racks of 2 hosts, each way of choosing peers once, the result file well-formed.

Not a timing test: it keeps the experiment from rotting. The one figure checked is one no policy can beat,
a rack taking at least one copy of the release, and that the split hands pieces from one session to the other.
"""
import json
import pathlib
import subprocess
import sys

from tests.conftest import needs_netns

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "rack_split.py"

pytestmark = needs_netns("the simulated racks")


def test_small_rack_split_run_completes_and_writes_the_crossing_figures(tmp_path):
    results = tmp_path / "rack-split.json"
    answer = subprocess.run(
        [sys.executable, str(BENCH), "--racks", "2", "--hosts-per-rack", "2", "--size-mib", "4",
         "--link-mbit", "50", "--rounds", "1", "--timeout", "120", "--results", str(results),
         "--modes", "split", "split_leave", "rack", "random"],
        capture_output=True, text=True, timeout=600,
    )
    assert answer.returncode == 0, answer.stdout[-3000:] + answer.stderr[-3000:]
    data = json.loads(results.read_text())
    assert (data["racks"], data["hosts_per_rack"], data["link_mbit"], data["uplink_mbit"]) == (2, 2, 50, 100)
    runs = {run["policy"]: run for run in data["runs"]}
    assert set(runs) == {"split", "split_leave", "rack", "random"}
    for run in runs.values():
        assert run["missing"] == [] and run["seconds"] > 0 and 0 <= run["cpu_busy"] <= 1
        assert len(run["uplink_copies"]) == 2 and all(copies >= 0.95 for copies in run["uplink_copies"])
        assert len(run["rack_finish_seconds"]) == 2 and max(run["rack_finish_seconds"]) == run["seconds"]
        assert run["seeder_copies"] >= 0.95
    # Only the split has an outward session whose pieces go to the inward one: each host hands its stripe.
    assert runs["split"]["handed_pieces"] > 0 and runs["split_leave"]["handed_pieces"] > 0
    assert runs["rack"]["handed_pieces"] == 0
    # Only split_leave's outward sessions may leave the seeder; the others never do.
    assert runs["split"]["left_seeder"] == runs["rack"]["left_seeder"] == 0
    assert set(data["summary"]) == {"split", "split_leave", "rack", "random"}
