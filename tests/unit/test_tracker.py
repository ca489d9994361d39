"""The deploy's tracker, over real HTTP on 127.0.0.1 (and one real libtorrent client)."""
import http.client
import ipaddress
import os
import random
import socket
import threading
import time
from urllib.parse import quote_from_bytes, urlencode

import libtorrent as lt
import pytest

from murder_core.errors import InvalidInput, MurderError
from murder_core.peer_choice import PeerSet, pick_peers
from murder_core.tracker import Tracker, interval_for

RELEASE = bytes(range(20))
ALIAS = bytes(range(100, 120))
OTHER = b"\xff" * 20


def wait_for(condition, timeout=10.0, step=0.05):
    """Poll ``condition`` until it returns something true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


@pytest.fixture(autouse=True)
def no_thread_leak():
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.name.startswith("murder-tracker")]
    assert not leaked, f"tracker threads still running: {leaked}"


@pytest.fixture
def make_tracker():
    trackers = []

    def make(**kwargs):
        tracker = Tracker(**kwargs)
        trackers.append(tracker)
        return tracker.start()

    yield make
    for tracker in trackers:
        tracker.stop()


@pytest.fixture
def tracker(make_tracker):
    tracker = make_tracker()
    tracker.serve(RELEASE)
    return tracker


def get(tracker, target, headers=None, method="GET"):
    """One HTTP request straight to the tracker (no proxy); returns (status, body)."""
    conn = http.client.HTTPConnection(tracker.host, tracker.port, timeout=5)
    try:
        conn.request(method, target, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def announce(
    tracker, port, left=100, info_hash=RELEASE, event=None, compact=1, numwant=None, peer_id=None, **extra
):
    """Announce one peer (127.0.0.1:port); return the decoded reply."""
    query = (
        f"info_hash={quote_from_bytes(info_hash)}"
        f"&peer_id={quote_from_bytes(peer_id or b'-TEST-' + b'%014d' % port)}"
        f"&port={port}&uploaded=0&downloaded=0&left={left}&compact={compact}"
    )
    if event:
        query += f"&event={event}"
    if numwant is not None:
        query += f"&numwant={numwant}"
    if extra:
        query += "&" + urlencode(extra)
    status, body = get(tracker, "/announce?" + query)
    assert status == 200, body
    return lt.bdecode(body)


def compact_peers(reply):
    """Decode BEP 23 compact peers into [(ip, port)]."""
    raw = reply[b"peers"]
    assert len(raw) % 6 == 0
    return [
        (str(ipaddress.IPv4Address(raw[i : i + 4])), int.from_bytes(raw[i + 4 : i + 6], "big"))
        for i in range(0, len(raw), 6)
    ]


def ports(reply):
    return [port for _, port in compact_peers(reply)]


def scrape(tracker, *info_hashes):
    query = "&".join(f"info_hash={quote_from_bytes(h)}" for h in info_hashes)
    status, body = get(tracker, "/scrape?" + query)
    assert status == 200, body
    return lt.bdecode(body)


def failure(reply):
    return reply.get(b"failure reason", b"").decode()


def test_announce_returns_compact_peers_but_not_the_requester(tracker):
    first = announce(tracker, 7001)
    assert first[b"interval"] == 5
    assert first[b"peers"] == b""
    reply = announce(tracker, 7002)
    assert compact_peers(reply) == [("127.0.0.1", 7001)]
    assert reply[b"incomplete"] == 2 and reply[b"complete"] == 0
    assert ports(announce(tracker, 7001)) == [7002]


def test_dictionary_peer_list_when_not_compact(tracker):
    announce(tracker, 7001, peer_id=b"A" * 20)
    reply = announce(tracker, 7002, compact=0)
    assert reply[b"peers"] == [{b"ip": b"127.0.0.1", b"port": 7001, b"peer id": b"A" * 20}]
    reply = announce(tracker, 7002, compact=0, no_peer_id=1)
    assert reply[b"peers"] == [{b"ip": b"127.0.0.1", b"port": 7001}]


def test_completed_peers_come_first(tracker):
    for port in (7001, 7002, 7003):
        announce(tracker, port, left=50)
    for port in (7101, 7102):
        announce(tracker, port, left=0)
    reply = announce(tracker, 7200, left=100)
    got = ports(reply)
    assert sorted(got[:2]) == [7101, 7102]
    assert sorted(got[2:]) == [7001, 7002, 7003]
    assert reply[b"complete"] == 2 and reply[b"incomplete"] == 4
    # A complete peer is handed the downloading peers first.
    got = ports(announce(tracker, 7101, left=0))
    assert sorted(got[:4]) == [7001, 7002, 7003, 7200] and got[4:] == [7102]


class _P:
    def __init__(self, name, complete):
        self.name, self.complete, self.ip, self.port = name, complete, "10.0.0.1", ord(name)


def _groups(peers):
    complete, incomplete = PeerSet(), PeerSet()
    for peer in peers:
        (complete if peer.complete else incomplete).add((peer.ip, peer.port), peer)
    return complete, incomplete


def test_pick_peers_policy():
    peers = [_P("a", False), _P("s", True), _P("b", False), _P("c", True)]
    complete, incomplete = _groups(peers)
    rng = random.Random(1)
    picked = [p.name for p in pick_peers(complete, incomplete, 3, rng=rng)]
    assert sorted(picked[:2]) == ["c", "s"] and picked[2] in {"a", "b"}
    picked = [p.name for p in pick_peers(complete, incomplete, 10, requester_complete=True, rng=rng)]
    assert sorted(picked[:2]) == ["a", "b"] and sorted(picked[2:]) == ["c", "s"]
    assert pick_peers(complete, incomplete, 0) == []
    # The requester is never handed itself, however many it asks for.
    for limit in (1, 2, 3, 10):
        picked = pick_peers(complete, incomplete, limit, requester=("10.0.0.1", ord("s")), rng=rng)
        assert "s" not in [p.name for p in picked] and len(picked) == min(limit, 3)


def test_peer_set_samples_uniformly_and_survives_removal():
    group = PeerSet()
    peers = [_P(chr(0x100 + n), False) for n in range(1000)]
    for peer in peers:
        group.add((peer.ip, peer.port), peer)
    for peer in peers[::2]:
        group.discard((peer.ip, peer.port))
    group.discard(("10.0.0.1", 1))  # not there: nothing happens
    left = {peer.name for peer in peers[1::2]}
    assert len(group) == 500 and {p.name for p in group} == left
    rng = random.Random(7)
    seen = {}
    for _ in range(400):
        drawn = group.sample(5, rng)
        assert len({p.name for p in drawn}) == 5 and {p.name for p in drawn} <= left
        for p in drawn:
            seen[p.name] = seen.get(p.name, 0) + 1
    # 2,000 draws over 500 peers: a fair sampler reaches nearly all of them.
    assert len(seen) > 450


def test_peer_set_sample_is_distinct_sized_and_never_the_requester():
    rng = random.Random(3)
    for size in range(1, 40):
        group = PeerSet()
        peers = [_P(chr(0x100 + n), False) for n in range(size)]
        for peer in peers:
            group.add((peer.ip, peer.port), peer)
        for count in range(1, size + 2):
            for exclude in (None, (peers[0].ip, peers[0].port), (peers[-1].ip, peers[-1].port)):
                for _ in range(5):
                    drawn = group.sample(count, rng, exclude=exclude)
                    names = [p.name for p in drawn]
                    assert len(names) == len(set(names)) == min(count, size - (exclude is not None))
                    assert exclude is None or exclude not in {(p.ip, p.port) for p in drawn}


def test_interval_grows_with_the_peers_held():
    assert interval_for(0, 5, 1000) == 5
    assert interval_for(5000, 5, 1000) == 5
    assert interval_for(5001, 5, 1000) == 6
    assert interval_for(10_000, 5, 1000) == 10
    assert interval_for(10_000, 5, 400) == 25


def test_a_large_swarm_is_handed_a_longer_interval(make_tracker):
    tracker = make_tracker(interval=1, max_announce_rate=3)
    tracker.serve(RELEASE)
    intervals = [announce(tracker, 7000 + n)[b"interval"] for n in range(10)]
    # peers held before each answer: 0..9, so ceil(peers / 3) once past 3 peers.
    assert intervals == [1, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert tracker.current_interval() == 4
    announce(tracker, 7000, event="stopped")
    assert tracker.current_interval() == 3


def test_numwant_and_max_peers_cap(make_tracker):
    tracker = make_tracker(max_peers=3)
    tracker.serve(RELEASE)
    for port in range(7001, 7007):
        announce(tracker, port)
    assert len(ports(announce(tracker, 7100, numwant=50))) == 3
    assert len(ports(announce(tracker, 7100, numwant=2))) == 2
    assert ports(announce(tracker, 7100, numwant=0)) == []
    assert len(ports(announce(tracker, 7100))) == 3


@pytest.mark.bad_input
def test_unknown_info_hash_gets_failure_reason(tracker):
    reply = announce(tracker, 7001, info_hash=OTHER)
    assert OTHER.hex() in failure(reply)
    assert b"peers" not in reply
    with pytest.raises(KeyError):
        tracker.swarm(OTHER)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "info_hash=short&peer_id=AAAAAAAAAAAAAAAAAAAA&port=7001&left=0",
        "info_hash=%s&peer_id=AAAAAAAAAAAAAAAAAAAA&left=0",
        "info_hash=%s&peer_id=AAAAAAAAAAAAAAAAAAAA&port=x&left=0",
        "info_hash=%s&peer_id=AAAAAAAAAAAAAAAAAAAA&port=70000&left=0",
        "info_hash=%s&peer_id=AAAAAAAAAAAAAAAAAAAA&port=0&left=0",
        "info_hash=%s&peer_id=AAAAAAAAAAAAAAAAAAAA&port=7001&left=-1",
        "info_hash=%s&peer_id=AAAAAAAAAAAAAAAAAAAA&port=7001&left=1e9",
        "info_hash=%s&peer_id=AAAAAAAAAAAAAAAAAAAA&port=7001",
        "info_hash=%s&peer_id=AAAAAAAAAAAAAAAAAAAA&port=7001&left=0&uploaded=%%zz",
        "info_hash=%s&peer_id=AAAAAAAAAAAAAAAAAAAA&port=7001&left=0&numwant=lots",
        "info_hash=%s&peer_id=AAAAAAAAAAAAAAAAAAAA&port=7001&left=0&event=exploded",
        "info_hash=%s&peer_id=short&port=7001&left=0",
        "info_hash=%s&port=7001&left=0",
        "info_hash=%s&info_hash=%s&peer_id=AAAAAAAAAAAAAAAAAAAA&port=7001&left=0",
    ],
)
@pytest.mark.bad_input
def test_garbage_announce_gets_failure_reason_and_tracker_keeps_serving(tracker, query):
    hashed = quote_from_bytes(RELEASE)
    status, body = get(tracker, "/announce?" + query.replace("%s", hashed))
    assert status == 200
    assert lt.bdecode(body)[b"failure reason"]
    assert tracker.swarm(RELEASE)["incomplete"] == 0
    assert b"failure reason" not in announce(tracker, 7002)


@pytest.mark.bad_input
def test_oversized_requests_are_refused_and_tracker_keeps_serving(tracker):
    long_query = "/announce?info_hash=" + "a" * 9000
    status, _ = get(tracker, long_query)
    assert status == 414
    status, _ = get(tracker, "/announce", headers={"Content-Length": "100000"}, method="POST")
    assert status == 400
    # A header block beyond the hard limit is cut off without an answer.
    try:
        status, _ = get(tracker, "/announce?x=" + "a" * 100_000)
    except (OSError, http.client.HTTPException):
        pass
    else:
        assert status >= 400
    assert b"failure reason" not in announce(tracker, 7001)


def test_scrape_counts_and_alias_keys_share_the_swarm(make_tracker):
    tracker = make_tracker()
    tracker.serve(RELEASE, ALIAS)
    announce(tracker, 7001, left=0)  # the seeder
    announce(tracker, 7002, left=10, info_hash=ALIAS)
    announce(tracker, 7003, left=10)
    reply = announce(tracker, 7003, left=0, event="completed", info_hash=ALIAS)
    announce(tracker, 7003, left=0, event="completed")  # the same completion under the other key
    assert sorted(ports(reply)) == [7001, 7002]
    expected = {b"complete": 2, b"incomplete": 1, b"downloaded": 1}
    files = scrape(tracker, RELEASE, ALIAS, OTHER)[b"files"]
    assert files == {RELEASE: expected, ALIAS: expected}
    assert tracker.swarm(RELEASE) == tracker.swarm(ALIAS) == {"complete": 2, "incomplete": 1, "downloaded": 1}
    assert scrape(tracker)[b"files"] == {RELEASE: expected, ALIAS: expected}
    assert failure(scrape(tracker, b"short"))


def test_stopped_removes_the_peer(tracker):
    announce(tracker, 7001)
    announce(tracker, 7002)
    reply = announce(tracker, 7001, event="stopped")
    assert reply[b"peers"] == b""
    assert tracker.swarm(RELEASE)["incomplete"] == 1
    assert ports(announce(tracker, 7002)) == []


def test_forget_makes_announces_fail(make_tracker):
    tracker = make_tracker()
    tracker.serve(RELEASE, ALIAS)
    announce(tracker, 7001)
    tracker.forget(ALIAS)
    assert failure(announce(tracker, 7001))
    assert failure(announce(tracker, 7001, info_hash=ALIAS))
    assert scrape(tracker, RELEASE)[b"files"] == {}
    tracker.forget(ALIAS)  # already forgotten: nothing happens


def test_serve_rejects_bad_keys(tracker):
    with pytest.raises(InvalidInput):
        tracker.serve(b"short")
    with pytest.raises(InvalidInput):
        tracker.serve()
    tracker.serve(ALIAS)
    with pytest.raises(InvalidInput):
        tracker.serve(RELEASE, ALIAS)  # two different swarms


def test_bad_settings_and_busy_port_are_refused(tracker):
    for bad in ({"interval": 0}, {"max_peers": 0}, {"peer_ttl": -1}, {"port": 70000}):
        with pytest.raises(InvalidInput):
            Tracker(**bad)
    with pytest.raises(MurderError, match=f"127.0.0.1:{tracker.port}"):
        Tracker(port=tracker.port).start()


@pytest.mark.fault
def test_restart_on_the_same_port(make_tracker):
    tracker = make_tracker()
    tracker.serve(RELEASE)
    port = tracker.port
    announce(tracker, 7001)
    tracker.stop()
    tracker.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    tracker.start()
    assert tracker.port == port and tracker.url == f"http://127.0.0.1:{port}/announce"
    assert ports(announce(tracker, 7002)) == [7001]
    tracker.stop()

    # A new tracker process on the same port rebuilds the swarm from re-announces.
    fresh = make_tracker(port=port)
    fresh.serve(RELEASE)
    assert ports(announce(fresh, 7002)) == []
    assert ports(announce(fresh, 7001)) == [7002]


def test_silent_peers_expire(make_tracker):
    tracker = make_tracker(peer_ttl=0.2)
    tracker.serve(RELEASE)
    announce(tracker, 7001)
    assert tracker.swarm(RELEASE)["incomplete"] == 1
    assert wait_for(lambda: tracker.swarm(RELEASE)["incomplete"] == 0, timeout=5)
    assert ports(announce(tracker, 7002)) == []


def test_context_manager_starts_and_stops():
    with Tracker() as tracker:
        assert tracker.port != 0
        tracker.serve(RELEASE)
        assert announce(tracker, 7001)[b"interval"] == 5
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", tracker.port), timeout=2).close()


@pytest.fixture
def lt_session():
    sessions = []

    def make():
        session = lt.session(
            {
                "enable_dht": False,
                "enable_lsd": False,
                "enable_upnp": False,
                "enable_natpmp": False,
                "listen_interfaces": "127.0.0.1:0",
                "allow_multiple_connections_per_ip": True,
                "stop_tracker_timeout": 1,
                "alert_mask": lt.alert.category_t.tracker_notification,
            }
        )
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.pause()
        for handle in session.get_torrents():
            session.remove_torrent(handle)
    sessions.clear()


def test_libtorrent_session_announces_to_the_tracker(tmp_path, tracker, lt_session):
    release = tmp_path / "release.tar"
    release.write_bytes(os.urandom(64 * 1024))
    creator = lt.create_torrent(lt.list_files(str(release)), 16 * 1024)
    creator.add_tracker(tracker.url)
    lt.set_piece_hashes(creator, str(tmp_path))
    info = lt.torrent_info(creator.generate())
    v1 = info.info_hashes().v1.to_bytes()
    v2 = info.info_hashes().v2.to_bytes()[:20]
    tracker.serve(v1, v2)

    session = lt_session()
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = str(tmp_path)
    handle = session.add_torrent(params)

    assert wait_for(lambda: tracker.swarm(v1)["complete"] == 1), tracker.swarm(v1)
    assert tracker.swarm(v2) == tracker.swarm(v1) == {"complete": 1, "incomplete": 0, "downloaded": 0}
    assert scrape(tracker, v1, v2)[b"files"][v2][b"complete"] == 1

    # libtorrent sends "stopped" only for an announce it has seen answered: wait for both replies
    # (the tracker counts the peer before its answer reaches the client).
    replies = []
    assert wait_for(lambda: replies.extend(a for a in session.pop_alerts() if isinstance(a, lt.tracker_reply_alert))
                    or len(replies) >= 2), replies
    session.remove_torrent(handle)  # announces "stopped"
    assert wait_for(lambda: tracker.swarm(v1)["complete"] == 0), tracker.swarm(v1)


def _raw(tracker, data, read_until_close=True):
    """Send raw bytes to the tracker; return what it sent back, and whether it closed within 0.5 s."""
    with socket.create_connection((tracker.host, tracker.port), timeout=0.5) as conn:
        conn.sendall(data)
        received = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return received, True
                received += chunk
        except socket.timeout:
            return received, False


def _announce_line(port):
    return (f"GET /announce?info_hash={quote_from_bytes(RELEASE)}&peer_id=-TEST-{port:014d}"
            f"&port={port}&left=5&compact=1 HTTP/1.1\r\nHost: x\r\n\r\n").encode()


def test_kept_alive_and_pipelined_requests_are_each_answered(tracker):
    received, closed = _raw(tracker, _announce_line(7001) + _announce_line(7002))
    assert received.count(b"HTTP/1.1 200 OK") == 2 and not closed  # HTTP/1.1 stays open
    second = lt.bdecode(received[received.rindex(b"\r\n\r\n") + 4:])
    assert compact_peers(second) == [("127.0.0.1", 7001)]
    received, closed = _raw(tracker, _announce_line(7003).replace(b"HTTP/1.1", b"HTTP/1.0"))
    assert received.startswith(b"HTTP/1.1 200 OK") and closed  # HTTP/1.0 without keep-alive is closed


@pytest.mark.bad_input
@pytest.mark.parametrize("request_, status", [
    (b"GET /nothing HTTP/1.1\r\n\r\n", b"404"),
    (b"DELETE /announce HTTP/1.1\r\n\r\n", b"405"),
    (b"GET /announce HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
    (b"GET /announce HTTP/2.0\r\n\r\n", b"400"),
    (b"NONSENSE\r\n\r\n", b"400"),
    (b"GET /announce HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
])
def test_requests_that_are_not_announces_get_an_error_and_a_close(tracker, request_, status):
    received, closed = _raw(tracker, request_)
    assert received.startswith(b"HTTP/1.1 " + status) and closed
    assert b"failure reason" not in announce(tracker, 7001)


# Racks: the place a peer signs, or its address.


def test_signed_places_make_answers_rack_first_and_forgeries_are_placed_by_address(make_tracker):
    from murder_core import location

    key = location.swarm_key(location.new_secret(), RELEASE.hex() + "00" * 12)
    tracker = make_tracker(peer_choice="rack", outside_rack=1, outside_datacenter=1)
    tracker.serve(RELEASE, location_key=key, seeders=[("127.0.0.1", 6000)])
    announce(tracker, 6000, left=0)  # the master's seeder, unsigned: placed by its address
    rack_of = {}
    for index in range(16):
        port, place = 7000 + index, f"dc1/r{index // 4}"
        rack_of[port] = place
        announce(tracker, port, location=place, location_sig=location.sign(key, place))
    # A forged claim (a wrong signature) and an unsigned one: placed by their address. The seeder is
    # in no place.
    announce(tracker, 7100, location="dc1/r0", location_sig=location.sign(key, "dc1/r1"))
    announce(tracker, 7101, location="dc1/r0")
    assert tracker.places(RELEASE) == {"dc1/r0": 4, "dc1/r1": 4, "dc1/r2": 4, "dc1/r3": 4,
                                       location.by_address("127.0.0.1"): 2}
    for port, place in rack_of.items():
        got = ports(announce(tracker, port, location=place, location_sig=location.sign(key, place)))
        assert 6000 in got
        assert sorted(p for p in got if rack_of.get(p) == place) == sorted(
            p for p in rack_of if rack_of[p] == place and p != port)
        outside = [p for p in got if p not in (6000, 7100, 7101) and rack_of[p] != place]
        assert len(outside) == 1  # peers_outside_rack; the other datacenter's share goes to the address rack
        # The same outside peers at the next announce: a peer keeps its connections, so new ones
        # at every announce would add up to the whole swarm.
        again = ports(announce(tracker, port, location=place, location_sig=location.sign(key, place)))
        assert sorted(p for p in again if p not in (6000, 7100, 7101) and rack_of[p] != place) == sorted(outside)
        assert len(got) <= 3 + 2 + 1 + 1  # rack, other racks, other datacenters (the address rack), seeder


def test_split_sessions_are_believed_with_a_signed_place_only(make_tracker):
    from murder_core import location, rack_split

    key = location.swarm_key(location.new_secret(), RELEASE.hex() + "00" * 12)
    tracker = make_tracker(peer_choice="rack", outside_rack=1, outside_datacenter=1)
    tracker.serve(RELEASE, location_key=key, seeders=[("127.0.0.1", 6000)])
    announce(tracker, 6000, left=0)
    plan = rack_split.plan({f"r{r}h{h}": f"dc1/r{r}" for r in range(2) for h in range(2)})
    out_port, in_port = {}, {}
    for index, name in enumerate(sorted(n for m in plan.values() for n in m)):
        place = next(p for p, m in plan.items() if name in m)
        signed = {"location": place, "location_sig": location.sign(key, place)}
        out_port[name], in_port[name] = 7000 + index, 7100 + index
        announce(tracker, out_port[name], split=rack_split.assign(plan, name, place).announce_value(), **signed)
        announce(tracker, in_port[name], split="in", **signed)
    place = "dc1/r0"
    signed = {"location": place, "location_sig": location.sign(key, place)}
    assert sorted(ports(announce(tracker, out_port["r0h0"], split="out.0.2.2", **signed))) == [
        6000, out_port["r1h0"]]
    assert ports(announce(tracker, in_port["r0h0"], split="in", **signed)) == [in_port["r0h1"]]
    # Two hosts a rack, the seeder: the tracker counts hosts, not sessions.
    assert tracker.swarm(RELEASE)["incomplete"] == 4 and tracker.places(RELEASE)[place] == 2
    # Without a valid signature the split is not believed: an ordinary peer, placed by its address,
    # which meets no split session.
    forged = ports(announce(tracker, 7200, split="in", location=place, location_sig=location.sign(key, "dc1/r1")))
    assert forged == [6000]
    # Nor beside a claim of the place the tracker gives by address, which any client can name.
    by_address = location.by_address("127.0.0.1")
    sneaky = ports(announce(tracker, 7201, split="out.0.1.2", location=by_address, location_sig="00"))
    assert 7000 not in sneaky and all(p not in sneaky for p in out_port.values())
    assert sorted(ports(announce(tracker, out_port["r0h0"], split="out.0.2.2", **signed))) == [
        6000, out_port["r1h0"]]


def test_random_choice_ignores_places(make_tracker):
    from murder_core import location

    key = location.swarm_key(location.new_secret(), RELEASE.hex() + "00" * 12)
    tracker = make_tracker(peer_choice="random")
    tracker.serve(RELEASE, location_key=key)
    for index in range(16):
        place = f"dc1/r{index // 4}"
        announce(tracker, 7000 + index, location=place, location_sig=location.sign(key, place))
    assert len(ports(announce(tracker, 7000))) == 15
    assert tracker.places(RELEASE) == {"": 16}
