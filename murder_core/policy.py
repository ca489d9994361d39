"""The swarm's policies, each named and testable on its own.

They hold no libtorrent state: the seeder and peer loops feed them numbers
and a clock reading and act on the answer.
"""
from dataclasses import dataclass, field


@dataclass
class StallDetector:
    """A download has stalled when no new byte arrived for ``timeout`` seconds."""

    timeout: float
    started: float
    _best: int = 0
    _last_progress: float = field(default=None)

    def __post_init__(self):
        self._last_progress = self.started

    def stalled(self, bytes_done, now):
        """Record ``bytes_done`` at ``now``; True when the timeout has passed without progress."""
        if bytes_done > self._best:
            self._best = bytes_done
            self._last_progress = now
        return now - self._last_progress > self.timeout

    def idle_seconds(self, now):
        return now - self._last_progress


@dataclass
class Throttle:
    """Let an event through at most once every ``interval`` seconds.

    A fleet of thousands of peers must not flood the master's event bus with
    progress; the first event and forced ones (done, failed) always pass.
    """

    interval: float
    _last: float = None

    def ready(self, now, force=False):
        if force or self._last is None or now - self._last >= self.interval:
            self._last = now
            return True
        return False


@dataclass
class LingerPolicy:
    """How long a finished peer keeps seeding.

    Until the tracker reports no incomplete peer in the swarm, or ``limit``
    seconds after the peer finished, whichever comes first. A tracker that
    has not answered a scrape yet (counts below zero) keeps the peer seeding.
    """

    limit: float
    finished: float

    def keep_seeding(self, num_complete, num_incomplete, now):
        if now - self.finished >= self.limit:
            return False
        swarm_known = num_complete >= 0 and num_incomplete >= 0
        return not (swarm_known and num_complete > 0 and num_incomplete == 0)


class SeederCounter:
    """Bytes a peer received from the seeder, over reconnects.

    libtorrent reports per-connection totals; when a connection to the same
    seeder endpoint starts again its total restarts at zero, so what the old
    connection carried is banked.
    """

    def __init__(self):
        self._current = {}
        self._banked = 0

    def update(self, endpoint, total):
        previous = self._current.get(endpoint, 0)
        if total < previous:
            self._banked += previous
        self._current[endpoint] = total

    @property
    def total(self):
        return self._banked + sum(self._current.values())
