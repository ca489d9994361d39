"""The murder outputter (``_output/murder.py``): totals first, then the hosts that need a look."""
import importlib.util
import pathlib

SPEC = importlib.util.spec_from_file_location(
    "murder_outputter", pathlib.Path(__file__).resolve().parents[2] / "_output" / "murder.py")
outputter = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(outputter)


def host(**fields):
    return dict({"state": "done", "activated": True, "rolled_back": False, "comment": "now current"}, **fields)


def test_a_large_fleet_shows_totals_and_only_the_hosts_with_a_problem():
    minions = {f"web{i:04}": host() for i in range(1000)}
    minions["web0007"] = host(activated=False, state="failed", comment="No space left on device")
    minions["web0001"] = host(activated=False, rolled_back=True, comment="rolled back to r1: 1 hosts failed")
    text = outputter.output({"deploy_id": "shop-r2-1", "app": "shop", "release": "r2", "state": "failed",
                             "seconds": 12.34, "minions": minions})
    lines = text.splitlines()
    assert lines[0] == "deploy shop-r2-1: shop r2 FAILED in 12.3 s"
    assert lines[1] == "  1000 hosts: 998 activated, 1 failed, 1 rolled back"
    assert len(lines) == 4 and "web0007: No space left on device" in text and "web0001: rolled back" in text


def test_a_status_listing_is_one_line_per_deploy_with_the_error_of_a_refusal():
    text = outputter.output({"deploys": [
        {"deploy_id": "a-r1-1", "app": "a", "release": "r1", "state": "succeeded", "minions": {"m1": "done"}},
        {"deploy_id": "a-refused-2", "app": "a", "release": None, "state": "refused", "minions": {},
         "error": "murder.deploy does not take relase"}]})
    assert text.splitlines() == ["a-r1-1: a r1 succeeded, 1 hosts",
                                 "a-refused-2: a (no release) refused, 0 hosts (murder.deploy does not take relase)"]
    text = outputter.output({"deploy_id": "a-refused-2", "app": "a", "release": None, "state": "refused",
                             "seconds": 0.0, "minions": {}, "error": "murder.deploy does not take relase"})
    assert text.splitlines()[0] == "deploy a-refused-2: a (no release) REFUSED in 0.0 s"
