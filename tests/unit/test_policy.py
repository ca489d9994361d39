"""The swarm's policies, one by one (pure logic, a fake clock)."""
import pytest

from murder_core import policy


def test_stall_detector_fires_only_after_timeout_without_progress():
    stall = policy.StallDetector(timeout=5, started=100.0)
    assert not stall.stalled(0, 104.0)
    assert not stall.stalled(10, 104.5)
    assert not stall.stalled(10, 109.4)
    assert stall.stalled(10, 109.6)
    assert stall.idle_seconds(109.6) == 109.6 - 104.5


def test_stall_detector_counts_the_start_as_progress():
    stall = policy.StallDetector(timeout=2, started=0.0)
    assert not stall.stalled(0, 1.9)
    assert stall.stalled(0, 2.1)


def test_throttle_lets_one_event_through_per_interval_and_forced_ones():
    throttle = policy.Throttle(interval=2.0)
    assert throttle.ready(0.0)
    assert not throttle.ready(1.0)
    assert throttle.ready(1.5, force=True)
    assert not throttle.ready(3.0)
    assert throttle.ready(3.6)


def test_linger_stops_when_swarm_complete():
    linger = policy.LingerPolicy(limit=60, finished=0.0)
    assert linger.keep_seeding(-1, -1, 1.0)  # tracker not scraped yet
    assert linger.keep_seeding(3, 2, 1.0)
    assert not linger.keep_seeding(5, 0, 2.0)


def test_linger_stops_at_limit():
    linger = policy.LingerPolicy(limit=10, finished=0.0)
    assert linger.keep_seeding(1, 4, 9.9)
    assert not linger.keep_seeding(1, 4, 10.0)


def test_linger_ends_when_the_tracker_is_gone_and_nobody_downloads_from_us():
    linger = policy.LingerPolicy(limit=60, finished=0.0)
    # The last scrape still counted an incomplete peer, then the deploy's tracker stopped.
    assert linger.why_stop(3, 1, 1.0, tracker_gone=True, peers_downloading=0) == "tracker gone"
    assert linger.keep_seeding(3, 1, 1.0, tracker_gone=True, peers_downloading=1)
    assert linger.keep_seeding(3, 1, 1.0, tracker_gone=False, peers_downloading=0)
    assert linger.why_stop(3, 0, 1.0) == "swarm complete"
    assert linger.why_stop(3, 1, 60.0, tracker_gone=False) == "linger limit"


def test_seeder_counter_banks_bytes_across_reconnects():
    counter = policy.SeederCounter()
    counter.update("seeder", 100)
    counter.update("seeder", 300)
    counter.update("other-seeder", 50)
    counter.update("seeder", 20)  # a new connection started from zero
    assert counter.total == 300 + 20 + 50


def test_stripes_give_every_member_its_own_share_of_the_pieces():
    members = ["m3", "m1", "m2", "m1"]
    stripes = {m: policy.stripe(m, members, 10) for m in ("m1", "m2", "m3")}
    assert stripes == {"m1": (0, 3), "m2": (1, 3), "m3": (2, 3)}
    first = {m: [p for p, prio in enumerate(policy.stripe_priorities(10, *s)) if prio == policy.FIRST]
             for m, s in stripes.items()}
    assert first == {"m1": [0, 3, 6, 9], "m2": [1, 4, 7], "m3": [2, 5, 8]}
    assert set(policy.stripe_priorities(10, 0, 3)) == {policy.FIRST, policy.NORMAL}


def test_more_members_than_pieces_share_stripes():
    members = [f"m{i:02d}" for i in range(7)]
    assert [policy.stripe(m, members, 3) for m in members] == [(0, 3), (1, 3), (2, 3), (0, 3), (1, 3), (2, 3), (0, 3)]


def test_no_stripe_for_a_member_outside_the_deploy():
    assert policy.stripe("m9", ["m1", "m2"], 10) is None
    assert policy.stripe("m1", [], 10) is None
    assert policy.stripe(None, ["m1"], 10) is None


def test_a_stripe_that_does_not_exist_is_refused():
    for index, count in ((3, 3), (-1, 3), (0, 0)):
        with pytest.raises(ValueError, match="does not exist"):
            policy.stripe_priorities(10, index, count)


def test_progress_events_of_a_large_fleet_stay_within_the_cap():
    assert policy.fleet_progress_interval(3) < 2.0  # small fleets keep their configured interval
    assert policy.fleet_progress_interval(10_000) == 50.0
    assert 10_000 / policy.fleet_progress_interval(10_000) == policy.MAX_PROGRESS_EVENTS_PER_SECOND


def test_silence_limit_allows_three_missed_reports():
    assert policy.silence_limit(60, 2.0) == 60.0
    assert policy.silence_limit(60, 50.0) == 150.0


def test_waves_follow_sorted_ids_with_a_canary_first():
    assert policy.waves(["c", "a", "b"]) == [["a", "b", "c"]]
    assert policy.waves(["c", "a", "b"], batch=1) == [["a"], ["b"], ["c"]]
    assert policy.waves(["a", "b", "c", "d"], canary=1) == [["a"], ["b", "c", "d"]]
    assert policy.waves(list("abcde"), batch="40%", canary="20%") == [["a"], ["b", "c"], ["d", "e"]]


@pytest.mark.bad_input
@pytest.mark.parametrize("value", [0, -1, "0%", "120%", "many", True])
def test_a_wave_size_must_be_a_count_or_a_share(value):
    with pytest.raises(ValueError, match="batch must be a whole number >= 1 or a percentage"):
        policy.wave_size(value, 10)


def test_only_a_peer_of_four_stripes_or_more_leaves_the_seeder():
    assert policy.leaves_seeder(True, policy.stripe("m1", [f"m{i}" for i in range(4)], 256))
    assert policy.leaves_seeder(True, (15, 16))
    assert not policy.leaves_seeder(True, (1, 3)) and not policy.leaves_seeder(True, (0, 2))
    assert not policy.leaves_seeder(True, None)  # no stripe: a late joiner, a highstate fetch
    assert not policy.leaves_seeder(False, (0, 16))
    # A release of fewer pieces than peers has as many stripes as pieces.
    assert not policy.leaves_seeder(True, policy.stripe("m1", [f"m{i}" for i in range(16)], 3))


def test_a_peer_leaves_the_seeder_with_its_stripe_and_returns_only_after_a_silence():
    leave = policy.SeederLeave(fallback=10, now=0)
    assert leave.decide(False, 100, 1) is None  # its stripe is not in yet
    assert leave.decide(True, 200, 2) == policy.SeederLeave.LEAVE
    assert leave.decide(True, 300, 9) is None and leave.decide(True, 300, 18) is None  # data came at 9
    assert leave.decide(True, 300, 19) == policy.SeederLeave.RETURN  # 10 s of nothing
    assert leave.decide(True, 300, 60) is None and leave.left and leave.returned  # back for good


def test_the_tracker_is_gone_only_when_every_endpoint_last_heard_an_error():
    health = policy.TrackerHealth()
    assert not health.gone  # nothing heard yet
    health.answer("10.0.0.5:6881")
    health.error("127.0.0.1:6881")  # the loopback socket, every round: the tracker is elsewhere
    assert not health.gone
    health.answer("10.0.0.5:6881")
    assert not health.gone
    health.error("10.0.0.5:6881")  # now the reachable endpoint fails too
    assert health.gone
    health.answer("10.0.0.5:6881")  # the tracker is back
    assert not health.gone
