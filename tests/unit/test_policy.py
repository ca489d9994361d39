"""The swarm's policies, one by one (pure logic, a fake clock)."""
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


def test_seeder_counter_banks_bytes_across_reconnects():
    counter = policy.SeederCounter()
    counter.update("seeder", 100)
    counter.update("seeder", 300)
    counter.update("other-seeder", 50)
    counter.update("seeder", 20)  # a new connection started from zero
    assert counter.total == 300 + 20 + 50
