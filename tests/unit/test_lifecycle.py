"""A deploy's life (``lifecycle.Deploy``) and the published releases (``store.Store``), without a master."""
import pytest

from murder_core import config, lifecycle
from murder_core.errors import InvalidInput
from murder_core.request import DeployRequest, PeerRequest
from murder_core.store import Store

MINIONS = ["m1", "m2", "m3"]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make_deploy(clock, seeder_sent=None, **changes):
    """A deploy whose start event just went out; ``seeder_sent`` reads its seeder's payload counter."""
    arguments = dict(source="/srv/builds/shop", app="shop", tgt="m*", release="r1", timeout=60)
    arguments.update(changes)
    asked = DeployRequest.from_arguments(arguments, dict(config.DEFAULTS), lambda: "r0")
    deploy = lifecycle.Deploy("shop-r1-abc", asked, MINIONS, silence_timeout=10, progress_interval=2,
                              clock=clock, wall=lambda: 1.0)
    deploy.distributing(published=None, seeder_sent=seeder_sent)
    return deploy


def test_every_host_done_then_activated_succeeds():
    clock = Clock()
    deploy = make_deploy(clock)
    for minion in MINIONS:
        deploy.record(minion, "done", {"seconds": 1.0, "size": 10, "changed": True})
    assert deploy.tick() is True
    assert deploy.to_activate() == MINIONS and deploy.state == lifecycle.ACTIVATING
    deploy.activated({m: {"ret": {"old": None, "new": "r1", "comment": "now current"}, "retcode": 0} for m in MINIONS})
    summary = deploy.finish()
    assert summary["result"] is True and summary["state"] == lifecycle.SUCCEEDED and summary["changed"] is True
    assert all(m["activated"] for m in summary["minions"].values())


def test_a_silent_minion_fails_after_the_silence_limit_and_nothing_is_activated():
    clock = Clock()
    deploy = make_deploy(clock)
    deploy.record("m1", "done", {"seconds": 1.0})
    deploy.record("m2", "done", {"seconds": 1.0})
    clock.now += 9.9
    assert deploy.tick() is False
    clock.now += 0.2
    assert deploy.tick() is True
    assert any(line.startswith("m3 failed: no word from the minion for 10 s") for line in deploy.said())
    assert deploy.to_activate() is None
    summary = deploy.finish()
    assert summary["result"] is False and summary["minions"]["m3"]["state"] == "failed"
    assert "not activated: 2 of 3" in summary["minions"]["m1"]["comment"]


def test_the_deadline_times_out_a_minion_that_keeps_reporting():
    clock = Clock()
    deploy = make_deploy(clock, timeout=30)
    for _ in range(16):
        clock.now += 2
        deploy.record("m1", "progress", {"bytes_done": 1, "size": 10})
        deploy.record("m2", "done", {})
        deploy.record("m3", "done", {})
        finished = deploy.tick()
    assert finished and deploy.hosts.minions["m1"].state == "timed out"


def test_a_failure_on_the_master_fails_every_unfinished_host():
    deploy = make_deploy(Clock())
    deploy.record("m1", "done", {})
    deploy.fail("cannot pack: disk full")
    summary = deploy.finish()
    assert summary["result"] is False and summary["error"] == "cannot pack: disk full"
    assert summary["minions"]["m2"]["comment"] == "the deploy failed on the master: cannot pack: disk full"


def test_a_failure_on_the_master_before_the_start_event_leaves_every_host_not_started():
    asked = DeployRequest.from_arguments(dict(source="/srv/builds/shop", app="shop", tgt="m*", release="r1"),
                                         dict(config.DEFAULTS), lambda: "r0")
    deploy = lifecycle.Deploy("shop-r1-abc", asked, MINIONS, silence_timeout=10, progress_interval=2,
                              clock=Clock(), wall=lambda: 1.0)
    deploy.fail("release r1 of app shop is already published with other content")
    summary = deploy.finish()
    assert summary["result"] is False and summary["state"] == "failed"
    assert {m["state"] for m in summary["minions"].values()} == {"not started"}
    assert summary["minions"]["m1"]["comment"] == (
        "not started: the deploy failed on the master first: "
        "release r1 of app shop is already published with other content")
    assert deploy.hosts.failed() == []


def test_an_interrupted_record_is_failed_with_the_reason():
    deploy = make_deploy(Clock())
    record = lifecycle.interrupted(deploy.summary(), "the engine stopped")
    assert record["state"] == "failed" and record["result"] is False and record["error"] == "the engine stopped"
    assert {m["comment"] for m in record["minions"].values()} == {"the engine stopped"}



def test_the_summary_times_each_state_and_each_minions_steps():
    clock = Clock()
    asked = DeployRequest.from_arguments(dict(source="/srv/builds/shop", app="shop", tgt="m*", release="r1"),
                                         dict(config.DEFAULTS), lambda: "r0")
    deploy = lifecycle.Deploy("shop-r1-abc", asked, MINIONS, silence_timeout=10, progress_interval=2, clock=clock)
    clock.now += 0.5
    assert deploy.summary()["steps"] == {"publishing": 0.5}
    deploy.distributing(published=None)  # the start event goes out at 100.5
    clock.now += 3.0
    deploy.record("m1", "done", {"seconds": 2.0, "steps": {"download": 1.5, "unpack": 0.25}})
    clock.now += 1.0
    deploy.record("m2", "done", {"seconds": 3.5})
    deploy.record("m3", "done", {"seconds": 4.0, "steps": {"download": "soon", "unpack": 1.0}})
    assert deploy.tick() is True
    clock.now += 0.25
    deploy.to_activate()
    clock.now += 0.75
    deploy.activated({m: {"ret": {"old": None, "new": "r1"}, "retcode": 0} for m in MINIONS})
    assert deploy.next_step() is None
    summary = deploy.finish()
    assert summary["steps"] == {"publishing": 0.5, "distributing": 4.0, "activating": 1.0}
    assert summary["distribution_seconds"] == 4.5 and summary["seconds"] == 5.5
    steps = {minion: host["steps"] for minion, host in summary["minions"].items()}
    # job_start: when the done arrived after the start event, less the peer's own seconds.
    assert steps == {"m1": {"job_start": 1.0, "download": 1.5, "unpack": 0.25}, "m2": {"job_start": 0.5},
                     "m3": {"job_start": 0.0, "unpack": 1.0}}


def test_the_seeder_bytes_are_what_it_sent_while_the_deploy_distributed():
    sent = [5_000]  # the seeder already served an earlier deploy of the release
    deploy = make_deploy(Clock(), seeder_sent=lambda: sent[0])
    sent[0] += 40_000
    assert "seeder_bytes_sent" not in deploy.summary()  # only once the distribution is over
    for minion in MINIONS:
        deploy.record(minion, "done", {"seconds": 1.0})
    assert deploy.tick() is True
    sent[0] += 999  # the activation: no longer this deploy's distribution
    assert deploy.finish()["seeder_bytes_sent"] == 40_000


def test_a_deploy_that_fails_while_distributing_counts_the_seeder_until_its_end():
    sent = [0]
    deploy = make_deploy(Clock(), seeder_sent=lambda: sent[0])
    sent[0] += 700
    deploy.fail("the master stopped")
    assert deploy.finish()["seeder_bytes_sent"] == 700


@pytest.mark.parametrize("readings", [
    [100, None],  # the seeder was closed (its release unpublished) before the end
    [100, 40],  # its counter went back (libtorrent restarts it when the torrent is paused)
    [100, RuntimeError("invalid torrent handle")],  # a figure never fails a deploy
    [RuntimeError("invalid torrent handle"), 100],  # nor its start
])
def test_a_seeder_count_that_cannot_be_trusted_gives_no_figure(readings):
    def read():
        value = readings.pop(0)
        if isinstance(value, Exception):
            raise value
        return value
    deploy = make_deploy(Clock(), seeder_sent=read, activate=False)
    for minion in MINIONS:
        deploy.record(minion, "done", {"seconds": 1.0})
    assert deploy.tick() is True
    summary = deploy.finish()
    assert "seeder_bytes_sent" not in summary and summary["result"] is True


def test_a_deploy_not_activated_has_no_activating_step():
    clock = Clock()
    deploy = make_deploy(clock, activate=False)
    for minion in MINIONS:
        deploy.record(minion, "done", {"seconds": 1.0})
    clock.now += 2.0
    assert deploy.tick() is True and deploy.to_activate() is None
    clock.now += 1.0
    assert deploy.finish()["steps"] == {"publishing": 0.0, "distributing": 2.0}


# The store of published releases.


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "store"))


def source(tmp_path, name, text):
    path = tmp_path / name
    path.mkdir()
    (path / "app.txt").write_text(text)
    return str(path)


def test_publish_records_serves_and_prunes_beyond_keep(store, tmp_path):
    first = source(tmp_path, "one", "1")
    record, changed, removed = store.publish(first, "shop", "r1", trackers=["http://127.0.0.1:1/announce"], keep=2)
    assert changed is True and removed == [] and store.get("shop", "r1") == record
    assert store.publish(first, "shop", "r1", trackers=["http://127.0.0.1:1/announce"], keep=2)[1] is False
    with pytest.raises(InvalidInput, match="already published with other content"):
        store.publish(source(tmp_path, "other", "2"), "shop", "r1", trackers=["http://x/announce"], keep=2)
    for number in (2, 3):
        store.publish(source(tmp_path, f"v{number}", str(number)), "shop", f"r{number}",
                      trackers=["http://127.0.0.1:1/announce"], keep=2)
    assert [r.release for r in store.published("shop")] == ["r3", "r2"]
    assert store.get("shop", "r1") is None
    assert store.clean_work() == []  # nothing left behind by the packs


def test_offer_writes_what_a_minion_fetches_with_the_running_tracker(store, tmp_path):
    record, _, _ = store.publish(source(tmp_path, "one", "1"), "shop", "r1",
                                 trackers=["http://10.9.9.9:8998/announce"], keep=3)
    offered = store.offer(record, ["127.0.0.1:6881"], ["http://127.0.0.1:9000/announce"])
    path = tmp_path / "store" / "fileserver" / config.FILESERVER_PREFIX / "shop" / "r1.json"
    read = PeerRequest.from_dict(__import__("json").loads(path.read_text()), "murder.fetch")
    assert read == offered and read.sha256 == record.sha256 and read.info_hash == record.info_hash
    assert read.seeders == ("127.0.0.1:6881",)


@pytest.mark.bad_input
def test_a_peer_request_with_an_unknown_key_is_refused():
    with pytest.raises(InvalidInput, match="murder.peer does not take bogus"):
        PeerRequest.from_dict({"app": "a", "release": "r", "torrent": "x", "sha256": "0" * 64, "bogus": 1})


def answers(minions, release="r1", old="r0", failing=()):
    found = {}
    for minion in minions:
        if minion in failing:
            found[minion] = {"ret": "release r1 failed its health check and was rolled back", "retcode": 1}
        else:
            found[minion] = {"ret": {"old": old, "new": release, "comment": "now current"}, "retcode": 0}
    return found


def distributed(clock, **changes):
    deploy = make_deploy(clock, **changes)
    for minion in MINIONS:
        deploy.record(minion, "done", {"seconds": 1.0})
    assert deploy.tick() is True
    return deploy


def test_waves_stop_at_a_failure_and_roll_the_switched_hosts_back():
    deploy = distributed(Clock(), batch=1)
    assert deploy.to_activate() == ["m1"]
    deploy.activated(answers(["m1"]))
    assert deploy.next_step() == ("wave", ["m2"])
    deploy.activated(answers(["m2"]))
    assert deploy.next_step() == ("wave", ["m3"])
    deploy.activated(answers(["m3"], failing=["m3"]))
    assert deploy.next_step() == ("rollback", {"m1": "r0", "m2": "r0"})
    deploy.rolled_back({"m1": {"retcode": 0}, "m2": {"retcode": 0}}, {"m1": "r0", "m2": "r0"})
    summary = deploy.finish()
    assert summary["result"] is False
    assert [summary["minions"][m]["rolled_back"] for m in MINIONS] == [True, True, False]
    assert summary["minions"]["m1"]["comment"] == "rolled back to r0: 1 host failed, max_failures 0"
    assert "activation failed" in summary["minions"]["m3"]["comment"]
    assert any(line.startswith("wave 3/3 done: 0 activated, 1 failed") for line in deploy.said())


def test_on_failure_stop_leaves_the_switched_hosts_and_names_the_rest():
    deploy = distributed(Clock(), canary=1, on_failure="stop")
    assert deploy.to_activate() == ["m1"]
    deploy.activated(answers(["m1"], failing=["m1"]))
    assert deploy.next_step() is None
    summary = deploy.finish()
    assert summary["minions"]["m2"]["comment"] == ("never switched: the deploy stopped after wave 1 "
                                                   "(1 host failed, max_failures 0)")
    assert not any(m["activated"] for m in summary["minions"].values())


def test_max_failures_lets_a_wave_fail_and_batch_wait_spaces_the_waves():
    clock = Clock()
    deploy = distributed(clock, batch=1, max_failures=1, batch_wait=5)
    deploy.to_activate()
    deploy.activated(answers(["m1"], failing=["m1"]))
    assert deploy.next_step() == ("wait", None)
    clock.now += 5
    assert deploy.next_step() == ("wave", ["m2"])


def test_a_fleet_falling_silent_at_once_is_said_in_a_few_lines_and_named_in_full_in_the_summary():
    clock = Clock()
    minions = [f"m{i:03d}" for i in range(200)]
    asked = DeployRequest.from_arguments(dict(source="/srv/builds/shop", app="shop", tgt="m*", release="r1",
                                              timeout=600), dict(config.DEFAULTS), lambda: "r0")
    deploy = lifecycle.Deploy("shop-r1-abc", asked, minions, silence_timeout=10, progress_interval=2, clock=clock)
    deploy.distributing(published=None)
    deploy.record("m000", "failed", {"error": "No space left on device"})
    deploy.said()
    clock.now += 60
    assert deploy.tick() is True
    lines = deploy.said()
    named = [line for line in lines if " failed: no word from the minion" in line and " more " not in line]
    assert len(named) == lifecycle.FAILURES_NAMED - 1  # m000's own failure was the first of this while
    assert "m001 failed: no word from the minion for 10 s" in lines[0]
    assert any(line.startswith(f"m{lifecycle.FAILURES_NAMED:03d}, ") and " and 190 more failed: no word" in line
               for line in lines)
    assert lines[-1].startswith("0/200 hosts done, 200 failed")
    summary = deploy.finish()
    assert all(summary["minions"][m]["state"] == "failed" for m in minions)
