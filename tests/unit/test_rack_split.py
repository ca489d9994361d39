"""The rack split's plan: who takes which stripe, its share from the seeder, and the announce value."""
import pytest

from murder_core import rack_split
from murder_core.errors import InvalidInput


def four_by_four():
    return rack_split.plan({f"r{r}h{h}": f"dc/r{r}" for r in range(4) for h in range(4)})


def test_every_piece_is_taken_once_in_each_rack_and_its_share_once_in_the_fleet():
    racks = four_by_four()
    pieces = 257
    shares = {}
    for place, members in racks.items():
        takers = {}
        for minion in members:
            mine = rack_split.assign(racks, minion, place)
            for piece in range(pieces):
                if mine.takes(piece):
                    takers.setdefault(piece, []).append(minion)
                if mine.own_share(piece):
                    shares.setdefault(piece, []).append(minion)
        # Each piece enters the rack through exactly one host.
        assert sorted(takers) == list(range(pieces)) and all(len(t) == 1 for t in takers.values())
    # ... and the seeder sends each piece to one host of the fleet first.
    assert sorted(shares) == list(range(pieces)) and all(len(s) == 1 for s in shares.values())


def test_a_smaller_rack_takes_several_stripes_a_host():
    racks = rack_split.plan({"a1": "dc/a", "a2": "dc/a", "a3": "dc/a", "a4": "dc/a", "b1": "dc/b", "b2": "dc/b"})
    b1, b2 = (rack_split.assign(racks, name, "dc/b") for name in ("b1", "b2"))
    assert b1.stripes == 4 and b1.stripe_set() == {0, 2} and b2.stripe_set() == {1, 3}
    a3 = rack_split.assign(racks, "a3", "dc/a")
    assert a3.stripe_set() == {2} and rack_split.parse(a3.announce_value()) == {2}
    assert rack_split.parse(b1.announce_value()) == {0, 2}
    priorities = b2.priorities(16)
    assert [p for p in range(16) if priorities[p]] == [1, 3, 5, 7, 9, 11, 13, 15]
    assert [p for p in range(16) if priorities[p] == rack_split.SHARE_PRIORITY] == b2.share(16)


def test_no_split_without_two_racks_or_when_the_minion_is_elsewhere():
    assert rack_split.plan({"a": "dc/a", "b": "dc/a", "c": None}) is None
    assert rack_split.plan({"a": None, "b": None}) is None
    racks = rack_split.plan({"a": "dc/a", "b": "dc/b", "c": None})
    assert racks == {"dc/a": ["a"], "dc/b": ["b"]}
    assert rack_split.assign(racks, "c", "dc/a") is None  # the master did not know it: one session
    assert rack_split.assign(racks, "a", "dc/b") is None  # its own config moved it since the cache
    assert rack_split.assign(racks, "a", None) is None


@pytest.mark.parametrize("value", ["out", "out.1.1.4", "out.0.3.2", "out.a.2.4", "out.0.2.4.1", "in.", "x.0.1.1",
                                   "out.0.1.99999", "out.-1.2.4"])
def test_malformed_announce_values_name_no_session(value):
    assert rack_split.parse(value) is None


@pytest.mark.bad_input
@pytest.mark.parametrize("racks", [{}, [], {"rack": ["a"]}, {"dc/a": []}, {"dc/a": "a"}, {"dc/a": [1]}])
def test_a_bad_plan_in_a_request_is_refused(racks):
    with pytest.raises(InvalidInput, match="racks"):
        rack_split.check_plan(racks)
