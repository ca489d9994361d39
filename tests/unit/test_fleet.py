"""The runner's bookkeeping of a deploy's minions (pure logic)."""
from murder_core import fleet


def test_events_move_minions_to_done_and_failed():
    hosts = fleet.Fleet(["m2", "m1", "m3"])
    assert hosts.unfinished() == ["m1", "m2", "m3"]
    assert hosts.record("m1", "progress", {"bytes_done": 10, "size": 100})
    assert hosts.minions["m1"].state == fleet.DOWNLOADING
    assert hosts.record("m1", "done", {"seconds": 1.5, "size": 100, "bytes_from_peers": 60, "bytes_from_seeder": 40})
    assert hosts.record("m2", "failed", {"error": "No space left on device"})
    assert not hosts.record("m2", "done", {})  # a finished minion stays finished
    assert not hosts.record("stranger", "done", {})  # not targeted: ignored
    assert hosts.succeeded() == ["m1"] and hosts.failed() == ["m2"] and hosts.unfinished() == ["m3"]
    assert hosts.time_out("late") == ["m3"]
    assert hosts.all_finished()
    report = hosts.report(activate=False)
    assert report["m1"]["result"] is True and report["m1"]["bytes_from_peers"] == 60
    assert report["m2"] == dict(report["m2"], result=False, comment="No space left on device")
    assert report["m3"]["state"] == fleet.TIMED_OUT


def test_with_activation_a_minion_succeeds_only_when_activated():
    hosts = fleet.Fleet(["m1", "m2"])
    hosts.record("m1", "done", {"size": 1})
    hosts.record("m2", "done", {"size": 1})
    hosts.minions["m1"].activated = True
    report = hosts.report(activate=True)
    assert report["m1"]["result"] is True and report["m2"]["result"] is False


def test_progress_line_names_stragglers():
    hosts = fleet.Fleet([f"m{i}" for i in range(8)])
    hosts.record("m0", "done", {"size": 2**20})
    hosts.record("m1", "failed", {"error": "x"})
    line = hosts.progress_line(limit=3)
    assert line.startswith("1/8 hosts done, 1 failed")
    assert "waiting for m2, m3, m4 and 3 more" in line


def test_progress_line_reads_a_tiny_release_in_its_own_unit():
    hosts = fleet.Fleet(["m1", "m2"])
    hosts.record("m1", "done", {"size": 12_000})
    hosts.record("m2", "progress", {"bytes_done": 6_000, "size": 12_000})
    assert "17.6 of 23.4 KiB" in hosts.progress_line()
    hosts = fleet.Fleet(["m1"])
    hosts.record("m1", "done", {"size": 3 * 2**20})
    assert "3.0 of 3.0 MiB" in hosts.progress_line()
    hosts = fleet.Fleet(["m1", "m2"])  # bytes are whole: not "0.0 of 354.0 bytes"
    hosts.record("m1", "progress", {"bytes_done": 0, "size": 177})
    hosts.record("m2", "progress", {"bytes_done": 0, "size": 177})
    assert "0 of 354 bytes" in hosts.progress_line()


def test_hash_failures_reach_the_deploy_report():
    hosts = fleet.Fleet(["m1"])
    hosts.record("m1", "progress", {"bytes_done": 5, "size": 10, "hash_failures": 1})
    hosts.record("m1", "done", {"size": 10, "hash_failures": 3})
    assert hosts.report(activate=False)["m1"]["hash_failures"] == 3


def test_a_minion_not_heard_from_for_the_silence_limit_fails():
    hosts = fleet.Fleet(["m1", "m2", "m3"])
    assert hosts.fail_silent(1000.0, 10) == []  # before the start event nobody is expected to speak
    hosts.expect_word(100.0)
    hosts.record("m1", "progress", {"bytes_done": 5, "size": 10}, now=105.0)
    hosts.record("m2", "done", {"size": 10}, now=106.0)
    assert hosts.fail_silent(109.9, 10) == []
    assert hosts.fail_silent(110.0, 10) == ["m3"]  # never spoke since the start event
    hosts.record("m1", "progress", {"bytes_done": 8, "size": 10}, now=112.0)
    assert hosts.fail_silent(121.0, 10) == []
    assert hosts.fail_silent(122.0, 10) == ["m1"]
    report = hosts.report(activate=False)
    assert report["m1"]["state"] == report["m3"]["state"] == fleet.FAILED
    assert "no word from the minion for 10 s" in report["m3"]["comment"]
    assert report["m2"]["state"] == fleet.DONE and report["m2"]["result"] is True
    assert hosts.fail_silent(1000.0, 10) == []  # finished minions are never failed again


def test_silence_goes_by_when_each_minion_was_last_heard_from_not_by_name():
    hosts = fleet.Fleet(["m1", "m2", "m3", "m4"])
    hosts.expect_word(100.0)
    hosts.record("m1", "progress", {"bytes_done": 1, "size": 10}, now=103.0)
    hosts.record("m3", "progress", {"bytes_done": 1, "size": 10}, now=104.0)
    hosts.record("m1", "progress", {"bytes_done": 2, "size": 10}, now=106.0)  # m1 now heard after m3
    hosts.record("m2", "done", {"size": 10}, now=105.0)
    assert hosts.fail_silent(113.0, 10) == ["m4"]
    assert hosts.fail_silent(114.0, 10) == ["m3"]
    assert hosts.unfinished() == ["m1"] and not hosts.all_finished()
    assert hosts.fail_silent(200.0, 10) == ["m1"] and hosts.all_finished()
    assert hosts.succeeded() == ["m2"] and hosts.failed() == ["m1", "m3", "m4"]


def test_failing_the_unfinished_leaves_the_finished_alone():
    hosts = fleet.Fleet(["m1", "m2", "m3"])
    hosts.expect_word(0.0)
    hosts.record("m2", "done", {"size": 1}, now=1.0)
    assert hosts.fail_unfinished("the deploy failed on the master: boom") == ["m1", "m3"]
    assert hosts.all_finished() and hosts.unfinished() == []
    assert hosts.fail_silent(1000.0, 10) == []
    assert hosts.minions["m2"].state == fleet.DONE
    assert hosts.minions["m3"].comment == "the deploy failed on the master: boom"


def test_a_rollback_that_leaves_the_fleet_on_several_releases_fails_and_names_them():
    from murder_core.fleet import rollback_outcome

    same = {"m1": {"result": True, "old": "r3", "new": "r2"}, "m2": {"result": True, "old": "r3", "new": "r2"}}
    assert rollback_outcome("app", same) == {"app": "app", "result": True, "minions": same, "retcode": 0}
    split = {"m1": {"result": True, "old": "r4", "new": "r2"}, "m2": {"result": True, "old": "r4", "new": "r3"},
             "m3": {"result": False, "comment": "did not answer"}}
    found = rollback_outcome("app", split)
    assert found["result"] is False and found["retcode"] == 1
    assert found["comment"] == ("the hosts went back to different releases: r2 on m1; r3 on m2; "
                                "put them on one with release=<id>")
    # A named release is what the operator asked for: only the hosts' own results count.
    named = {"m1": {"result": True, "old": "r4", "new": "r2"}, "m2": {"result": True, "old": "r2", "new": "r2"}}
    assert rollback_outcome("app", named, named="r2")["result"] is True


def test_whether_a_peer_left_the_seeder_reaches_the_deploy_report():
    hosts = fleet.Fleet(["m1", "m2"])
    hosts.record("m1", "done", {"size": 1, "stripe": [0, 2], "left_seeder": True, "back_to_seeder": False})
    hosts.record("m2", "done", {"size": 1, "stripe": [1, 2], "left_seeder": True, "back_to_seeder": True})
    report = hosts.report(activate=False)
    assert (report["m1"]["left_seeder"], report["m1"]["back_to_seeder"]) == (True, False)
    assert (report["m2"]["left_seeder"], report["m2"]["back_to_seeder"]) == (True, True)
