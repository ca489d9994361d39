"""The deploy's BitTorrent tracker: a small HTTP tracker the master runs during a deploy.

It speaks the standard protocol, so any BitTorrent client (libtorrent here)
can use it:

* ``GET /announce`` (BEP 3) with compact peer lists (BEP 23; ``peers6`` for
  IPv6 peers, BEP 7) or the dictionary list form when ``compact=0``;
* ``GET /scrape`` (BEP 48), one or several ``info_hash`` parameters.

Policies, each named and tested on its own:

* **Only the releases being deployed.** The tracker answers for the
  info-hashes it was told to :meth:`Tracker.serve` and nothing else; any other
  hash gets a BitTorrent ``failure reason`` (with HTTP 200, which is what
  clients expect). A hybrid BitTorrent v2 torrent announces under two keys,
  its v1 SHA-1 hash and its SHA-256 hash truncated to 20 bytes; ``serve`` takes
  both and they share one peer list and one scrape count.
* **Completed peers first** (:func:`pick_peers`). A downloading peer gets the
  peers that have the whole release (the seeder among them) before the others,
  each group sampled at random so the load spreads. A peer that is itself complete gets
  the downloading peers first, since seeds do not trade with seeds.
* **Capped answers.** At most ``min(numwant, max_peers)`` peers per announce
  (``numwant`` defaults to 50 when the client does not send it), never the
  requesting peer itself.
* **A datacenter interval that grows with the fleet.** Peers re-announce
  every ``interval`` seconds (default 5, where public trackers use 30
  minutes) until the tracker holds more than ``interval *
  max_announce_rate`` peers; beyond that the interval handed out is
  ``peers / max_announce_rate`` (:func:`interval_for`), so 10,000 hosts send
  no more announces a second than the tracker was told to take. A peer that
  stops announcing for ``peer_ttl`` seconds (default three of the intervals
  it was handed) is dropped.
* **Constant cost per announce.** Each swarm keeps its complete and its
  downloading peers in :class:`PeerSet` groups that add, remove and sample
  in O(1), so an announce costs the same in a swarm of 10 or 10,000; silent
  peers are swept at most once a second.
* **The connection's source address.** A peer is listed under the address
  its announce came from; the ``ip`` parameter and any proxy header are
  ignored. Murder's users suffered from peers guessing their own address
  through DNS; the address the tracker sees is the one other peers on the
  same network can reach. Peers are keyed by that address and their
  announced port, so several peers may share one host.
* **Bad requests are answered, not fatal.** Garbage parameters get a
  ``failure reason``; a request URI over 8 KiB gets HTTP 414, a body over
  8 KiB HTTP 400, a header block over 64 KiB a closed connection. The tracker
  keeps serving everyone else.
* **Restartable.** :meth:`Tracker.stop` then :meth:`Tracker.start` (or a new
  ``Tracker`` on the same port) listens again on that port; the swarm is
  rebuilt from the peers' next announces, which come within one interval.

It runs on a small HTTP/1.1 server of its own (:mod:`murder_core.tracker_http`,
several times faster than a web framework for this traffic) in a daemon
thread with its own event loop, so the caller (the master's deploy runner) stays synchronous::

    with Tracker(host="10.0.0.1", port=8998) as tracker:
        tracker.serve(v1_hash, v2_hash_truncated)
        ...  # make the torrent with tracker.url as its announce URL
        tracker.swarm(v1_hash)  # {"complete": 3, "incomplete": 7, "downloaded": 3}

Using an external tracker instead
---------------------------------
Any standard HTTP or UDP tracker works, for example Debian's ``opentracker``
package. Set the ``tracker_url`` option of the deploy (in the master config,
``murder: {tracker_url: "http://tracker.example:6969/announce"}``, or as an
argument of the deploy call). When ``tracker_url`` is set the master starts no
internal tracker and the torrent announces to that URL. The external tracker
then decides which hashes it serves (opentracker: build it with
``WANT_ACCESSLIST_WHITE`` and list the info-hashes in its whitelist file, or
it serves any hash), how many peers it returns and how often peers
re-announce (opentracker's default interval is 30 minutes: lower it, a deploy
waits on announces), and it does not hand out completed peers first.
"""
import asyncio
import functools
import ipaddress
import logging
import re
import threading
import time
from urllib.parse import unquote_to_bytes

import libtorrent
import tornado.netutil

from murder_core import location, peer_choice, rack_split, tracker_http
from murder_core.errors import InvalidInput, MurderError

log = logging.getLogger(__name__)

# Longest request URI answered; longer ones get HTTP 414.
MAX_URI_BYTES = 8 * 1024
# Longest request body accepted (announces and scrapes have none).
MAX_BODY_BYTES = 8 * 1024
# Longest header block read; beyond it the connection is closed.
MAX_HEADER_BYTES = 64 * 1024
# Peers returned when the client does not say how many it wants.
DEFAULT_NUMWANT = 50
# Seconds an idle keep-alive connection stays open.
IDLE_CONNECTION_TIMEOUT = 60
# Seconds start() waits for the server thread to listen, stop() for it to end.
THREAD_TIMEOUT = 10

_EVENTS = {b"", b"empty", b"started", b"completed", b"stopped", b"paused"}
_DIGITS = re.compile(rb"[0-9]{1,20}")


class TrackerFailure(Exception):
    """An announce or scrape the tracker refuses; the message is the failure reason."""


class _Peer:
    __slots__ = ("peer_id", "ip", "port", "left", "expires", "counted", "packed", "place", "claim", "side")

    def __init__(self, peer_id, ip, port, left, expires, place, side=None):
        self.peer_id = peer_id
        self.place = place  # "<datacenter>/<rack>", see murder_core.location; None: a seeder
        # None, or which session of a split peer this is (rack_split.parse): only with a signed place.
        self.side = side
        self.claim = None  # (location, location_sig) as last announced: the place is verified once
        self.ip = ip
        self.port = port
        self.left = left
        self.expires = expires
        # Whether this peer's "completed" event was counted in ``downloaded``.
        self.counted = False
        # Its BEP 23 compact form, made once: most announces ask for compact lists.
        self.packed = ipaddress.ip_address(ip).packed + port.to_bytes(2, "big")

    @property
    def complete(self):
        return self.left == 0


class _Swarm:
    """One release being deployed, under one or more info-hash keys."""

    def __init__(self):
        self.keys = set()
        self.groups = peer_choice.Groups()
        self.peers = {}  # (ip, port) -> _Peer
        self.by_peer_id = {}  # peer_id -> (ip, port)
        self.downloaded = 0
        self.next_sweep = 0.0
        # The swarm's location key (hex; location.swarm_key), None: no place is believed.
        self.location_key = None
        self.seeders = ()  # (ip, port) of the master's seeders, in every rack-policy answer

    def add(self, address, peer):
        old = self.peers.get(address)
        if old is not None and old is not peer:
            self.groups.discard(address, old)
        self.peers[address] = peer
        self.by_peer_id[peer.peer_id] = address
        self.groups.add(address, peer)

    def remove(self, address):
        peer = self.peers.pop(address, None)
        if peer is None:
            return
        if self.by_peer_id.get(peer.peer_id) == address:
            del self.by_peer_id[peer.peer_id]
        self.groups.discard(address, peer)

    def counts(self):
        complete, incomplete = self.groups.counts()
        return {"complete": complete, "incomplete": incomplete, "downloaded": self.downloaded}


def interval_for(peers, base, max_announce_rate):
    """The announce interval for a tracker holding ``peers``: ``base``, longer when the swarm is large.

    ``peers / interval`` is the rate of announces the tracker receives; the
    interval grows so that it stays at most ``max_announce_rate`` a second.
    """
    return max(base, -(-peers // max_announce_rate))


def parse_query(raw):
    """Split a raw query string (bytes) into ``{name: [value, ...]}`` with bytes values.

    Values are percent-decoded to bytes, so a binary ``info_hash`` survives;
    ``+`` is kept literally (clients percent-encode it).
    """
    params = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        if b"%" in name:
            name = unquote_to_bytes(name)
        if b"%" in value:
            value = unquote_to_bytes(value)
        params.setdefault(name, []).append(value)
    return params


def _one(params, name, required=True):
    values = params.get(name)
    if not values:
        if required:
            raise TrackerFailure(f"missing parameter {name.decode()}")
        return None
    if len(values) > 1:
        raise TrackerFailure(f"parameter {name.decode()} given {len(values)} times")
    return values[0]


def _number(params, name, default=None):
    value = _one(params, name, required=default is None)
    if value is None:
        return default
    if not _DIGITS.fullmatch(value):
        raise TrackerFailure(f"parameter {name.decode()} is not a non-negative integer")
    return int(value)


def _info_hash(value):
    if len(value) != 20:
        raise TrackerFailure(f"info_hash must be 20 bytes, got {len(value)}")
    return value


@functools.lru_cache(maxsize=4096)
def _peer_address(remote_ip):
    """The source address as an ip_address; IPv4-mapped IPv6 addresses become plain IPv4."""
    address = ipaddress.ip_address(remote_ip.split("%", 1)[0])
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address


PEER_CHOICES = ("rack", "random")


def check_peer_choice(choice, outside_rack, outside_datacenter):
    """Raise InvalidInput for a peer choice setting the tracker cannot use, naming the key."""
    if choice not in PEER_CHOICES:
        raise InvalidInput(f"peer_choice must be one of {', '.join(PEER_CHOICES)}, got {choice!r}")
    for name, value in (("peers_outside_rack", outside_rack), ("peers_outside_datacenter", outside_datacenter)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidInput(f"{name} must be a whole number of peers >= 0, got {value!r}")
    if choice == "rack" and outside_rack < 1:
        raise InvalidInput("peer_choice rack needs peers_outside_rack >= 1: "
                           "a rack that only talks to itself can starve")


class Tracker:
    """An HTTP tracker serving the swarms of the releases being deployed.

    host, port
        Address to listen on; ``port=0`` picks a free port (read ``.port``
        after :meth:`start`).
    interval
        Seconds between a peer's announces (the ``interval`` of every reply)
        while the tracker holds few peers; see ``max_announce_rate``.
    max_peers
        Most peers returned by one announce.
    peer_ttl
        Seconds after its last announce that a silent peer is dropped;
        default three of the intervals it was handed.
    max_announce_rate
        Announces a second the tracker asks for at most: with more than
        ``interval * max_announce_rate`` peers (over all swarms) the interval
        handed out grows to ``peers / max_announce_rate``.
    peer_choice, outside_rack, outside_datacenter
        ``"rack"``: answer with peers of the requester's rack first, plus at
        least ``outside_rack`` of other racks and ``outside_datacenter`` of
        other datacenters, plus the seeders (``peer_choice.pick_near``);
        ``"random"``: uniform over the swarm (``peer_choice.pick_peers``).
    """

    def __init__(self, host="127.0.0.1", port=0, interval=5, max_peers=200, peer_ttl=None,
                 max_announce_rate=1000, peer_choice="rack", outside_rack=1, outside_datacenter=1):
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise InvalidInput(f"tracker interval must be a whole number of seconds >= 1, got {interval!r}")
        if not isinstance(max_peers, int) or isinstance(max_peers, bool) or max_peers < 1:
            raise InvalidInput(f"tracker max_peers must be an integer >= 1, got {max_peers!r}")
        if peer_ttl is not None and (
            not isinstance(peer_ttl, (int, float)) or isinstance(peer_ttl, bool) or peer_ttl <= 0
        ):
            raise InvalidInput(f"tracker peer_ttl must be a number of seconds > 0, got {peer_ttl!r}")
        if not isinstance(max_announce_rate, int) or isinstance(max_announce_rate, bool) or max_announce_rate < 1:
            raise InvalidInput(
                f"tracker max_announce_rate must be a whole number of announces a second >= 1, "
                f"got {max_announce_rate!r}"
            )
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise InvalidInput(f"tracker port must be 0 to 65535, got {port!r}")
        check_peer_choice(peer_choice, outside_rack, outside_datacenter)
        self.host = host
        self.port = port
        self.interval = interval
        self.max_peers = max_peers
        self.peer_ttl = peer_ttl
        self.max_announce_rate = max_announce_rate
        self.peer_choice = peer_choice
        self.outside_rack = outside_rack
        self.outside_datacenter = outside_datacenter
        self._lock = threading.Lock()  # guards _swarms and everything in them
        self.announces = 0  # answered, for the engine's metrics
        self._swarms = {}  # info-hash key -> _Swarm (aliases share one)
        self._peer_count = 0  # peers over all swarms, for the interval
        self._life = threading.Lock()  # guards start/stop
        self._thread = None
        self._loop = None
        self._stopping = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def url(self):
        """The announce URL to put in torrents."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/announce"

    def start(self):
        """Listen and serve in a daemon thread; return once listening (no-op if running)."""
        with self._life:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._thread = None
            try:
                sockets = tornado.netutil.bind_sockets(self.port, address=self.host)
            except (OSError, ValueError) as exc:
                raise MurderError(f"tracker cannot listen on {self.host}:{self.port}: {exc}") from exc
            self.port = sockets[0].getsockname()[1]
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run,
                args=(sockets, ready),
                name=f"murder-tracker-{self.port}",
                daemon=True,
            )
            thread.start()
            if not ready.wait(THREAD_TIMEOUT) or self._loop is None:
                thread.join(THREAD_TIMEOUT)
                for sock in sockets:
                    sock.close()
                raise MurderError(f"tracker on {self.host}:{self.port} did not start")
            self._thread = thread
            log.info(
                "tracker listening on %s (interval %ss, up to %d peers)", self.url, self.interval, self.max_peers
            )
            return self

    def stop(self):
        """Stop listening, close connections and join the thread; safe to call twice."""
        with self._life:
            thread, loop, stopping = self._thread, self._loop, self._stopping
            if thread is None:
                return
            if loop is not None:
                try:
                    loop.call_soon_threadsafe(stopping.set)
                except RuntimeError:  # the loop ended meanwhile
                    pass
            thread.join(THREAD_TIMEOUT)
            if thread.is_alive():
                log.warning(
                    "tracker thread on %s:%s did not end within %ss", self.host, self.port, THREAD_TIMEOUT
                )
            self._thread = self._loop = self._stopping = None
            log.info("tracker on %s:%s stopped", self.host, self.port)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        state = "running" if self._thread is not None else "stopped"
        return f"<Tracker {self.url} {state}>"

    def _run(self, sockets, ready):
        try:
            asyncio.run(self._serve(sockets, ready))
        except Exception:
            log.exception("tracker on %s:%s failed", self.host, self.port)
        finally:
            self._loop = None
            for sock in sockets:
                sock.close()
            ready.set()

    async def _serve(self, sockets, ready):
        self._stopping = asyncio.Event()
        server = tracker_http.Server(
            {b"/announce": self._http_announce, b"/scrape": self._http_scrape},
            max_uri=MAX_URI_BYTES,
            max_header=MAX_HEADER_BYTES,
            max_body=MAX_BODY_BYTES,
            idle_timeout=IDLE_CONNECTION_TIMEOUT,
        )
        self._loop = asyncio.get_running_loop()
        ready.set()
        await server.serve(sockets, self._stopping)

    def _http_announce(self, query, remote_ip):
        return self._http_answer(b"/announce", lambda params: self.announce(params, remote_ip), query, remote_ip)

    def _http_scrape(self, query, remote_ip):
        return self._http_answer(b"/scrape", self.scrape, query, remote_ip)

    @staticmethod
    def _http_answer(path, handle, query, remote_ip):
        try:
            answer = handle(parse_query(query))
        except TrackerFailure as failure:
            log.info("tracker refused %s from %s: %s", path.decode(), remote_ip, failure)
            answer = {b"failure reason": str(failure).encode()}
        return libtorrent.bencode(answer)

    # -- swarms ------------------------------------------------------------

    def serve(self, *keys, location_key=None, seeders=()):
        """Serve one swarm under the given 20-byte info-hash keys (aliases of one release).

        Keys already served join the same swarm; keys of two different swarms
        cannot be merged. ``location_key`` (hex, ``location.swarm_key``) is
        what the swarm's peers sign their place with; without it every peer
        is placed by its address. ``seeders`` are the ``(ip, port)`` of the
        master's seeders, handed to every peer under the rack policy.
        """
        if not keys:
            raise InvalidInput("tracker.serve needs at least one info-hash")
        for key in keys:
            if not isinstance(key, bytes) or len(key) != 20:
                raise InvalidInput(f"info-hash key must be 20 bytes, got {key!r}")
        with self._lock:
            existing = {id(self._swarms[key]): self._swarms[key] for key in keys if key in self._swarms}
            if len(existing) > 1:
                raise InvalidInput(
                    "info-hashes " + ", ".join(key.hex() for key in keys) + " belong to different swarms"
                )
            swarm = next(iter(existing.values())) if existing else _Swarm()
            if location_key is not None:
                swarm.location_key = location_key
            if seeders:
                swarm.seeders = tuple((str(_peer_address(str(host))), int(port)) for host, port in seeders)
            for key in keys:
                swarm.keys.add(key)
                self._swarms[key] = swarm
        log.info("tracker serves %s", " = ".join(key.hex() for key in keys))

    def forget(self, *keys):
        """Stop serving the swarms of these keys (all their aliases); unknown keys are ignored."""
        with self._lock:
            for key in keys:
                swarm = self._swarms.get(key)
                if swarm is None:
                    continue
                for alias in swarm.keys:
                    self._swarms.pop(alias, None)
                self._peer_count -= len(swarm.peers)
                log.info("tracker no longer serves %s", " = ".join(alias.hex() for alias in swarm.keys))

    def swarm(self, key):
        """Counts of the swarm served under ``key``: live complete and incomplete peers, and completions.

        ``downloaded`` counts the ``completed`` events received (BEP 48), each
        peer once. Raises KeyError for a key that is not served.
        """
        with self._lock:
            swarm = self._swarms.get(key)
            if swarm is None:
                raise KeyError(f"tracker does not serve info-hash {bytes(key).hex()}")
            self._expire(swarm, time.monotonic(), force=True)
            return swarm.counts()

    def places(self, key):
        """How many live peers of the swarm served under ``key`` are in each place (``location``)."""
        with self._lock:
            swarm = self._swarms.get(key)
            if swarm is None:
                raise KeyError(f"tracker does not serve info-hash {bytes(key).hex()}")
            self._expire(swarm, time.monotonic(), force=True)
            found = {place: len(group) for place, group in swarm.groups.racks.items()}
            for place, group in swarm.groups.inward.items():  # a split peer: its inward session is the host
                found[place] = found.get(place, 0) + len(group)
            return found

    def current_interval(self):
        """The interval announces are answered with now, for the peers the tracker holds."""
        return interval_for(self._peer_count, self.interval, self.max_announce_rate)

    def _ttl(self, interval):
        return self.peer_ttl if self.peer_ttl is not None else 3 * interval

    def _expire(self, swarm, now, force=False):
        # A sweep costs a pass over the swarm: at most one a second, unless a caller needs exact counts.
        if not force and now < swarm.next_sweep:
            return
        swarm.next_sweep = now + min(1.0, self._ttl(self.interval) / 4)
        for address, peer in list(swarm.peers.items()):
            if now > peer.expires:
                swarm.remove(address)
                self._peer_count -= 1
                log.debug("tracker dropped silent peer %s:%s", peer.ip, peer.port)

    # -- protocol ----------------------------------------------------------

    def announce(self, params, remote_ip):
        """Handle one announce (``params`` from :func:`parse_query`); return the reply dict (bytes keys).

        Raises TrackerFailure with the failure reason.
        """
        info_hash = _info_hash(_one(params, b"info_hash"))
        peer_id = _one(params, b"peer_id")
        if len(peer_id) != 20:
            raise TrackerFailure(f"peer_id must be 20 bytes, got {len(peer_id)}")
        port = _number(params, b"port")
        if not 1 <= port <= 65535:
            raise TrackerFailure(f"port must be 1 to 65535, got {port}")
        left = _number(params, b"left")
        _number(params, b"uploaded", default=0)
        _number(params, b"downloaded", default=0)
        numwant = _number(params, b"numwant", default=DEFAULT_NUMWANT)
        event = _one(params, b"event", required=False) or b""
        if event not in _EVENTS:
            raise TrackerFailure("event must be started, completed or stopped")
        compact = _one(params, b"compact", required=False) == b"1"
        with_peer_id = _one(params, b"no_peer_id", required=False) != b"1"
        ip = str(_peer_address(remote_ip))
        address = (ip, port)
        claimed = _one(params, location.PARAM.encode(), required=False)
        signature = _one(params, location.PARAM_SIG.encode(), required=False)
        split = _one(params, rack_split.PARAM.encode(), required=False)

        with self._lock:
            self.announces += 1
            swarm = self._swarms.get(info_hash)
            if swarm is None:
                raise TrackerFailure(f"info-hash {info_hash.hex()} is not served by this tracker")
            now = time.monotonic()
            self._expire(swarm, now)
            interval = self.current_interval()
            # A peer that moved to another port announces its old entry away.
            moved = swarm.by_peer_id.get(peer_id)
            if moved is not None and moved != address:
                swarm.remove(moved)
                self._peer_count -= 1
            if event == b"stopped":
                if address in swarm.peers:
                    swarm.remove(address)
                    self._peer_count -= 1
                chosen = []
            else:
                peer = swarm.peers.get(address)
                place = self._place(swarm, address, claimed, signature, peer)
                side = self._side(place, claimed, split)
                if peer is None or peer.place != place or peer.side != side:
                    counted = peer is not None and peer.counted
                    if peer is None:
                        self._peer_count += 1
                    peer = _Peer(peer_id, ip, port, left, now + self._ttl(interval), place, side)
                    peer.counted = counted
                else:
                    peer.peer_id, peer.left, peer.expires = peer_id, left, now + self._ttl(interval)
                peer.claim = (claimed, signature)
                swarm.add(address, peer)
                if event == b"completed" and not peer.counted:
                    peer.counted = True
                    swarm.downloaded += 1
                chosen = self._choose(swarm, peer, address, min(numwant, self.max_peers))
            counts = swarm.counts()

        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "announce %s from %s:%s event=%s left=%s: %d peers",
                info_hash.hex(), ip, port, event.decode(errors="replace") or "-", left, len(chosen),
            )
        # Bytes keys: the reply goes to libtorrent's bencoder as it is.
        reply = {
            b"interval": interval,
            b"min interval": max(1, interval // 2),
            b"complete": counts["complete"],
            b"incomplete": counts["incomplete"],
        }
        if compact:
            packed = b"".join([peer.packed for peer in chosen])
            if len(packed) == 6 * len(chosen):
                reply[b"peers"] = packed
            else:
                reply[b"peers"] = b"".join([peer.packed for peer in chosen if len(peer.packed) == 6])
                reply[b"peers6"] = b"".join([peer.packed for peer in chosen if len(peer.packed) == 18])
        else:
            reply[b"peers"] = []
            for peer in chosen:
                entry = {b"ip": peer.ip.encode(), b"port": peer.port}
                if with_peer_id:
                    entry[b"peer id"] = peer.peer_id
                reply[b"peers"].append(entry)
        return reply

    def _place(self, swarm, address, claimed, signature, peer):
        """Where the peer at ``address`` is: None for a seeder, what it signed, else its network."""
        if self.peer_choice != "rack":
            return ""
        if address in swarm.seeders:
            return None
        if peer is not None and peer.claim == (claimed, signature):
            return peer.place  # verified at an earlier announce: each costs an HMAC and an ip_network
        ip = address[0]
        if claimed is not None:
            place = location.verified(swarm.location_key, claimed, signature)
            if place is not None:
                return place
            if peer is None:  # once per peer, not at every announce
                log.info("tracker: %s claims place %r without a valid signature; placing it by address",
                         ip, claimed)
        return location.by_address(ip)

    @staticmethod
    def _side(place, claimed, split):
        """The split session an announce names; None unless its place is a signed claim (``rack_split``).

        A place by address is what any client gets (and could name in its
        claim): only one that ``location.verified`` returned counts.
        """
        if (split is None or claimed is None or place is None or location.is_by_address(place)
                or place.encode() != claimed):
            return None
        return rack_split.parse_cached(split)

    def _choose(self, swarm, peer, address, limit):
        groups = swarm.groups
        if peer.side == rack_split.INWARD:
            return peer_choice.pick_inward(groups, peer.place, limit, requester=address,
                                           requester_complete=peer.complete)
        if peer.side is not None:
            return peer_choice.pick_stripe(groups, peer.place, peer.side, limit,
                                           outside_datacenter=self.outside_datacenter, seeders=swarm.seeders,
                                           requester=address)
        if self.peer_choice != "rack" or peer.place is None:  # a seeder serves every rack alike
            return peer_choice.pick_peers(groups.everyone.complete, groups.everyone.incomplete, limit,
                                          requester=address, requester_complete=peer.complete)
        return peer_choice.pick_near(groups, peer.place, limit, outside_rack=self.outside_rack,
                                     outside_datacenter=self.outside_datacenter, seeders=swarm.seeders,
                                     requester=address, requester_complete=peer.complete,
                                     outside_seed=hash(address))

    def scrape(self, params):
        """Handle one scrape: counts for the requested served hashes (all served ones if none asked), bytes keys."""
        wanted = [_info_hash(value) for value in params.get(b"info_hash", [])]
        files = {}
        with self._lock:
            now = time.monotonic()
            for key in wanted or list(self._swarms):
                swarm = self._swarms.get(key)
                if swarm is None:
                    continue
                self._expire(swarm, now, force=True)
                files[key] = {name.encode(): count for name, count in swarm.counts().items()}
        return {b"files": files}
