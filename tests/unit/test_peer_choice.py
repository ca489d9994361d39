"""The rack policy: a peer's rack first, always some peers outside it, the seeder always."""
import random

import pytest

from murder_core import location
from murder_core.errors import InvalidInput
from murder_core.peer_choice import Groups, pick_near, pick_peers
from murder_core.tracker import check_peer_choice


class FakePeer:
    def __init__(self, name, place, complete=False, side=None):
        self.name, self.place, self.complete, self.side = name, place, complete, side
        self.ip, self.port = name, 1
        self.address = (self.ip, self.port)

    def __repr__(self):
        return self.name


def fleet(racks=4, per_rack=4, datacenters=("dc1",), complete=()):
    groups, peers = Groups(), {}
    for dc in datacenters:
        for r in range(racks):
            for h in range(per_rack):
                name = f"{dc}-r{r}-h{h}"
                peer = FakePeer(name, f"{dc}/r{r}", complete=name in complete)
                groups.add(peer.address, peer)
                peers[name] = peer
    return groups, peers


def near(groups, peer, limit=200, rng=None, **kwargs):
    kwargs.setdefault("outside_rack", 2)
    kwargs.setdefault("outside_datacenter", 1)
    return pick_near(groups, peer.place, limit, requester=peer.address, requester_complete=peer.complete,
                     rng=rng or random.Random(7), **kwargs)


def test_own_rack_first_and_a_few_from_other_racks():
    groups, peers = fleet()
    me = peers["dc1-r0-h0"]
    chosen = near(groups, me)
    same = sorted(p.name for p in chosen if p.place == me.place)
    outside = [p for p in chosen if p.place != me.place]
    assert same == ["dc1-r0-h1", "dc1-r0-h2", "dc1-r0-h3"]
    assert len(outside) == 2 and len({p.place for p in outside}) == 2  # spread over two other racks
    assert me not in chosen and len(chosen) == len(set(map(id, chosen)))


@pytest.mark.parametrize("seed", range(20))
def test_every_peer_always_gets_outside_peers_and_the_seeder(seed):
    groups, peers = fleet(racks=3, per_rack=5)
    seeder = FakePeer("seeder", None, complete=True)  # the tracker puts a seeder in no place
    groups.add(seeder.address, seeder)
    rng = random.Random(seed)
    for me in peers.values():
        chosen = near(groups, me, rng=rng, seeders=[seeder.address])
        assert seeder in chosen
        assert sum(1 for p in chosen if p.place != me.place and p is not seeder) >= 2
    # Even an answer of one peer is the seeder.
    assert near(groups, peers["dc1-r1-h1"], limit=1, seeders=[seeder.address]) == [seeder]


@pytest.mark.parametrize("seed", range(10))
def test_a_late_rack_reaches_finished_peers_outside(seed):
    finished = {f"dc1-r{r}-h0" for r in (0, 1, 2)}  # one finished peer in each other rack
    groups, peers = fleet(complete=finished)
    for h in range(4):
        chosen = near(groups, peers[f"dc1-r3-h{h}"], rng=random.Random(seed))
        outside = [p for p in chosen if p.place != "dc1/r3"]
        assert len(outside) == 2 and all(p.complete for p in outside)


def test_other_datacenters_get_their_share():
    groups, peers = fleet(racks=2, per_rack=3, datacenters=("ams", "fra"))
    me = peers["ams-r0-h0"]
    chosen = near(groups, me, outside_rack=1, outside_datacenter=2)
    assert sum(1 for p in chosen if p.place.startswith("fra/")) == 2
    assert sum(1 for p in chosen if p.place == "ams/r1") == 1
    assert sum(1 for p in chosen if p.place == me.place) == 2


def test_one_place_is_the_whole_swarm_like_random_choice():
    groups, peers = fleet(racks=1, per_rack=10)
    me = peers["dc1-r0-h0"]
    assert sorted(p.name for p in near(groups, me)) == sorted(n for n in peers if n != me.name)
    assert sorted(p.name for p in near(groups, me)) == sorted(
        p.name for p in pick_peers(groups.everyone.complete, groups.everyone.incomplete, 200, me.address))


def test_groups_follow_completion_and_forget_empty_places():
    groups, peers = fleet(racks=2, per_rack=1)
    peer = peers["dc1-r0-h0"]
    peer.complete = True
    groups.add(peer.address, peer)
    assert len(groups.everyone.complete) == 1 and len(groups.racks["dc1/r0"].incomplete) == 0
    groups.discard(peer.address, peer)
    assert "dc1/r0" not in groups.racks and groups.datacenters == {"dc1": {"dc1/r1"}}
    groups.discard(peers["dc1-r1-h0"].address, peers["dc1-r1-h0"])
    assert groups.racks == {} and groups.datacenters == {} and len(groups.everyone) == 0


def test_peer_choice_settings_are_checked():
    check_peer_choice("rack", 2, 1)
    check_peer_choice("random", 0, 0)
    for bad in [("nearest", 2, 1), ("rack", -1, 1), ("rack", 2, "1"), ("rack", True, 1), ("rack", 0, 0),
                ("rack", 0, 1)]:
        with pytest.raises(InvalidInput):
            check_peer_choice(*bad)


# Where a host is, and what the tracker believes.


def test_a_minions_place_comes_from_its_config_then_its_grains():
    assert location.of_minion({"rack": "r1", "datacenter": "ams1"}, {"rack": "g"}) == "ams1/r1"
    assert location.of_minion({}, {"rack": "g7", "datacenter": "fra"}) == "fra/g7"
    assert location.of_minion({"rack": 12}, {}) == "/12"
    assert location.of_minion({"datacenter": "ams1"}, {}) is None  # no rack: placed by address
    with pytest.raises(InvalidInput, match="rack"):
        location.of_minion({"rack": "r1/../x"}, {})


def test_only_a_signed_place_is_believed():
    key = location.swarm_key(location.new_secret(), "ab" * 32)
    signature = location.sign(key, "ams1/r1").encode()
    assert location.verified(key, b"ams1/r1", signature) == "ams1/r1"
    assert location.verified(key, b"ams1/r2", signature) is None
    assert location.verified(location.swarm_key(location.new_secret(), "ab" * 32), b"ams1/r1", signature) is None
    assert location.verified(None, b"ams1/r1", signature) is None
    assert location.verified(key, b"ams1/r1", None) is None
    assert location.verified(key, b"\xff/r1", signature) is None


def test_an_unsigned_peer_is_placed_by_its_network():
    assert location.by_address("10.1.2.3") == location.by_address("10.1.2.200") == "/net:10.1.2.0/24"
    assert location.by_address("10.1.3.3") != location.by_address("10.1.2.3")
    assert location.by_address("fd00::1:2") == "/net:fd00::/64"
    url = location.announce_url("http://t:1/announce", "00" * 32, "ams1/r1")
    assert url.startswith("http://t:1/announce?location=ams1%2Fr1&location_sig=")


def test_seeders_are_in_no_place_and_take_no_share():
    groups, peers = fleet(racks=2, per_rack=2)
    seeder = FakePeer("seeder", None, complete=True)
    groups.add(seeder.address, seeder)
    assert set(groups.racks) == {"dc1/r0", "dc1/r1"} and set(groups.datacenters) == {"dc1"}
    me = peers["dc1-r0-h0"]
    chosen = near(groups, me, seeders=[seeder.address], limit=3)
    # The seeder, then one peer of the other rack and the rack-mate: the answer is full.
    assert chosen[0] is seeder and len(chosen) == 3
    groups.discard(seeder.address, seeder)
    assert len(groups.everyone) == 4


# A split peer's two sessions (murder_core.rack_split).


def split_fleet(racks=4, per_rack=4, datacenters=("dc1",)):
    from murder_core import rack_split

    groups, outward, inward = Groups(), {}, {}
    seeder = FakePeer("seeder", None, complete=True)
    groups.add(seeder.address, seeder)
    plan = rack_split.plan({f"{dc}-r{r}-h{h}": f"{dc}/r{r}" for dc in datacenters for r in range(racks)
                            for h in range(per_rack)})
    for place, members in plan.items():
        for name in members:
            side = rack_split.parse(rack_split.assign(plan, name, place).announce_value())
            outward[name] = FakePeer(f"{name}-out", place, side=side)
            inward[name] = FakePeer(f"{name}-in", place, side=rack_split.INWARD)
            groups.add(outward[name].address, outward[name])
            groups.add(inward[name].address, inward[name])
    return groups, seeder, outward, inward


def test_an_outward_session_meets_the_seeder_and_its_stripe_in_other_racks_only():
    from murder_core.peer_choice import pick_stripe

    groups, seeder, outward, _ = split_fleet()
    me = outward["dc1-r0-h1"]
    chosen = pick_stripe(groups, me.place, me.side, 200, outside_datacenter=1, seeders=[seeder.address],
                         requester=me.address, rng=random.Random(3))
    assert chosen[0] is seeder
    assert sorted(p.name for p in chosen[1:]) == ["dc1-r1-h1-out", "dc1-r2-h1-out", "dc1-r3-h1-out"]


def test_an_inward_session_meets_its_rack_mates_inward_sessions_only():
    from murder_core.peer_choice import pick_inward

    groups, seeder, _, inward = split_fleet()
    me = inward["dc1-r2-h0"]
    chosen = pick_inward(groups, me.place, 200, requester=me.address, rng=random.Random(3))
    assert sorted(p.name for p in chosen) == ["dc1-r2-h1-in", "dc1-r2-h2-in", "dc1-r2-h3-in"]


def test_split_sessions_stay_out_of_ordinary_answers_and_count_once_a_host():
    groups, seeder, outward, inward = split_fleet(racks=2, per_rack=2)
    # The seeder and a peer the plan did not name see no split session: an inward one would let a piece
    # into a rack twice, an outward one would be counted as a host that never completes.
    plain = FakePeer("plain", "dc1/r0")
    groups.add(plain.address, plain)
    chosen = near(groups, plain, seeders=[seeder.address])
    assert [p.name for p in chosen] == ["seeder"]
    assert pick_peers(groups.everyone.complete, groups.everyone.incomplete, 50, requester=seeder.address,
                      requester_complete=True) == [plain]
    assert groups.counts() == (1, 1 + 4)
    for peer in inward.values():
        peer.complete = True
        groups.add(peer.address, peer)
    assert groups.counts() == (1 + 4, 1)
    for peer in list(outward.values()) + list(inward.values()):
        groups.discard(peer.address, peer)
    assert not groups.inward and not groups.outward and groups.counts() == (1, 1)


def test_other_datacenters_send_at_most_their_share_to_an_outward_session():
    from murder_core.peer_choice import pick_stripe

    groups, seeder, outward, _ = split_fleet(racks=2, per_rack=2, datacenters=("dc1", "dc2", "dc3"))
    me = outward["dc1-r0-h0"]
    chosen = pick_stripe(groups, me.place, me.side, 200, outside_datacenter=1, seeders=[seeder.address],
                         requester=me.address, rng=random.Random(3))
    names = [p.name for p in chosen]
    assert names[0] == "seeder" and "dc1-r1-h0-out" in names
    assert len([n for n in names if not n.startswith(("dc1", "seeder"))]) == 1
