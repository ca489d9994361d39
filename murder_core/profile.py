"""The libtorrent session profile for a trusted, fast, low-latency network.

One place sets libtorrent up for a datacenter; :func:`settings` returns the
settings pack and :func:`make_session` applies it together with the rate-limit
peer classes. Each choice and its reason:

============================== ======== ==================================================
setting                        value    why
============================== ======== ==================================================
enable_{in,out}going_utp       False    uTP's delay-based congestion control is far slower
                                        than TCP on a fast LAN (10 MB/s vs 100+ MB/s on
                                        loopback); nothing here needs to yield to other
                                        traffic.
enable_dht, enable_lsd,        False    Peers come from our tracker only; no traffic may
enable_upnp, enable_natpmp              leave the datacenter, and no multicast noise.
dht_bootstrap_nodes            ""       Never contact public DHT routers.
(plugins)                      no PEX   The session gets ut_metadata and smart_ban but not
                                        ut_pex: with peer exchange every peer would learn
                                        every other from its neighbours, and the tracker's
                                        rack-first answers (peer_choice) would not hold.
{in,out}_enc_policy            disabled Encryption only costs CPU; content integrity comes
                                        from the torrent's SHA-256 merkle hashes, which
                                        reach peers over Salt's encrypted channel.
unchoke_slots_limit            8        Each member uploads to 8 peers at a time (plus
                                        libtorrent's optimistic unchoke). A peer's link
                                        is shared by the TCP flows coming into it; with
                                        4 uploaders each its links were 0.75-0.80 busy
                                        while it downloaded, with 8 0.80-0.85, and the
                                        16-host deploy of make bench took 33.3-36.4 s
                                        against 36.3-38.8 s (12 Mbit/s, 16 and
                                        unlimited slots 35.0-36.4 s; docs/datacenter.md,
                                        session 16). Fewer slots won when 17 hosts kept
                                        two cores busy at 100 Mbit/s (8 hosts: 1 slot
                                        46 s, 2: 12.0 s, 4: 10.9 s, 8: 12.3 s).
choking_algorithm              fixed    Rate-based choking needs minutes to converge.
seed_choking_algorithm         fastest  Serve the peers that download fastest (round
                                        robin wastes a fast link on a slow peer).
max_out_request_queue          200      200 blocks (3.2 MB) in flight cover a 10 Gbit/s,
request_queue_time             1        1 ms link; deeper queues made peers claim more
                                        pieces from the seeder than they needed, so two
                                        peers fetched the same piece from it (measured in
                                        make bench: 8 hosts 15.4 -> 13.2 s).
suggest_mode                   off      Piece suggestions from the seeder's read cache
                                        steered peers to the same pieces (8 hosts,
                                        15.4 -> 12.7 s in make bench).
                                        On loopback the peer always waited for its disk
                                        writes, never for requests (bench/swarm.py).
whole_pieces_threshold         0        A peer that could fetch a piece from a member within
                                        20 s (libtorrent's default) asked it for runs of
                                        up to 8 MiB of neighbouring pieces, whatever their
                                        rarity or priority, so it took from the seeder
                                        pieces its stripe did not hold and other peers
                                        were fetching too. 0 picks piece by piece. (Both
                                        only matter to a downloading peer; the seeder
                                        never picks.)
initial_picker_threshold       0        The first 4 pieces were picked at random, before
                                        the stripe's priorities applied. (The BEP 6
                                        "allowed fast" pieces, random too, stay off as
                                        high_performance_seed sets them.)
send_buffer_watermark          3 MiB    Keep the socket full at LAN speed; 16 MiB on the
                                        seeder measured no faster.
disable_hash_checks            True     The seeder serves the file the master hashed into
                               seeder   the torrent a moment before; seed_mode alone
                               only     re-hashes each piece (SHA-1 and SHA-256) when it
                                        is first asked for, which cost 40 % of the CPU per
                                        byte and a third of the rate (320 -> 490 MB/s on
                                        the 1 GiB loopback bench). Peers keep every check:
                                        each piece is verified against the torrent and the
                                        file against the deploy's SHA-256, so a changed
                                        artifact on the master fails the deploy (hash
                                        failures, then a stall) and is never installed.
max_queued_disk_bytes,         7 MiB,   From high_performance_seed. Measured on the 1 GiB
aio_threads, hashing_threads   8, 1     bench: 64 MiB, 2 disk threads, 2 hashing threads
                                        and 4 MiB socket buffers change nothing beyond the
                                        noise; the peer's cache is flushed by one thread
                                        and the box is CPU bound (docs/tuning.md).
peer_timeout,                  20 s     A dead peer is noticed in seconds, not minutes
inactivity_timeout                      (Murder used 2 s with BitTornado).
peer_connect_timeout           3 s      LAN connects are sub-millisecond.
min_reconnect_time             1 s      A refused peer is retried quickly (a restarted
                                        tracker or seeder comes back at once).
min_announce_interval          1 s      Honour the tracker's short interval.
auto_scrape_{,min_}interval    2 s      Lingering peers learn quickly when the swarm is
                                        complete.
ssrf_mitigation                False    libtorrent refuses tracker URLs on loopback that do
                                        not end in /announce, so every scrape of a tracker
                                        on 127.0.0.1 failed ("blocked by SSRF mitigation")
                                        and a lingering peer never learnt the swarm was
                                        complete. The protection is for torrents from
                                        strangers; ours come through Salt's channel.
connections_limit              500      Enough for the fan-out of a large swarm.
close_redundant_connections    False    Keep the connection to the seeder when a peer
                                        finishes, so its byte count can still be read.
connection_speed               200      New connections per second at start-up.
allow_multiple_connections_    True     Several members on one address (minions on one
per_ip                                  host, containers behind one address, the demo on
                                        127.0.0.1) must all reach the seeder and each
                                        other. Off, libtorrent's default, the seeder
                                        refused every peer after the first of an address
                                        and a second deploy stalled at 0 bytes. On a
                                        trusted datacenter network one address opening
                                        several connections is no attack.
peer_fingerprint               -MS/-MP  Seeder and peer ids differ, so a peer can tell
                                        bytes from the seeder from bytes from peers.
upload/download_rate_limit     0 = off  Optional per-host caps. libtorrent exempts peers
                                        on private addresses from limits by default; the
                                        peer class filter below puts every address in the
                                        limited global class so a cap really holds.
============================== ======== ==================================================

The piece size is set by the torrent (see ``torrent.auto_piece_size``
and docs/tuning.md for the measurement).
"""
import libtorrent as lt

SEEDER_FINGERPRINT = "-MS0100-"
PEER_FINGERPRINT = "-MP0100-"

ALERTS = (
    lt.alert.category_t.error_notification
    | lt.alert.category_t.status_notification
    | lt.alert.category_t.storage_notification
    | lt.alert.category_t.tracker_notification
    # Which peers a member reached and why one dropped: named when a download stalls.
    | lt.alert.category_t.connect_notification
    | lt.alert.category_t.peer_notification
)


def settings(listen, *, seeder=False, upload_rate_limit=0,
             download_rate_limit=0, port_retries=0):
    """Return the libtorrent settings pack of the datacenter profile.

    ``listen`` is ``"ip:port"``; ``port_retries`` lets libtorrent take the next
    free port up to that many above it (a port range for firewalls).
    """
    pack = lt.high_performance_seed()
    pack.update({
        "listen_interfaces": listen,
        "max_retry_port_bind": int(port_retries),
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_tcp": True,
        "enable_incoming_tcp": True,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_bootstrap_nodes": "",
        "out_enc_policy": int(lt.enc_policy.pe_disabled),
        "in_enc_policy": int(lt.enc_policy.pe_disabled),
        "allowed_enc_level": int(lt.enc_level.pe_plaintext),
        "unchoke_slots_limit": 8,
        "choking_algorithm": int(lt.choking_algorithm_t.fixed_slots_choker),
        "seed_choking_algorithm": int(lt.seed_choking_algorithm_t.fastest_upload),
        "max_out_request_queue": 200,
        "request_queue_time": 1,
        "suggest_mode": int(lt.suggest_mode_t.no_piece_suggestions),
        "send_buffer_watermark": 3 * 1024 * 1024,
        "whole_pieces_threshold": 0,
        "initial_picker_threshold": 0,
        "disable_hash_checks": bool(seeder),
        "peer_timeout": 20,
        "inactivity_timeout": 20,
        "peer_connect_timeout": 3,
        "min_reconnect_time": 1,
        "min_announce_interval": 1,
        "auto_scrape_interval": 2,
        "auto_scrape_min_interval": 2,
        "ssrf_mitigation": False,
        "connections_limit": 500,
        "close_redundant_connections": False,
        "connection_speed": 200,
        "allow_multiple_connections_per_ip": True,
        "peer_fingerprint": SEEDER_FINGERPRINT if seeder else PEER_FINGERPRINT,
        "user_agent": "murder-for-salt/0.1",
        "upload_rate_limit": int(upload_rate_limit),
        "download_rate_limit": int(download_rate_limit),
        "alert_mask": int(ALERTS),
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        "stop_tracker_timeout": 1,
        "active_limit": 50,
        "active_downloads": 20,
        "active_seeds": 20,
    })
    return pack


# libtorrent's default plugins but peer exchange: peers come from the tracker only (the table above).
PLUGINS = ("ut_metadata", "smart_ban")


def make_session(listen, **kwargs):
    """Return an :class:`libtorrent.session` with the datacenter profile applied."""
    session = lt.session(settings(listen, **kwargs), 0)  # 0: without the default plugins, so without ut_pex
    for plugin in PLUGINS:
        session.add_extension(plugin)
    _limit_every_address(session)
    return session


def _limit_every_address(session):
    # By default private and loopback addresses fall in the local peer class,
    # which rate limits do not touch; map every address to the global class.
    every = lt.ip_filter()
    every.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    every.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1 << lt.session.global_peer_class_id)
    session.set_peer_class_filter(every)
