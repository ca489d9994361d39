"""Which peers the tracker hands a peer: uniform at random, or near it first.

The tracker keeps each swarm's peers in :class:`Groups`: everyone, and the
same peers by rack and by datacenter (``murder_core.location``). Every
group splits into complete and downloading :class:`PeerSet` groups, which add,
remove and sample in O(1), so an answer costs the same in a swarm of 10 or
10,000.

* :func:`pick_peers` draws from one group, complete peers first for a
  downloading requester (the seeder among them) and downloading ones first
  for a complete requester, since seeds do not trade with seeds.
* :func:`pick_near` is the rack policy (``peer_choice: rack``): the peers of
  the requester's rack, plus up to ``outside_rack`` peers of other racks of
  its datacenter and ``outside_datacenter`` of another datacenter, plus the
  master's seeders. The outside peers are what keep a rack from starving:
  a rack that starts late, or whose members all lack the same pieces, still
  reaches finished peers elsewhere (Uber's Kraken dropped a policy that told
  a late group to talk only among itself, uber/kraken#244). Outside peers
  are complete ones first, for the same reason.
* :func:`pick_stripe` and :func:`pick_inward` answer the two sessions of a
  split peer (``murder_core.rack_split``): its outward session gets the
  seeders and the hosts of other racks that take the same stripes, its
  inward session its rack-mates' inward sessions only.
"""
import random

from murder_core import location, rack_split


class PeerSet:
    """Peers keyed by address, with O(1) add, remove and uniform random choice.

    A list holds the peers and a dict each one's place in it; removing swaps
    the last peer into the hole. An announce then costs the same in a swarm
    of 10 peers or 10,000.
    """

    __slots__ = ("items", "index")

    def __init__(self):
        self.items = []
        self.index = {}  # address -> position in items

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(list(self.items))

    def add(self, address, peer):
        position = self.index.get(address)
        if position is None:
            self.index[address] = len(self.items)
            self.items.append(peer)
        else:
            self.items[position] = peer

    def get(self, address):
        position = self.index.get(address)
        return None if position is None else self.items[position]

    def discard(self, address):
        position = self.index.pop(address, None)
        if position is None:
            return
        last = self.items.pop()
        if position < len(self.items):
            self.items[position] = last
            self.index[(last.ip, last.port)] = position

    def sample(self, count, rng=random, exclude=None):
        """Up to ``count`` distinct peers at random, never ``exclude`` (an address).

        A random start and a random stride through the group, as opentracker
        does: each answer is another spread of the swarm, at a cost that grows
        with ``count`` only (``random.sample`` costs several times more).
        """
        items = self.items
        size = len(items)
        skip = self.index.get(exclude, -1) if exclude is not None else -1
        available = size - (skip >= 0)
        if count <= 0 or available <= 0:
            return []
        if count >= available:
            chosen = [peer for position, peer in enumerate(items) if position != skip]
            rng.shuffle(chosen)
            return chosen
        # One extra, in case the requester is among them; (take - 1) * step < size keeps them distinct.
        take = count + (skip >= 0)
        step = rng.randint(1, size // take)
        start = rng.randrange(size)
        chosen = items[start:start + take * step:step]
        if len(chosen) < take:  # wrapped past the end: go on from the front, short of start
            resume = start + len(chosen) * step - size
            chosen += items[resume:resume + (take - len(chosen)) * step:step]
        if skip >= 0:
            requester = items[skip]
            chosen = [peer for peer in chosen if peer is not requester]
        return chosen[:count]


class Group:
    """The complete and the downloading peers of one place."""

    __slots__ = ("complete", "incomplete")

    def __init__(self):
        self.complete = PeerSet()
        self.incomplete = PeerSet()

    def __len__(self):
        return len(self.complete) + len(self.incomplete)

    def add(self, address, peer):
        (self.complete if peer.complete else self.incomplete).add(address, peer)
        (self.incomplete if peer.complete else self.complete).discard(address)

    def discard(self, address):
        self.complete.discard(address)
        self.incomplete.discard(address)


class Groups:
    """A swarm's peers: all of them, by rack (``place``) and by datacenter.

    Each peer has a ``place`` (``"<datacenter>/<rack>"``, see
    ``murder_core.location``; None for the master's seeders, which are in
    no place), a ``complete`` flag and a ``side``: None for an ordinary
    peer, or the session of a split peer (``rack_split.parse``), which is
    kept apart: ``inward`` by place, ``outward`` by stripe, so that no
    ordinary answer names one. Call :meth:`add` again when its ``complete``
    changes and :meth:`discard` before its place or side does.
    """

    __slots__ = ("everyone", "racks", "datacenters", "inward", "inward_all", "outward")

    def __init__(self):
        self.everyone = Group()
        self.racks = {}  # place -> Group
        self.datacenters = {}  # datacenter -> {place, ...}
        self.inward = {}  # place -> Group of inward sessions
        self.inward_all = Group()  # every inward session: the swarm's counts
        self.outward = {}  # stripe -> PeerSet of outward sessions (one a rack)

    def counts(self):
        """``(complete, incomplete)`` hosts: ordinary peers and inward sessions (an outward one never completes)."""
        return (len(self.everyone.complete) + len(self.inward_all.complete),
                len(self.everyone.incomplete) + len(self.inward_all.incomplete))

    def add(self, address, peer):
        if peer.side is not None:
            self._add_split(address, peer)
            return
        self.everyone.add(address, peer)
        if peer.place is None:  # a seeder: in every answer already, in no place's share
            return
        rack = self.racks.get(peer.place)
        if rack is None:
            rack = self.racks[peer.place] = Group()
            self.datacenters.setdefault(location.datacenter(peer.place), set()).add(peer.place)
        rack.add(address, peer)

    def _add_split(self, address, peer):
        if peer.side == rack_split.INWARD:
            self.inward.setdefault(peer.place, Group()).add(address, peer)
            self.inward_all.add(address, peer)
        else:
            for stripe in peer.side:
                self.outward.setdefault(stripe, PeerSet()).add(address, peer)

    def _discard_split(self, address, peer):
        if peer.side == rack_split.INWARD:
            self.inward_all.discard(address)
            group = self.inward.get(peer.place)
            if group is not None:
                group.discard(address)
                if not group:
                    del self.inward[peer.place]
            return
        for stripe in peer.side:
            members = self.outward.get(stripe)
            if members is not None:
                members.discard(address)
                if not members:
                    del self.outward[stripe]

    def discard(self, address, peer):
        if peer.side is not None:
            self._discard_split(address, peer)
            return
        self.everyone.discard(address)
        rack = self.racks.get(peer.place) if peer.place is not None else None
        if rack is None:
            return
        rack.discard(address)
        if not rack:
            del self.racks[peer.place]
            places = self.datacenters[location.datacenter(peer.place)]
            places.discard(peer.place)
            if not places:
                del self.datacenters[location.datacenter(peer.place)]


def pick_peers(complete, incomplete, limit, requester=None, requester_complete=False, rng=random):
    """Choose up to ``limit`` peers from two :class:`PeerSet` groups, never the ``requester`` address.

    Complete peers (``left == 0``, the seeder among them) come first for a
    downloading requester; incomplete peers come first for a complete one.
    Each group is sampled uniformly so that announces spread over the swarm,
    at a cost that grows with ``limit``, not with the swarm.
    """
    first, second = (incomplete, complete) if requester_complete else (complete, incomplete)
    chosen = first.sample(limit, rng, exclude=requester)
    if len(chosen) < limit:
        chosen += second.sample(limit - len(chosen), rng, exclude=requester)
    return chosen


def _seeders(groups, seeders, requester, limit):
    chosen = []
    for address in seeders:
        if len(chosen) >= limit:
            break
        peer = groups.everyone.complete.get(address)
        if peer is not None and address != requester:
            chosen.append(peer)
    return chosen


def _spread(groups, count, requester_complete, rng):
    """Up to ``count`` peers spread over ``groups`` (a list of :class:`Group`), a few from each."""
    chosen = []
    if count <= 0 or not groups:
        return chosen
    rng.shuffle(groups)
    each = -(-count // len(groups))
    for group in groups:
        chosen += pick_peers(group.complete, group.incomplete, min(each, count - len(chosen)),
                             requester_complete=requester_complete, rng=rng)
        if len(chosen) >= count:
            break
    return chosen


def pick_near(groups, place, limit, *, outside_rack, outside_datacenter, seeders=(), requester=None,
              requester_complete=False, rng=random, outside_seed=None):
    """Up to ``limit`` peers for a requester at ``place``: its rack's, a few from outside, the seeders.

    ``groups`` is the swarm's :class:`Groups`; ``seeders`` the addresses of
    the master's seeders, which come first whenever they are in the swarm.
    Then up to ``outside_datacenter`` peers of another datacenter and
    ``outside_rack`` of other racks of the requester's datacenter (each
    spread over as many places as it can, complete peers first), and the
    rest of the answer from the requester's own rack. The outside peers are
    drawn from a generator seeded with ``outside_seed`` (the tracker's: the
    requester's address; None: ``rng``), so that each announce names the
    same outside peers while the swarm stays as it is: a peer keeps its
    connections, and new outside peers at every announce would add up to
    the whole swarm. A group with too few peers leaves its share unfilled:
    filling it from elsewhere would undo the policy in a small swarm, where
    every answer would again be everyone.
    """
    chosen = _seeders(groups, seeders, requester, limit)
    if len(chosen) >= limit:
        return chosen
    rack = groups.racks.get(place)
    if len(groups.racks) > (rack is not None):  # some place other than the requester's: its share first
        outside = rng if outside_seed is None else random.Random(outside_seed)
        datacenter = location.datacenter(place)
        # Sorted: a set's order is not the same from one announce to the next.
        other_datacenters = sorted(name for name in groups.datacenters if name != datacenter)
        if other_datacenters and outside_datacenter > 0:
            elsewhere = sorted(groups.datacenters[outside.choice(other_datacenters)])
            chosen += _spread([groups.racks[other] for other in elsewhere],
                              min(outside_datacenter, limit - len(chosen)), requester_complete, outside)
        neighbours = [groups.racks[other] for other in sorted(groups.datacenters.get(datacenter, ()))
                      if other != place]
        chosen += _spread(neighbours, min(outside_rack, limit - len(chosen)), requester_complete, outside)
    if rack is not None and len(chosen) < limit:
        chosen += pick_peers(rack.complete, rack.incomplete, limit - len(chosen), requester=requester,
                             requester_complete=requester_complete, rng=rng)
    return chosen


def pick_stripe(groups, place, stripes, limit, *, outside_datacenter, seeders=(), requester=None, rng=random):
    """The answer to a split peer's outward session at ``place`` taking ``stripes``.

    The seeders first, then the outward sessions of other racks that take
    any of the same stripes (one host a rack for each stripe): those of the
    requester's datacenter, then up to ``outside_datacenter`` of others. No
    rack-mate: its pieces come through the inward session.
    """
    chosen = _seeders(groups, seeders, requester, limit)
    found = {}
    # A sample of each stripe (one host a rack), so an answer's cost stays bounded by the answer's size.
    each = max(limit, outside_datacenter) + 1
    for stripe in sorted(stripes, key=lambda _: rng.random())[:max(limit, 1)]:
        members = groups.outward.get(stripe)
        for peer in (members.sample(each, rng) if members is not None else ()):
            found[(peer.ip, peer.port)] = peer
    found.pop(requester, None)
    datacenter = location.datacenter(place)
    near = [peer for peer in found.values() if peer.place != place and location.datacenter(peer.place) == datacenter]
    far = [peer for peer in found.values() if location.datacenter(peer.place) != datacenter]
    rng.shuffle(near)
    rng.shuffle(far)
    chosen += near[:max(limit - len(chosen), 0)]
    chosen += far[:max(min(outside_datacenter, limit - len(chosen)), 0)]
    return chosen


def pick_inward(groups, place, limit, *, requester=None, requester_complete=False, rng=random):
    """The answer to a split peer's inward session at ``place``: its rack-mates' inward sessions only."""
    group = groups.inward.get(place)
    if group is None:
        return []
    return pick_peers(group.complete, group.incomplete, limit, requester=requester,
                      requester_complete=requester_complete, rng=rng)
