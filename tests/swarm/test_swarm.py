"""Real libtorrent swarms on loopback: a seeder, peers and the tracker."""
import os
import socket
import time
import urllib.parse
import urllib.request

import libtorrent as lt
import pytest

from murder_core import swarm
from murder_core.errors import StallError, VerifyError
from murder_core.pack import sha256_file
from murder_core.tracker import Tracker

MiB = 1024 * 1024
# Every member shares 127.0.0.1, as members on one host do: the profile allows it with no setting.
LOCAL = dict(listen="127.0.0.1:0")


def test_seeder_and_five_peers_all_finish_and_trade(make_release, members, tmp_path, run_all):
    release = make_release(8 * MiB)
    # A capped seeder cannot feed five peers alone in time: the peers must trade.
    seeder = swarm.Seeder(release.torrent, release.path, upload_rate_limit=4 * MiB, **LOCAL)
    members.append(seeder)
    progress = []
    peers = [
        swarm.Peer(release.torrent, str(tmp_path / f"peer{i}"), stall_timeout=20,
                   on_progress=progress.append, progress_interval=0.5, **LOCAL)
        for i in range(5)
    ]
    members.extend(peers)

    results = run_all([peer.download for peer in peers])

    for peer, result in zip(peers, results):
        assert sha256_file(result.path) == release.sha256
        peer.verify(release.sha256)
        assert result.size == 8 * MiB
        assert result.bytes_from_seeder + result.bytes_from_peers >= 8 * MiB
    assert sum(r.bytes_from_peers for r in results) > 8 * MiB
    assert seeder.stats()["uploaded"] < 5 * 8 * MiB
    assert progress and all(p.size == 8 * MiB for p in progress)
    assert any(p.bytes_done == 8 * MiB for p in progress)


@pytest.mark.fault
def test_others_finish_from_peers_after_the_seeder_stops(make_release, members, tmp_path, run_all):
    release = make_release(6 * MiB)
    seeder = swarm.Seeder(release.torrent, release.path, **LOCAL)
    members.append(seeder)
    first = swarm.Peer(release.torrent, str(tmp_path / "first"), stall_timeout=20, **LOCAL)
    # The others are held back so that they are far from done when the seeder goes.
    slow = [
        swarm.Peer(release.torrent, str(tmp_path / f"slow{i}"), stall_timeout=20,
                   download_rate_limit=256 * 1024, **LOCAL)
        for i in range(3)
    ]
    members.extend([first, *slow])

    first.download()
    seeder.close()
    behind = [peer.progress().bytes_done for peer in slow]
    assert all(done < 6 * MiB for done in behind)
    for peer in slow:
        peer._session.apply_settings({"download_rate_limit": 0})

    results = run_all([peer.download for peer in slow])

    for result in results:
        assert sha256_file(result.path) == release.sha256
    assert all(r.bytes_from_peers >= 6 * MiB - done for r, done in zip(results, behind))


def failed_announces(member):
    """How many announces of ``member`` in a row failed (libtorrent's count per tracker endpoint)."""
    return max((hashes.get("fails", 0) for entry in member._handle.trackers()
                for endpoint in entry.get("endpoints", []) for hashes in endpoint.get("info_hashes", [])),
               default=0)


@pytest.mark.fault
def test_peers_re_announce_to_a_restarted_tracker_and_finish(make_release, members, tmp_path, tracker, run_all):
    release = make_release(4 * MiB)
    seeder = swarm.Seeder(release.torrent, release.path, **LOCAL)
    # Held back so that the tracker goes away in the middle of their download.
    early = [
        swarm.Peer(release.torrent, str(tmp_path / f"early{i}"), stall_timeout=60,
                   download_rate_limit=512 * 1024, **LOCAL)
        for i in range(2)
    ]
    members.extend([seeder, *early])
    deadline = time.monotonic() + 30
    while not all(peer.progress().bytes_done for peer in early):
        assert time.monotonic() < deadline, "the peers never got data through the tracker"
        seeder._drain_alerts(200)

    port = tracker.port
    tracker.stop()  # the tracker dies, and with it everything it knew about the swarm
    deadline = time.monotonic() + 30
    while not all(failed_announces(member) for member in (seeder, *early)):
        assert time.monotonic() < deadline, "nobody noticed the tracker was gone"
        seeder._drain_alerts(200)
    assert all(peer.progress().bytes_done < 4 * MiB for peer in early)

    with Tracker(host="127.0.0.1", port=port, interval=1) as restarted:
        restarted.serve(*release.info.tracker_keys)
        # A peer that joins now can find the others only through the restarted tracker.
        late = swarm.Peer(release.torrent, str(tmp_path / "late"), stall_timeout=60, **LOCAL)
        members.append(late)

        results = run_all([peer.download for peer in (*early, late)])

        for result in results:
            assert sha256_file(result.path) == release.sha256
        # Seeder and peers all came back to the restarted tracker.
        deadline = time.monotonic() + 60
        while (counts := restarted.swarm(release.info.tracker_keys[0]))["complete"] < 4:
            assert time.monotonic() < deadline, f"not everyone re-announced: {counts}"
            late._drain_alerts(200)


@pytest.mark.fault
def test_corrupt_peer_is_survived_and_counted(make_release, members, tmp_path, run_all):
    release = make_release(4 * MiB)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    data = bytearray(open(release.path, "rb").read())
    for offset in range(0, len(data), 256 * 1024):
        data[offset + 1000 : offset + 1100] = bytes(100)
    (bad_dir / release.info.name).write_bytes(bytes(data))
    # A member that claims the whole file and serves it unchecked: a peer with bit rot.
    corrupt = swarm._Member(
        release.torrent, str(bad_dir), seeder=False, port_retries=0, upload_rate_limit=0,
        download_rate_limit=0, flags=lt.torrent_flags.seed_mode, **LOCAL,
    )
    corrupt._session.apply_settings({"disable_hash_checks": True})
    seeder = swarm.Seeder(release.torrent, release.path, upload_rate_limit=1 * MiB, **LOCAL)
    members.extend([corrupt, seeder])
    peers = [swarm.Peer(release.torrent, str(tmp_path / f"peer{i}"), stall_timeout=30, **LOCAL) for i in range(2)]
    members.extend(peers)
    for peer in peers:
        peer.connect(corrupt.endpoint)

    results = run_all([peer.download for peer in peers])

    for peer, result in zip(peers, results):
        peer.verify(release.sha256)
    assert sum(r.hash_failures for r in results) > 0


@pytest.mark.fault
def test_verify_refuses_wrong_sha256(make_release, members, tmp_path):
    release = make_release(1 * MiB)
    members.append(swarm.Seeder(release.torrent, release.path, **LOCAL))
    peer = swarm.Peer(release.torrent, str(tmp_path / "peer"), stall_timeout=20, **LOCAL)
    members.append(peer)
    peer.download()
    with pytest.raises(VerifyError, match="SHA-256"):
        peer.verify("0" * 64)


@pytest.mark.fault
def test_peer_without_seeder_fails_with_stall_error(make_release, members, tmp_path):
    release = make_release(1 * MiB)
    peer = swarm.Peer(release.torrent, str(tmp_path / "peer"), stall_timeout=2, **LOCAL)
    members.append(peer)
    started = time.monotonic()
    with pytest.raises(StallError, match=r"stalled: no data for 2 s \(0 of 1048576 bytes"):
        peer.download()
    waited = time.monotonic() - started
    assert 2 <= waited < 10


def test_finished_peer_lingers_until_swarm_complete(make_release, members, tmp_path, tracker):
    release = make_release(2 * MiB)
    seeder = swarm.Seeder(release.torrent, release.path, **LOCAL)
    first = swarm.Peer(release.torrent, str(tmp_path / "first"), stall_timeout=20, **LOCAL)
    members.extend([seeder, first])
    first.download()
    # Only complete members in the swarm now: lingering ends on the tracker's word.
    assert first.linger(60) == "swarm complete"
    assert tracker.swarm(release.info.tracker_keys[0])["incomplete"] == 0


@pytest.mark.fault
def test_linger_limit_ends_seeding_when_a_peer_is_stuck(make_release, members, tmp_path, tracker):
    release = make_release(2 * MiB)
    seeder = swarm.Seeder(release.torrent, release.path, **LOCAL)
    first = swarm.Peer(release.torrent, str(tmp_path / "first"), stall_timeout=20, **LOCAL)
    # A peer that announces but never gets anywhere keeps the swarm incomplete.
    stuck = swarm.Peer(release.torrent, str(tmp_path / "stuck"), download_rate_limit=1024, **LOCAL)
    members.extend([seeder, first, stuck])
    first.download()
    deadline = time.monotonic() + 30
    while tracker.swarm(release.info.tracker_keys[0])["incomplete"] < 1:
        assert time.monotonic() < deadline, "the stuck peer never announced"
        stuck._drain_alerts(200)
    assert first.linger(3) == "linger limit"


def test_a_peer_fetches_its_stripe_of_pieces_first(make_release, members, tmp_path):
    release = make_release(4 * MiB)  # 16 pieces of 256 KiB
    # A slow seeder, so the order in which pieces arrive can be watched, and one
    # connection between the two (a second one would fetch other pieces alongside).
    one = dict(LOCAL, libtorrent={"allow_multiple_connections_per_ip": False})
    members.append(swarm.Seeder(release.torrent, release.path, upload_rate_limit=1 * MiB, **one))
    peer = swarm.Peer(release.torrent, str(tmp_path / "peer"), stall_timeout=20, stripe=(1, 4), **one)
    members.append(peer)
    arrived = []
    deadline = time.monotonic() + 30
    while len(arrived) < 3 and time.monotonic() < deadline:
        pieces = peer.status().pieces
        arrived += [index for index, have in enumerate(pieces) if have and index not in arrived]
        time.sleep(0.02)
    # The first requests go to the stripe (1, 5, 9, 13). Only the first three
    # arrivals are certain: the stripe's last piece was seen to trail others that
    # were already partly in (libtorrent prefers finishing partial pieces).
    # By chance alone all three would be in the stripe 1 time in 140.
    assert set(arrived[:3]) <= {1, 5, 9, 13}, arrived
    assert peer.status().num_peers == 1
    result = peer.download()
    assert sha256_file(result.path) == release.sha256


def test_download_cap_applies_to_private_addresses(make_release, members, tmp_path):
    release = make_release(3 * MiB)
    members.append(swarm.Seeder(release.torrent, release.path, **LOCAL))
    peer = swarm.Peer(release.torrent, str(tmp_path / "peer"), download_rate_limit=1 * MiB,
                      stall_timeout=20, **LOCAL)
    members.append(peer)
    result = peer.download()
    # Uncapped, 3 MiB over loopback takes a fraction of a second; libtorrent
    # exempts 127.0.0.1 from caps unless the profile's peer class filter works.
    assert result.seconds >= 1.5


def test_ordinary_client_joins_the_swarm(make_release, members, tmp_path):
    release = make_release(2 * MiB)
    members.append(swarm.Seeder(release.torrent, release.path, **LOCAL))
    # A stock libtorrent client: default settings (uTP on, encryption enabled).
    client = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
                         "enable_upnp": False, "enable_natpmp": False, "dht_bootstrap_nodes": "",
                         "allow_multiple_connections_per_ip": True})
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(lt.bdecode(release.torrent))
    params.save_path = str(tmp_path / "client")
    handle = client.add_torrent(params)
    try:
        deadline = time.monotonic() + 60
        while not handle.status().is_seeding and time.monotonic() < deadline:
            client.wait_for_alert(200)
            client.pop_alerts()
        assert handle.status().is_seeding
        assert sha256_file(str(tmp_path / "client" / release.info.name)) == release.sha256
    finally:
        client.remove_torrent(handle)


def test_peer_takes_the_next_port_when_its_first_is_busy(make_release, members, tmp_path):
    release = make_release(1 * MiB)
    seeder = swarm.Seeder(release.torrent, release.path, **LOCAL)
    members.append(seeder)
    # Another member holds the first port of the range, as minions on one host do.
    taken = seeder.listen_port
    peer = swarm.Peer(release.torrent, str(tmp_path / "peer"), listen=f"127.0.0.1:{taken}", port_retries=20,
                      stall_timeout=20)
    members.append(peer)
    result = peer.download()
    assert peer.listen_port != taken
    assert sha256_file(result.path) == release.sha256


def test_a_listen_address_that_cannot_be_bound_is_not_fatal(make_release, members, tmp_path):
    release = make_release(1 * MiB)
    members.append(swarm.Seeder(release.torrent, release.path, **LOCAL))
    # 192.0.2.1 (TEST-NET-1) is on no interface here: binding it fails locally and
    # libtorrent reports listen_failed_alert, as for a port another member holds.
    peer = swarm.Peer(release.torrent, str(tmp_path / "peer"), listen="127.0.0.1:0,192.0.2.1:0",
                      stall_timeout=20)
    members.append(peer)
    result = peer.download()
    assert peer.error is None
    assert sha256_file(result.path) == release.sha256


def test_seeder_closes_without_stopped_announce_only_when_asked(make_release, members, tmp_path):
    # A tracker that forgets nobody on its own: only a "stopped" announce takes a member off.
    with Tracker(host="127.0.0.1", port=0, interval=1, peer_ttl=600) as tracker:
        release = make_release(1 * MiB, served_by=tracker)
        key = release.info.tracker_keys[0]
        quiet = swarm.Seeder(release.torrent, release.path, **LOCAL)
        told = swarm.Seeder(release.torrent, release.path, **LOCAL)
        peer = swarm.Peer(release.torrent, str(tmp_path / "peer"), stall_timeout=20, **LOCAL)
        members.extend([quiet, told, peer])
        peer.download()  # the seeders close with a peer connected, as at the end of a deploy
        deadline = time.monotonic() + 30
        while tracker.swarm(key)["complete"] < 3:
            assert time.monotonic() < deadline, f"the tracker never saw all three members: {tracker.swarm(key)}"
            time.sleep(0.1)
        told.close()
        # With a peer connected, libtorrent sends "stopped" about a second late.
        while tracker.swarm(key)["complete"] > 2:
            assert time.monotonic() < deadline, "the seeder closed normally never announced stopped"
            time.sleep(0.1)
        quiet.close(announce_stop=False)  # what a deploy does when its own tracker stops next
        # Watch for longer than that delay: the quiet seeder stays on the tracker's books.
        watch_until = time.monotonic() + 3
        while time.monotonic() < watch_until:
            assert tracker.swarm(key)["complete"] == 2, "the seeder announced stopped although told not to"
            time.sleep(0.1)
        peer.close()


def test_peers_on_one_address_all_download_from_the_seeder(make_release, members, tmp_path):
    # Minions on one host (or the demo on 127.0.0.1) share an address with each
    # other and the seeder. With libtorrent's default the seeder keeps one
    # connection per address: the first peer got the release, and the next one
    # (a second deploy, made while the first peer still seeded) stalled at 0 bytes.
    release = make_release(4 * MiB)
    seeder = swarm.Seeder(release.torrent, release.path, listen="127.0.0.1:0")
    members.append(seeder)
    for index in range(3):
        peer = swarm.Peer(release.torrent, str(tmp_path / f"peer{index}"), listen="127.0.0.1:0", stall_timeout=10)
        members.append(peer)  # stays connected, as a lingering peer does
        peer.connect(seeder.endpoint)
        assert sha256_file(peer.download().path) == release.sha256


@pytest.mark.bad_input
def test_a_stalled_download_names_the_peers_it_tried_and_their_answer(make_release, members, tmp_path):
    release = make_release(1 * MiB)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens there once the socket is closed
    peer = swarm.Peer(release.torrent, str(tmp_path / "peer"), listen="127.0.0.1:0", stall_timeout=3)
    members.append(peer)
    peer.connect(("127.0.0.1", closed))
    with pytest.raises(StallError) as stalled:
        peer.download()
    assert f"peers tried: 127.0.0.1:{closed} (Connection refused" in str(stalled.value)


def test_finished_peers_stop_lingering_when_the_deploys_tracker_stops(make_release, tmp_path, members, run_all):
    # The master stops its tracker and seeder as soon as every host reported;
    # a peer whose last scrape still counted an unfinished host must not then
    # seed for its whole linger limit with nobody left to serve.
    tracker = Tracker(host="127.0.0.1", port=0, interval=1).start()
    seeder = None
    try:
        release = make_release(8 * MiB, served_by=tracker)
        seeder = swarm.Seeder(release.torrent, release.path, **LOCAL)
        peers = [swarm.Peer(release.torrent, str(tmp_path / f"peer{i}"), stall_timeout=10, **LOCAL)
                 for i in range(3)]
        members.extend(peers)
        for peer in peers:
            peer.connect(seeder.endpoint)
        run_all([peer.download for peer in peers])
    finally:
        if seeder is not None:
            seeder.close(announce_stop=False)
        tracker.stop()
    reasons = run_all([lambda peer=peer: peer.linger(60) for peer in peers])
    assert set(reasons) <= {"swarm complete", "tracker gone"}, reasons


def _speak_badly(endpoint, unknown_hash):
    """What a broken or foreign client sends: noise, a handshake for another torrent, a handshake cut short."""
    host, port = endpoint
    handshake = b"\x13BitTorrent protocol" + bytes(8) + unknown_hash + b"-XX0001-badclient123"
    for payload in (os.urandom(300), handshake + os.urandom(64), handshake[:30], b"GET / HTTP/1.0\r\n\r\n"):
        try:
            with socket.create_connection((host, int(port)), timeout=2) as connection:
                connection.sendall(payload)
                connection.settimeout(0.2)
                try:
                    connection.recv(1024)
                except OSError:
                    pass
        except OSError:
            pass


@pytest.mark.bad_input
def test_clients_speaking_the_protocol_badly_do_not_stop_the_deploy(make_release, members, tmp_path, tracker,
                                                                    run_all):
    release = make_release(4 * MiB)
    seeder = swarm.Seeder(release.torrent, release.path, upload_rate_limit=2 * MiB, **LOCAL)
    members.append(seeder)
    peers = [swarm.Peer(release.torrent, str(tmp_path / f"peer{i}"), stall_timeout=30, **LOCAL) for i in range(2)]
    members.extend(peers)
    unknown = bytes(range(20))

    def pester():
        for _ in range(2):
            for member in [seeder, *peers]:
                _speak_badly(member.endpoint, unknown)
        # An announce for a torrent this tracker does not serve is answered with the reason, by its hash.
        query = urllib.parse.urlencode({"info_hash": unknown, "peer_id": b"-XX0001-badclient123", "port": 7001,
                                        "uploaded": 0, "downloaded": 0, "left": 0})
        with urllib.request.urlopen(f"{tracker.url}?{query}", timeout=5) as answer:
            return lt.bdecode(answer.read())

    *results, refused = run_all([peer.download for peer in peers] + [pester])

    for peer, result in zip(peers, results):
        assert sha256_file(result.path) == release.sha256
    assert unknown.hex().encode() in refused[b"failure reason"] and b"not served" in refused[b"failure reason"]
    assert tracker.swarm(release.info.tracker_keys[0])["complete"] >= 1


# Members on addresses of their own (all loopback), so that a peer can leave the seeder's address alone.
SEEDER_AT, PEER_AT = "127.0.0.2", ("127.0.0.3", "127.0.0.4")


def _seeder_apart(release, **limits):
    own = {"outgoing_interfaces": SEEDER_AT}  # its own connections to peers come from its address too
    return swarm.Seeder(release.torrent, release.path, listen=f"{SEEDER_AT}:0", libtorrent=own, **limits)


def test_peers_leave_the_seeder_once_their_stripes_are_in(make_release, members, run_all, tmp_path):
    release = make_release(4 * MiB)  # 16 pieces of 256 KiB: stripes of 8
    seeder = _seeder_apart(release, upload_rate_limit=1 * MiB)
    members.append(seeder)
    peers = [swarm.Peer(release.torrent, str(tmp_path / f"peer{i}"), listen=f"{PEER_AT[i]}:0", stall_timeout=20,
                        stripe=(i, 2), leave_seeders=[SEEDER_AT], seeder_fallback=15) for i in range(2)]
    members.extend(peers)
    for i, peer in enumerate(peers):
        peer.connect(seeder.endpoint, peers[1 - i].endpoint)
    results = run_all([peer.download for peer in peers])
    for result in results:
        assert sha256_file(result.path) == release.sha256 and not result.back_to_seeder, result
    # A peer whose stripe came in last may have had the rest already: it had nothing to leave for.
    assert any(result.left_seeder for result in results), results
    for peer, result in zip(peers, results):
        if result.left_seeder:  # gone from the seeder, still with the other peer
            assert {p.ip[0] for p in peer._handle.get_peer_info()} <= {"127.0.0.1", *PEER_AT}
    # Each stripe left the seeder about once; staying, a peer took from it whatever it lacked.
    assert sum(result.bytes_from_seeder for result in results) < 1.5 * release.info.size, results


def test_a_peer_whose_stripe_partner_never_comes_stays_with_the_seeder(make_release, members, tmp_path):
    release = make_release(4 * MiB)
    members.append(_seeder_apart(release, upload_rate_limit=2 * MiB))
    alone = swarm.Peer(release.torrent, str(tmp_path / "peer"), listen=f"{PEER_AT[0]}:0", stall_timeout=20,
                       stripe=(0, 2), leave_seeders=[SEEDER_AT], seeder_fallback=1)
    members.append(alone)
    alone.connect(members[0].endpoint)
    result = alone.download()
    assert sha256_file(result.path) == release.sha256
    # Nobody else to take the rest from: leaving would only have waited out the fallback.
    assert not result.left_seeder and not result.back_to_seeder, result
    assert result.bytes_from_peers == 0 and result.bytes_from_seeder >= release.info.size, result


def test_a_peer_whose_stripe_partner_gives_nothing_goes_back_to_the_seeder(make_release, members, run_all,
                                                                          tmp_path):
    release = make_release(4 * MiB)
    members.append(_seeder_apart(release, upload_rate_limit=2 * MiB))
    waiting = swarm.Peer(release.torrent, str(tmp_path / "peer"), listen=f"{PEER_AT[0]}:0", stall_timeout=20,
                         stripe=(0, 2), leave_seeders=[SEEDER_AT], seeder_fallback=1)
    # Its partner is there but sends next to nothing (a host that is overloaded, or failing).
    mute = swarm.Peer(release.torrent, str(tmp_path / "mute"), listen=f"{PEER_AT[1]}:0", stall_timeout=60,
                      upload_rate_limit=1, download_rate_limit=64 * 1024)
    members.extend([waiting, mute])
    waiting.connect(members[0].endpoint, mute.endpoint)
    mute.connect(members[0].endpoint)
    result = waiting.download()
    assert sha256_file(result.path) == release.sha256
    assert result.left_seeder and result.back_to_seeder, result


def test_a_peer_sharing_the_seeders_address_with_another_stays_with_the_seeder(make_release, members, run_all,
                                                                             tmp_path):
    release = make_release(2 * MiB)
    members.append(swarm.Seeder(release.torrent, release.path, upload_rate_limit=1 * MiB, **LOCAL))
    peers = [swarm.Peer(release.torrent, str(tmp_path / f"peer{i}"), stall_timeout=20, stripe=(i, 2),
                        leave_seeders=["127.0.0.1"], seeder_fallback=15, **LOCAL) for i in range(2)]
    members.extend(peers)
    for i, peer in enumerate(peers):
        peer.connect(members[0].endpoint, peers[1 - i].endpoint)
    for result in run_all([peer.download for peer in peers]):
        assert not result.left_seeder, result  # blocking 127.0.0.1 would have cut the other peer off
