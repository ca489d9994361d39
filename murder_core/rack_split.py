"""One copy of a release into each rack: every peer split into an outward and an inward session.

libtorrent cannot be told to take a piece from a rack-mate rather than from
another rack (docs/topology.md), so murder splits the connections instead.
Under ``peer_choice: rack`` with ``rack_split`` on, and when the master knows
the place of the deploy's minions (their ``murder_location`` or
``rack``/``datacenter`` grains in its minion data cache), each minion runs two
libtorrent sessions on the release:

* an **outward** session that wants only its rack's share of the pieces
  (its *stripes*: piece ``p`` is in stripe ``p % S``, and host ``i`` of a rack
  of ``H`` takes the stripes ``k`` with ``k % H == i``) and that the tracker
  answers with the master's seeders and the hosts of other racks that take
  the same stripes: one host a rack for each stripe;
* an **inward** session that wants every piece and that the tracker answers
  with the inward sessions of its rack-mates only.

Each piece the outward session finishes is handed to the inward one, which
checks it against the torrent's hashes. So each piece enters a rack once,
through the host whose stripe it is. Within a stripe, the host of the
``r``-th of ``R`` racks takes its *share* (``(p // S) % R == r``) from the
seeder first and then leaves the seeder (``leave_seeder``), so that the
seeder sends about one copy. Nothing starves: every host still reaches the
seeder, and an inward session that gets nothing for ``seeder_fallback``
seconds (a rack-mate failed, with a stripe nobody else in the rack takes)
has its outward session fetch what is missing, from the seeder.

This module holds the plan (who takes which stripe), the announce parameter
that tells the tracker which session is which, and their checks; the
sessions are ``swarm.SplitPeer``, the tracker's answers
``peer_choice.pick_stripe`` and ``peer_choice.Groups``.
"""
import dataclasses
import functools

from murder_core import location
from murder_core.errors import InvalidInput

# The announce parameter naming a split peer's session: "in", or "out.<index>.<rack size>.<stripes>".
PARAM = "split"
INWARD = "in"
OUTWARD = "out"
# The most stripes a release is split into (the largest rack's size); past it a host takes several.
MAX_STRIPES = 1024
# Priorities of the outward session: its own share first, the rest of its stripes, nothing else.
SHARE_PRIORITY, STRIPE_PRIORITY, SKIP = 7, 1, 0


@dataclasses.dataclass(frozen=True)
class Assignment:
    """What one minion's outward session takes: its stripes, and its share of them from the seeder."""

    place: str
    index: int  # the host's position in its rack (sorted by minion id)
    rack_size: int
    stripes: int  # S: the largest rack's size, at most MAX_STRIPES
    rack_index: int  # the rack's position among the deploy's racks (sorted)
    racks: int

    def takes(self, piece):
        return (piece % self.stripes) % self.rack_size == self.index

    def own_share(self, piece):
        return self.takes(piece) and (piece // self.stripes) % self.racks == self.rack_index

    def priorities(self, num_pieces):
        """The outward session's piece priorities."""
        return [SHARE_PRIORITY if self.own_share(p) else STRIPE_PRIORITY if self.takes(p) else SKIP
                for p in range(num_pieces)]

    def share(self, num_pieces):
        """The pieces this host takes from the seeder before it leaves it."""
        return [p for p in range(num_pieces) if self.own_share(p)]

    def stripe_set(self):
        return stripes_of(self.index, self.rack_size, self.stripes)

    def announce_value(self):
        return f"{OUTWARD}.{self.index}.{self.rack_size}.{self.stripes}"

    def as_list(self):
        """``[index, rack size]`` for the minion's report."""
        return [self.index, self.rack_size]


def plan(places):
    """``{place: [minion, ...]}`` (sorted) from ``{minion: place or None}``; None when no split is possible.

    Minions without a place are left out (they fetch as ordinary peers). A
    deploy whose placed minions are all in one rack has nothing to split.
    """
    racks = {}
    for minion, place in places.items():
        if place:
            racks.setdefault(place, []).append(str(minion))
    if len(racks) < 2:
        return None
    return {place: sorted(members) for place, members in sorted(racks.items())}


def check_plan(racks):
    """Return ``racks`` (``{place: [minion, ...]}``, from a ``PeerRequest``) if well formed, else raise InvalidInput."""
    if not isinstance(racks, dict) or not racks:
        raise InvalidInput(f"racks must map places to lists of minions, got {racks!r}")
    for place, members in racks.items():
        if not isinstance(place, str) or location.SEPARATOR not in place:
            raise InvalidInput(f"racks: {place!r} is not a place (<datacenter>/<rack>)")
        if not isinstance(members, (list, tuple)) or not members or not all(isinstance(m, str) for m in members):
            raise InvalidInput(f"racks: {place} must list its minions, got {members!r}")
    return racks


def assign(racks, minion, place):
    """This minion's :class:`Assignment` under the plan ``racks``, or None when it does not take part.

    ``place`` is where the minion itself says it is; when the plan (made from
    the master's cache) puts it elsewhere, or not at all, it does not split.
    """
    if not racks or not place or place not in racks or minion not in racks[place]:
        return None
    names = sorted(racks)
    members = sorted(racks[place])
    stripes = min(max(len(m) for m in racks.values()), MAX_STRIPES)
    size = min(len(members), stripes)
    return Assignment(place=place, index=members.index(minion) % size, rack_size=size, stripes=stripes,
                      rack_index=names.index(place), racks=len(names))


def parse(value):
    """The session an announce's ``split`` value names: ``"in"``, a frozenset of stripes, or None if malformed."""
    if value == INWARD:
        return INWARD
    kind, _, rest = value.partition(".")
    parts = rest.split(".")
    if kind != OUTWARD or len(parts) != 3 or not all(part.isdigit() and len(part) <= 5 for part in parts):
        return None
    index, size, stripes = (int(part) for part in parts)
    if not 0 <= index < size <= stripes <= MAX_STRIPES:
        return None
    return stripes_of(index, size, stripes)


def stripes_of(index, rack_size, stripes):
    """The stripes host ``index`` of a rack of ``rack_size`` takes when a release is cut into ``stripes``."""
    return frozenset(k for k in range(stripes) if k % rack_size == index)


@functools.lru_cache(maxsize=256)  # one value a host index and rack size: a few in a fleet
def parse_cached(raw):
    """:func:`parse` of an announce's raw bytes, once per distinct value (the tracker's hot path)."""
    try:
        return parse(raw.decode("ascii"))
    except UnicodeDecodeError:
        return None


def announce_url(url, value):
    """``url`` with this session's ``split`` value added to the query."""
    return f"{url}{'&' if '?' in url else '?'}{PARAM}={value}"
