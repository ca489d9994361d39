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
  each group shuffled so the load spreads. A peer that is itself complete gets
  the downloading peers first, since seeds do not trade with seeds.
* **Capped answers.** At most ``min(numwant, max_peers)`` peers per announce
  (``numwant`` defaults to 50 when the client does not send it), never the
  requesting peer itself.
* **A datacenter interval.** Peers re-announce every ``interval`` seconds
  (default 5, where public trackers use 30 minutes); a peer that stops
  announcing for ``peer_ttl`` seconds (default three intervals) is dropped.
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

It runs on Tornado's HTTP server in a daemon thread with its own event loop,
so the caller (the master's deploy runner) stays synchronous::

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
import ipaddress
import logging
import random
import re
import threading
import time
from urllib.parse import unquote_to_bytes

import libtorrent
import tornado.httpserver
import tornado.netutil
import tornado.web

from murder_core.errors import InvalidInput, MurderError

log = logging.getLogger(__name__)

# Longest request URI answered; longer ones get HTTP 414.
MAX_URI_BYTES = 8 * 1024
# Longest request body accepted (announces and scrapes have none).
MAX_BODY_BYTES = 8 * 1024
# Longest header block read; beyond it Tornado closes the connection.
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
    __slots__ = ("peer_id", "ip", "port", "left", "seen", "counted")

    def __init__(self, peer_id, ip, port, left, seen):
        self.peer_id = peer_id
        self.ip = ip
        self.port = port
        self.left = left
        self.seen = seen
        # Whether this peer's "completed" event was counted in ``downloaded``.
        self.counted = False

    @property
    def complete(self):
        return self.left == 0


class _Swarm:
    """One release being deployed, under one or more info-hash keys."""

    def __init__(self):
        self.keys = set()
        self.peers = {}  # (ip, port) -> _Peer
        self.downloaded = 0

    def counts(self):
        complete = sum(1 for peer in self.peers.values() if peer.complete)
        return {
            "complete": complete,
            "incomplete": len(self.peers) - complete,
            "downloaded": self.downloaded,
        }


def pick_peers(candidates, limit, requester_complete=False, rng=random):
    """Choose up to ``limit`` peers from ``candidates`` (which excludes the requester).

    Complete peers (``left == 0``, the seeder among them) come first for a
    downloading requester; incomplete peers come first for a complete one.
    Each group is shuffled so that announces spread over the swarm.
    """
    complete = [peer for peer in candidates if peer.complete]
    incomplete = [peer for peer in candidates if not peer.complete]
    rng.shuffle(complete)
    rng.shuffle(incomplete)
    ordered = incomplete + complete if requester_complete else complete + incomplete
    return ordered[: max(0, limit)]


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
        params.setdefault(unquote_to_bytes(name), []).append(unquote_to_bytes(value))
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


def _peer_address(remote_ip):
    """The source address as an ip_address; IPv4-mapped IPv6 addresses become plain IPv4."""
    address = ipaddress.ip_address(remote_ip.split("%", 1)[0])
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address


class Tracker:
    """An HTTP tracker serving the swarms of the releases being deployed.

    host, port
        Address to listen on; ``port=0`` picks a free port (read ``.port``
        after :meth:`start`).
    interval
        Seconds between a peer's announces (the ``interval`` of every reply).
    max_peers
        Most peers returned by one announce.
    peer_ttl
        Seconds after its last announce that a silent peer is dropped;
        default three intervals.
    """

    def __init__(self, host="127.0.0.1", port=0, interval=5, max_peers=200, peer_ttl=None):
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise InvalidInput(f"tracker interval must be a whole number of seconds >= 1, got {interval!r}")
        if not isinstance(max_peers, int) or isinstance(max_peers, bool) or max_peers < 1:
            raise InvalidInput(f"tracker max_peers must be an integer >= 1, got {max_peers!r}")
        if peer_ttl is None:
            peer_ttl = 3 * interval
        if not isinstance(peer_ttl, (int, float)) or isinstance(peer_ttl, bool) or peer_ttl <= 0:
            raise InvalidInput(f"tracker peer_ttl must be a number of seconds > 0, got {peer_ttl!r}")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise InvalidInput(f"tracker port must be 0 to 65535, got {port!r}")
        self.host = host
        self.port = port
        self.interval = interval
        self.max_peers = max_peers
        self.peer_ttl = peer_ttl
        self._lock = threading.Lock()  # guards _swarms and everything in them
        self.announces = 0  # answered, for the engine's metrics
        self._swarms = {}  # info-hash key -> _Swarm (aliases share one)
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
        app = tornado.web.Application(
            [
                (r"/announce", _AnnounceHandler, {"tracker": self}),
                (r"/scrape", _ScrapeHandler, {"tracker": self}),
            ],
            log_function=_log_request,
        )
        server = tornado.httpserver.HTTPServer(
            app,
            max_header_size=MAX_HEADER_BYTES,
            max_body_size=MAX_BODY_BYTES,
            idle_connection_timeout=IDLE_CONNECTION_TIMEOUT,
            body_timeout=IDLE_CONNECTION_TIMEOUT,
        )
        server.add_sockets(sockets)
        self._loop = asyncio.get_running_loop()
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.stop()
            await server.close_all_connections()

    # -- swarms ------------------------------------------------------------

    def serve(self, *keys):
        """Serve one swarm under the given 20-byte info-hash keys (aliases of one release).

        Keys already served join the same swarm; keys of two different swarms
        cannot be merged.
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
            self._expire(swarm, time.monotonic())
            return swarm.counts()

    def _expire(self, swarm, now):
        for address, peer in list(swarm.peers.items()):
            if now - peer.seen > self.peer_ttl:
                del swarm.peers[address]
                log.debug("tracker dropped silent peer %s:%s", peer.ip, peer.port)

    # -- protocol ----------------------------------------------------------

    def announce(self, params, remote_ip):
        """Handle one announce (``params`` from :func:`parse_query`); return the reply dict.

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

        with self._lock:
            self.announces += 1
            swarm = self._swarms.get(info_hash)
            if swarm is None:
                raise TrackerFailure(f"info-hash {info_hash.hex()} is not served by this tracker")
            now = time.monotonic()
            self._expire(swarm, now)
            # A peer that moved to another port announces its old entry away.
            for other, peer in list(swarm.peers.items()):
                if peer.peer_id == peer_id and other != address:
                    del swarm.peers[other]
            if event == b"stopped":
                swarm.peers.pop(address, None)
                chosen = []
            else:
                peer = swarm.peers.get(address)
                if peer is None:
                    peer = swarm.peers[address] = _Peer(peer_id, ip, port, left, now)
                else:
                    peer.peer_id, peer.left, peer.seen = peer_id, left, now
                if event == b"completed" and not peer.counted:
                    peer.counted = True
                    swarm.downloaded += 1
                candidates = [other for key, other in swarm.peers.items() if key != address]
                chosen = pick_peers(candidates, min(numwant, self.max_peers), requester_complete=left == 0)
            counts = swarm.counts()
            chosen = [(peer.peer_id, peer.ip, peer.port) for peer in chosen]

        log.debug(
            "announce %s from %s:%s event=%s left=%s: %d peers",
            info_hash.hex(), ip, port, event.decode(errors="replace") or "-", left, len(chosen),
        )
        reply = {
            "interval": self.interval,
            "min interval": max(1, self.interval // 2),
            "complete": counts["complete"],
            "incomplete": counts["incomplete"],
        }
        if compact:
            peers4 = b"".join(
                ipaddress.ip_address(peer_ip).packed + peer_port.to_bytes(2, "big")
                for _, peer_ip, peer_port in chosen
                if ":" not in peer_ip
            )
            peers6 = b"".join(
                ipaddress.ip_address(peer_ip).packed + peer_port.to_bytes(2, "big")
                for _, peer_ip, peer_port in chosen
                if ":" in peer_ip
            )
            reply["peers"] = peers4
            if peers6:
                reply["peers6"] = peers6
        else:
            reply["peers"] = []
            for pid, peer_ip, peer_port in chosen:
                entry = {"ip": peer_ip, "port": peer_port}
                if with_peer_id:
                    entry["peer id"] = pid
                reply["peers"].append(entry)
        return reply

    def scrape(self, params):
        """Handle one scrape: counts for the requested served hashes (all served ones if none asked)."""
        wanted = [_info_hash(value) for value in params.get(b"info_hash", [])]
        files = {}
        with self._lock:
            now = time.monotonic()
            for key in wanted or list(self._swarms):
                swarm = self._swarms.get(key)
                if swarm is None:
                    continue
                self._expire(swarm, now)
                files[key] = swarm.counts()
        return {"files": files}


def bencode(value):
    """Bencode a reply with libtorrent, text keys and values as UTF-8 bytes."""
    return libtorrent.bencode(_as_bytes(value))


def _as_bytes(value):
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict):
        return {_as_bytes(key): _as_bytes(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_bytes(item) for item in value]
    return value


def _log_request(handler):
    request = handler.request
    log.debug(
        "%d %s %s from %s (%.1f ms)",
        handler.get_status(), request.method, request.path, request.remote_ip, 1000 * request.request_time(),
    )


class _TrackerHandler(tornado.web.RequestHandler):
    def initialize(self, tracker):
        self.tracker = tracker

    def compute_etag(self):
        return None

    def prepare(self):
        if len(self.request.uri) > MAX_URI_BYTES:
            log.info(
                "tracker refused a %d-byte request URI from %s", len(self.request.uri), self.request.remote_ip
            )
            raise tornado.web.HTTPError(414)

    def reply(self, answer):
        self.set_header("Content-Type", "text/plain")
        self.set_header("Cache-Control", "no-store")
        self.finish(bencode(answer))

    def get(self):
        # Tornado decodes the request line as latin-1: encode back to the raw bytes.
        params = parse_query(self.request.query.encode("latin-1"))
        try:
            answer = self.answer(params)
        except TrackerFailure as failure:
            log.info("tracker refused %s from %s: %s", self.request.path, self.request.remote_ip, failure)
            answer = {"failure reason": str(failure)}
        self.reply(answer)


class _AnnounceHandler(_TrackerHandler):
    def answer(self, params):
        return self.tracker.announce(params, self.request.remote_ip)


class _ScrapeHandler(_TrackerHandler):
    def answer(self, params):
        return self.tracker.scrape(params)
