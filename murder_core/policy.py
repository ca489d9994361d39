"""The swarm's policies, each named and testable on its own.

They hold no libtorrent state: the seeder and peer loops feed them numbers
and a clock reading and act on the answer.
"""
import math
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

    A tracker that stopped answering after the peer finished ends it too when
    no connected peer is still downloading: the deploy's own tracker stops as
    soon as every host reported, and a peer whose last scrape still counted
    an incomplete host would otherwise seed for the whole ``limit``, holding
    its ports, with nobody left to serve.
    """

    limit: float
    finished: float

    def keep_seeding(self, num_complete, num_incomplete, now, tracker_gone=False, peers_downloading=0):
        return self.why_stop(num_complete, num_incomplete, now, tracker_gone, peers_downloading) is None

    def why_stop(self, num_complete, num_incomplete, now, tracker_gone=False, peers_downloading=0):
        """None to keep seeding, else why to stop: ``linger limit``, ``swarm complete`` or ``tracker gone``."""
        if now - self.finished >= self.limit:
            return "linger limit"
        swarm_known = num_complete >= 0 and num_incomplete >= 0
        if swarm_known and num_complete > 0 and num_incomplete == 0:
            return "swarm complete"
        if tracker_gone and peers_downloading == 0:
            return "tracker gone"
        return None


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


# Piece priorities below libtorrent's default (4). At 1-3 its picker orders by
# availability first, so a rarer piece always comes first and, among pieces
# equally rare, a peer's own stripe comes before the others. From 4 up it
# halves availability, and the top priority (7) ignores it: the peer would
# take from the seeder what other peers already hold.
FIRST = 3
NORMAL = 1


def stripe(member, members, num_pieces):
    """Return ``(index, count)``: which share of the pieces ``member`` fetches first.

    ``members`` are every peer of the deploy. Sorted, they split the pieces
    into ``count`` interleaved stripes (piece ``p`` is in stripe ``p % count``);
    with more peers than pieces, several peers share a stripe. ``None`` when
    ``member`` is not among them.
    """
    ordered = sorted(set(members))
    if member not in ordered or num_pieces < 1:
        return None
    count = min(len(ordered), num_pieces)
    return ordered.index(member) % count, count


def stripe_priorities(num_pieces, index, count):
    """Piece priorities that put stripe ``index`` of ``count`` first.

    Every peer would otherwise pick at random among the pieces only the
    seeder has, and two peers often fetched the same piece from it. With
    each peer's own stripe first among equally rare pieces, fewer pieces
    leave the seeder twice and peers take more from each other (at N=2 to
    8, 1.1-1.5 seeder copies instead of 1.4-1.9; docs/datacenter.md).
    """
    if not 0 <= index < count:
        raise ValueError(f"stripe {index} of {count} does not exist")
    return [FIRST if piece % count == index else NORMAL for piece in range(num_pieces)]


# Below this many stripes a peer keeps its seeder: two staying peers took 1.04-1.07 copies from it,
# and two of six two-peer deploys that left took 2.5-5 s longer (docs/datacenter.md, session 14).
LEAVE_MIN_STRIPES = 4


def leaves_seeder(leave_seeder, stripe):
    """Whether a peer with ``stripe`` (``(index, count)`` or None) leaves the seeder once its stripe is in.

    Only with the ``leave_seeder`` setting on, and in a deploy of at least
    :data:`LEAVE_MIN_STRIPES` stripes.
    """
    return bool(leave_seeder) and stripe is not None and stripe[1] >= LEAVE_MIN_STRIPES


class TrackerHealth:
    """Whether a session's tracker is gone, from its answers and errors at each local endpoint.

    A session listening on every interface announces from each of its
    sockets, and libtorrent reports an announce from a socket that cannot
    reach the tracker (loopback, when the tracker is elsewhere) as an error
    at every round. So the tracker is gone only when the last word at every
    endpoint that heard from it is an error; judged by the last word of any
    endpoint, a peer in the bench took that error for the master leaving,
    stopped seeding at once, and with it the only copy of its share of a
    stripe (session 20).
    """

    def __init__(self):
        self._answered = {}  # local endpoint -> whether its last word was an answer

    def answer(self, endpoint):
        self._answered[endpoint] = True

    def error(self, endpoint):
        self._answered[endpoint] = False

    @property
    def gone(self):
        return bool(self._answered) and not any(self._answered.values())


class SeederLeave:
    """When a peer leaves the master's seeder to the peers still fetching their stripes, and when it returns.

    A peer that holds its own stripe gets the rest from other peers, each
    of which fetched its own stripe from the seeder; while it stayed
    connected it also asked the seeder for pieces other peers were fetching
    from it too, and the seeder sent about 1.5 copies of a release to 16
    peers (1.04 when peers leave, docs/datacenter.md). A peer that receives
    nothing for ``fallback`` seconds after leaving (the peer that owns a
    stripe is gone, or slow) goes back to the seeder for good.
    """

    LEAVE, RETURN = "leave", "return"

    def __init__(self, fallback, now):
        self.fallback = float(fallback)
        self.left = False
        self.returned = False
        self._done, self._since = None, now

    def decide(self, stripe_complete, bytes_done, now):
        """``LEAVE``, ``RETURN`` or None, given whether the stripe is complete and the bytes done so far."""
        if bytes_done != self._done:
            self._done, self._since = bytes_done, now
        if self.returned:
            return None
        if not self.left:
            if stripe_complete:
                self.left = True
                return self.LEAVE
            return None
        if now - self._since >= self.fallback:
            self.returned = True
            return self.RETURN
        return None


# Progress events one deploy may send to the master's event bus per second, at most.
MAX_PROGRESS_EVENTS_PER_SECOND = 200


def fleet_progress_interval(hosts):
    """Least seconds between one peer's progress events, so ``hosts`` peers stay within the cap.

    Up to 400 hosts this is below the default of 2 s and changes nothing; at
    10,000 hosts every peer reports every 50 s instead of flooding the master
    with 5,000 events a second.
    """
    return hosts / MAX_PROGRESS_EVENTS_PER_SECOND


def silence_limit(silence_timeout, progress_interval):
    """Seconds of silence after which the runner fails a minion: at least three missed reports."""
    return max(float(silence_timeout), 3.0 * float(progress_interval))


def wave_size(value, hosts, name="batch"):
    """Hosts per wave from ``n`` or ``"n%"`` of ``hosts`` (at least one); None for None."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 < share <= 100:
                raise ValueError(text)
            return max(1, math.ceil(hosts * share / 100))
        size = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number >= 1 or a percentage such as 25%, got {value!r}") from None
    if size < 1 or isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number >= 1 or a percentage such as 25%, got {value!r}")
    return size


def waves(minions, batch=None, canary=None):
    """Split the hosts to activate into waves, in the order of their sorted ids.

    Without ``batch`` the rest after the canary is one wave; ``canary``
    makes the first wave that size. Sizes are ``n`` or ``"n%"`` of all the hosts.
    """
    ordered = sorted(minions)
    if not ordered:
        return []
    total = len(ordered)
    found = []
    first = wave_size(canary, total, "canary")
    if first:
        found.append(ordered[:first])
        ordered = ordered[first:]
    size = wave_size(batch, total) or len(ordered) or 1
    found += [ordered[start:start + size] for start in range(0, len(ordered), size)]
    return [wave for wave in found if wave]
