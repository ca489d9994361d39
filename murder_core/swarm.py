"""The seeder and the peer: libtorrent sessions with the datacenter profile.

A :class:`Seeder` serves an artifact it already has (``seed_mode``: no
re-hash of a file the master just hashed). A :class:`Peer` downloads into a
directory, reports :class:`Progress` through a callback, fails with
:class:`StallError` when no byte arrives for ``stall_timeout`` seconds,
checks the finished file against the deploy's SHA-256, and lingers as a
seeder until the swarm is complete (see ``policy.LingerPolicy``).

A :class:`SplitPeer` is two :class:`Peer` sessions on one release, so that
each piece enters a rack once (``murder_core.rack_split``).

Peers are ordinary BitTorrent clients: any client that speaks the protocol
can join a swarm through the tracker or connect to a peer's port.
"""
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass

import libtorrent as lt

from murder_core import policy, profile, rack_split, torrent as torrent_mod
from murder_core.errors import InvalidInput, MurderError, StallError, VerifyError
from murder_core.pack import sha256_file

log = logging.getLogger(__name__)

TICK_SECONDS = 0.2
# Longest wait for libtorrent to write its buffered pieces to the file.
FLUSH_SECONDS = 120
# Members whose outcome a member keeps for its stall message (a large swarm has thousands).
MAX_PEERS_TRIED = 64


@dataclass(frozen=True)
class Progress:
    """One progress report of a peer."""

    bytes_done: int
    size: int
    rate: float  # payload bytes per second, as libtorrent measures it
    bytes_from_seeder: int
    bytes_from_peers: int
    peers: int
    hash_failures: int

    def as_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class DownloadResult:
    """What a finished download reports."""

    path: str
    size: int
    seconds: float
    bytes_from_seeder: int
    bytes_from_peers: int
    hash_failures: int
    left_seeder: bool = False  # left the seeder once its stripe was in (policy.SeederLeave)
    back_to_seeder: bool = False  # and went back to it, as nothing else arrived
    rescued: bool = False  # a split peer whose rack gave nothing for a while: it fetched the rest from outside
    bytes_from_outside: int = None  # a split peer: what its outward session took (crossed the rack's uplink)

    def as_dict(self):
        return asdict(self)


class _Reporter:
    """Progress reports through ``on_progress``, at most one every ``progress_interval`` seconds."""

    def _init_reports(self, on_progress, progress_interval):
        self._on_progress = on_progress
        self._throttle = policy.Throttle(float(progress_interval))

    def heartbeat(self):
        """Report progress if ``progress_interval`` has passed: for the work after the download."""
        self._report(time.monotonic())

    def _report(self, now, force=False):
        if self._on_progress and self._throttle.ready(now, force):
            try:
                self._on_progress(self.progress())
            except Exception:  # a reporting failure must not fail the download
                log.exception("progress callback failed")


def _check_deadline(info, deadline, now, bytes_done):
    """Raise StallError once ``deadline`` (a ``time.monotonic()`` value, or None) has passed."""
    if deadline is not None and now > deadline:
        raise StallError(f"download of {info.name} did not finish before the deadline "
                         f"({bytes_done} of {info.size} bytes)")


def _endpoint(address):
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class _Member:
    """One libtorrent session holding one torrent, seeder or peer."""

    def __init__(self, torrent, save_dir, *, listen, seeder, port_retries,
                 upload_rate_limit, download_rate_limit, flags, libtorrent=None):
        self.info = torrent_mod.describe(torrent)
        self.save_dir = os.path.abspath(save_dir)
        self.path = os.path.join(self.save_dir, self.info.name)
        self.hash_failures = 0
        self.error = None
        # "ip:port" -> what the last connection to that member came to; named when a download stalls.
        self.peers_tried = {}
        self._tracker = policy.TrackerHealth()
        self.tracker_replies = 0  # answers to announces and scrapes: fresh counts in linger
        self._flushed = False
        # Called with (piece, bytes) for each piece this member finishes (SplitPeer's hand-over), or None.
        self._piece_sink = None
        self._told = set()  # (host, port) it was told to connect to: met again when it returns to them
        self._session = profile.make_session(
            listen,
            seeder=seeder,
            port_retries=port_retries,
            upload_rate_limit=upload_rate_limit,
            download_rate_limit=download_rate_limit,
        )
        if libtorrent:
            # The operator's overrides of the profile (config key ``libtorrent``).
            self._session.apply_settings(dict(libtorrent))
        params = lt.add_torrent_params()
        params.ti = torrent_mod.load(torrent)
        params.save_path = self.save_dir
        params.flags = (params.flags | flags) & ~lt.torrent_flags.auto_managed & ~lt.torrent_flags.paused
        self._handle = self._session.add_torrent(params)

    @property
    def listen_port(self):
        return self._session.listen_port()

    @property
    def endpoint(self):
        """``(ip, port)`` other members connect to."""
        host, _ = _endpoint(self._session.get_settings()["listen_interfaces"].split(",")[0])
        return host, self.listen_port

    def status(self):
        return self._handle.status()

    def connect(self, *endpoints):
        """Connect to members directly, without waiting for the tracker."""
        for host, port in endpoints:
            self._told.add((host, int(port)))
            self._handle.connect_peer((host, int(port)))

    def _drain_alerts(self, wait_ms=0):
        if wait_ms:
            self._session.wait_for_alert(wait_ms)
        for alert in self._session.pop_alerts():
            if isinstance(alert, lt.cache_flushed_alert):
                self._flushed = True
            elif isinstance(alert, lt.piece_finished_alert) and self._piece_sink is not None:
                self._handle.read_piece(alert.piece_index)
            elif isinstance(alert, lt.read_piece_alert) and self._piece_sink is not None:
                if alert.error.value():
                    self.error = f"reading back piece {alert.piece}: {alert.error.message()}"
                else:
                    self._piece_sink(alert.piece, alert.buffer)
            elif isinstance(alert, lt.hash_failed_alert):
                self.hash_failures += 1
                log.info("%s: %s", self.info.name, alert.message())
            elif isinstance(alert, (lt.file_error_alert, lt.torrent_error_alert)):
                self.error = alert.message()
                log.warning("%s: %s", self.info.name, self.error)
            elif isinstance(alert, lt.listen_failed_alert):
                # Not fatal: with a port range libtorrent goes on to the next port,
                # and a member that listens nowhere still connects out to the others.
                log.info("%s: %s", self.info.name, alert.message())
            elif isinstance(alert, lt.peer_connect_alert):
                self._tried(alert.endpoint, "connected")
            elif isinstance(alert, (lt.peer_disconnected_alert, lt.peer_error_alert)):
                self._tried(alert.endpoint, f"{alert.error.message()} ({lt.operation_name(alert.op)})")
            elif isinstance(alert, (lt.tracker_reply_alert, lt.scrape_reply_alert)):
                self._tracker.answer(str(alert.local_endpoint))
                self.tracker_replies += 1
            elif isinstance(alert, (lt.tracker_error_alert, lt.scrape_failed_alert)):
                # Only a failure with a cause counts (a refused connection, the
                # tracker's own refusal); libtorrent also reports dropped scrapes.
                if alert.error.value():
                    self._tracker.error(str(alert.local_endpoint))
                    log.info("%s: %s (%s)", self.info.name, alert.message(), alert.error.message())

    @property
    def tracker_failing(self):
        """Whether the tracker's last word was an error at every local endpoint (``policy.TrackerHealth``)."""
        return self._tracker.gone

    def _tried(self, endpoint, outcome):
        key = f"{endpoint[0]}:{endpoint[1]}"
        if key in self.peers_tried or len(self.peers_tried) < MAX_PEERS_TRIED:
            self.peers_tried[key] = outcome

    def tried_line(self, limit=8):
        """``ip:port (what happened), …`` for the members this one tried, or ``none``."""
        items = sorted(self.peers_tried.items())
        shown = ", ".join(f"{key} ({outcome})" for key, outcome in items[:limit])
        more = f" and {len(items) - limit} more" if len(items) > limit else ""
        return (shown + more) or "none"

    @property
    def closed(self):
        return self._session is None

    def close(self, announce_stop=True):
        """Stop the session: announce ``stopped`` and close every connection.

        ``announce_stop=False`` skips the ``stopped`` announce, for a tracker
        that is about to stop too: while peers are connected, libtorrent waits
        up to ``stop_tracker_timeout`` (1 s) for that announce.
        """
        if self._session is None:
            return
        if not announce_stop:
            self._session.apply_settings({"stop_tracker_timeout": 0})
        try:
            self._session.remove_torrent(self._handle)
        except RuntimeError:
            pass
        self._session.pause()
        self._session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Seeder(_Member):
    """Serve an artifact the master already has, without re-hashing it."""

    def __init__(self, torrent, artifact, *, listen="127.0.0.1:0",
                 port_retries=0, upload_rate_limit=0, super_seeding=False, libtorrent=None):
        artifact = os.path.abspath(artifact)
        name = torrent_mod.describe(torrent).name
        if os.path.basename(artifact) != name or not os.path.isfile(artifact):
            raise InvalidInput(f"seeder needs the artifact {name}; {artifact} does not match")
        super().__init__(
            torrent, os.path.dirname(artifact), listen=listen, seeder=True, port_retries=port_retries,
            upload_rate_limit=upload_rate_limit, download_rate_limit=0,
            flags=lt.torrent_flags.seed_mode | (lt.torrent_flags.super_seeding if super_seeding else 0),
            libtorrent=libtorrent,
        )

    def stats(self):
        """Return ``{"uploaded": payload bytes sent, "peers": connected peers}``."""
        self._drain_alerts()
        status = self.status()
        return {"uploaded": status.total_payload_upload, "peers": status.num_peers}

    def uploaded(self):
        """Payload bytes sent so far, without taking the session's alerts (safe beside :meth:`stats`'s thread)."""
        return self.status().total_payload_upload


class Peer(_Member, _Reporter):
    """Download a release artifact from the swarm, then seed it for a while.

    ``stripe`` (``policy.stripe``) puts a share of the pieces first; a split
    peer's outward session gives its ``priorities`` instead (0: not wanted)
    and ``leave_after``, the pieces after which it leaves ``leave_seeders``.
    """

    def __init__(self, torrent, save_dir, *, listen="127.0.0.1:0",
                 port_retries=0, upload_rate_limit=0, download_rate_limit=0,
                 stall_timeout=30.0, on_progress=None, progress_interval=2.0, libtorrent=None,
                 stripe=None, leave_seeders=(), seeder_fallback=10.0, priorities=None, leave_after=None):
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(
            torrent, save_dir, listen=listen, seeder=False, port_retries=port_retries, upload_rate_limit=upload_rate_limit,
            download_rate_limit=download_rate_limit, flags=0, libtorrent=libtorrent,
        )
        self.stall_timeout = float(stall_timeout)
        self._init_reports(on_progress, progress_interval)
        self._from_seeder = policy.SeederCounter()
        # The seeders' addresses this peer leaves once its stripe is in (policy.SeederLeave).
        self._leave_seeders = set(leave_seeders) if stripe is not None or leave_after is not None else set()
        self._leave = policy.SeederLeave(seeder_fallback, time.monotonic()) if self._leave_seeders else None
        self._stripe_left = []
        if priorities is not None:
            # A split peer's outward session (rack_split.Assignment): its stripes only, its share first.
            self._handle.prioritize_pieces(list(priorities))
            self._stripe_left = list(leave_after or ())
        elif stripe is not None:
            # (index, count) from policy.stripe: fetch that share of the pieces first.
            num_pieces = self._handle.torrent_file().num_pieces()
            self._handle.prioritize_pieces(policy.stripe_priorities(num_pieces, *stripe))
            self._stripe_left = [piece for piece in range(num_pieces) if piece % stripe[1] == stripe[0]]

    def _count_sources(self):
        for peer in self._handle.get_peer_info():
            if peer.pid.to_bytes().startswith(profile.SEEDER_FINGERPRINT.encode()):
                self._from_seeder.update((peer.ip, peer.pid.to_bytes()), peer.total_download)

    def _follow_seeder_policy(self, bytes_done, now):
        """Leave the seeders once the stripe is in; go back to them when nothing else arrives."""
        if self._leave is None:
            return
        self._stripe_left = [piece for piece in self._stripe_left if not self._handle.have_piece(piece)]
        others = set()
        if not self._stripe_left and not self._leave.left:
            others = {peer.ip[0] for peer in self._handle.get_peer_info()
                      if not peer.pid.to_bytes().startswith(profile.SEEDER_FINGERPRINT.encode())}
        # Only with another peer to take the rest from: alone with the seeder (its stripe partners gone,
        # or not yet connected) leaving would only wait out the fallback (seen in an operator trial).
        decision = self._leave.decide(not self._stripe_left and bool(others), bytes_done, now)
        if decision == policy.SeederLeave.LEAVE:
            if self._leave_seeders & others:
                # A peer shares the seeder's address (loopback, a master that is also a minion):
                # blocking the address would cut that peer off too.
                log.info("stripe complete; staying with the seeder, whose address %s a peer shares",
                         ", ".join(sorted(self._leave_seeders & others)))
                self._leave = None
                return
            blocked = lt.ip_filter()
            for address in sorted(self._leave_seeders):
                blocked.add_rule(address, address, 1)  # 1: no connection to or from it
            self._session.apply_settings({"apply_ip_filter_to_trackers": False})  # the tracker may be there too
            self._session.set_ip_filter(blocked)
            log.info("stripe complete: leaving the seeder %s to the peers still fetching theirs",
                     ", ".join(sorted(self._leave_seeders)))
        elif decision == policy.SeederLeave.RETURN:
            self._back_to_seeders()
            log.info("nothing arrived for %g s since leaving the seeder: back to it", self._leave.fallback)

    def _back_to_seeders(self):
        """Lift the block on the seeders and connect to them now, not at the next announce."""
        self._session.set_ip_filter(lt.ip_filter())
        self.connect(*[endpoint for endpoint in self._told if endpoint[0] in self._leave_seeders])

    def progress(self):
        """Return the current :class:`Progress`."""
        status = self.status()
        from_seeder = min(self._from_seeder.total, status.total_payload_download)
        return Progress(
            bytes_done=status.total_wanted_done,
            size=self.info.size,
            rate=float(status.download_payload_rate),
            bytes_from_seeder=from_seeder,
            bytes_from_peers=max(status.total_payload_download - from_seeder, 0),
            peers=status.num_peers,
            hash_failures=self.hash_failures,
        )

    def download(self, deadline=None):
        """Download until the artifact is complete; return a :class:`DownloadResult`.

        Raises :class:`StallError` after ``stall_timeout`` seconds without a
        new byte (or when ``deadline``, a ``time.monotonic()`` value, passes)
        and :class:`MurderError` on a storage error such as a full disk.
        """
        started = time.monotonic()
        stall = policy.StallDetector(self.stall_timeout, started)
        while True:
            self._drain_alerts(int(TICK_SECONDS * 1000))
            now = time.monotonic()
            status = self.status()
            self._count_sources()
            if self.error or status.errc.value():
                reason = self.error or status.errc.message()
                raise MurderError(f"download of {self.info.name} failed: {reason}")
            if status.is_seeding:
                break
            self._follow_seeder_policy(status.total_wanted_done, now)
            if stall.stalled(status.total_wanted_done, now):
                raise StallError(
                    f"download of {self.info.name} stalled: no data for {self.stall_timeout:g} s "
                    f"({status.total_wanted_done} of {self.info.size} bytes, "
                    f"{status.num_peers} peers connected, tracker: {status.current_tracker or 'none answered'}; "
                    f"peers tried: {self.tried_line()})"
                )
            _check_deadline(self.info, deadline, now, status.total_wanted_done)
            self._report(now)
        self._count_sources()
        self._flush()
        self._report(time.monotonic(), force=True)
        done = self.progress()
        return DownloadResult(
            path=self.path,
            size=self.info.size,
            seconds=time.monotonic() - started,
            bytes_from_seeder=done.bytes_from_seeder,
            bytes_from_peers=done.bytes_from_peers,
            hash_failures=self.hash_failures,
            left_seeder=bool(self._leave and self._leave.left),
            back_to_seeder=bool(self._leave and self._leave.returned),
        )

    def _flush(self):
        """Wait until every piece is in the file, not only in libtorrent's write cache.

        A piece counts as downloaded once its hash passed in memory; reading
        the file before the flush can see stale bytes.
        """
        self._flushed = False
        self._handle.flush_cache()
        deadline = time.monotonic() + FLUSH_SECONDS
        while not self._flushed:
            if self.error:
                raise MurderError(f"writing {self.path} failed: {self.error}")
            if time.monotonic() > deadline:
                raise MurderError(f"libtorrent did not write {self.path} within {FLUSH_SECONDS} s")
            self._drain_alerts(int(TICK_SECONDS * 1000))

    def verify(self, sha256, on_chunk=None):
        """Raise :class:`VerifyError` unless the artifact's SHA-256 is ``sha256``."""
        actual = sha256_file(self.path, on_chunk)
        if actual != sha256:
            raise VerifyError(f"{self.path} has SHA-256 {actual}, the deploy announced {sha256}")

    def downloading_peers(self, interested=False):
        """Connected peers that still download (not seeds); with ``interested``, only those that want our pieces.

        A split peer's outward sessions never complete, so only their
        interest says whether they still need this one.
        """
        flag = lt.peer_info.remote_interested
        return sum(1 for peer in self._handle.get_peer_info()
                   if not peer.flags & lt.peer_info.seed and (not interested or peer.flags & flag))

    def linger(self, limit, beside=()):
        """Keep seeding until the tracker reports no incomplete peer, or ``limit`` seconds.

        ``beside`` are other members of the same host (a split peer's outward
        session) whose connected downloading peers keep this one seeding too.

        Returns why it stopped (``policy.LingerPolicy.why_stop``): ``"swarm
        complete"``, ``"tracker gone"`` or ``"linger limit"``.
        """
        linger = policy.LingerPolicy(float(limit), time.monotonic())
        next_scrape = 0.0
        # The swarm's counts in the status are those of the tracker's last answer, which may predate
        # peers that joined while this one downloaded: believe them only once the tracker answered again.
        self._drain_alerts()
        replies = self.tracker_replies
        while True:
            now = time.monotonic()
            if now >= next_scrape:
                self._handle.scrape_tracker()
                next_scrape = now + 1.0
            self._drain_alerts(int(TICK_SECONDS * 1000))
            status = self.status()
            fresh = self.tracker_replies > replies
            downloading = self.downloading_peers() + sum(member.downloading_peers(interested=True) for member in beside)
            why = linger.why_stop(status.num_complete if fresh else -1, status.num_incomplete if fresh else -1,
                                  time.monotonic(), tracker_gone=self.tracker_failing, peers_downloading=downloading)
            if why:
                return why


# Where a split peer's outward session keeps its partial copy, inside the peer's download directory.
OUTWARD_DIR = ".outward"
# How often a split peer hands over again what its outward session has and its inward one lacks.
REPAIR_SECONDS = 5.0


class SplitPeer(_Reporter):
    """A peer as two sessions, so that each piece enters its rack once (``murder_core.rack_split``).

    The **outward** :class:`Peer` wants only the stripes of ``assignment``
    (its share first, then it leaves ``leave_seeders`` as ``leave_seeder``
    does) and announces itself as such; the **inward** one wants every piece
    and meets only its rack-mates' inward sessions. Each piece the outward
    session finishes is read back and added to the inward session, which
    checks its hashes as it would a downloaded piece. The inward session's
    file is the artifact. When the inward session gets nothing for
    ``seeder_fallback`` seconds while it lacks pieces the outward session
    does not fetch (a rack-mate failed or is late), the outward session
    takes those too, from the seeder: a rack never waits on a host that is
    gone. Otherwise the same interface as :class:`Peer`.
    """

    def __init__(self, outward_torrent, inward_torrent, save_dir, assignment, *, listen="127.0.0.1:0",
                 port_retries=0, upload_rate_limit=0, download_rate_limit=0, stall_timeout=30.0,
                 on_progress=None, progress_interval=2.0, libtorrent=None, leave_seeders=(),
                 seeder_fallback=10.0):
        common = dict(listen=listen, port_retries=port_retries, upload_rate_limit=upload_rate_limit,
                      download_rate_limit=download_rate_limit, stall_timeout=stall_timeout, libtorrent=libtorrent)
        self.assignment = assignment
        self.inward = Peer(inward_torrent, save_dir, **common)
        num_pieces = self.inward._handle.torrent_file().num_pieces()
        share = assignment.share(num_pieces)
        # Piece alerts from the start: a piece finished before them would never be handed over.
        alerts = {"alert_mask": int(profile.ALERTS | lt.alert.category_t.piece_progress_notification)}
        try:
            self.outward = Peer(
                outward_torrent, os.path.join(save_dir, OUTWARD_DIR), **dict(common, libtorrent={
                    **(libtorrent or {}), **alerts}),
                priorities=assignment.priorities(num_pieces), leave_after=share,
                leave_seeders=leave_seeders if share and assignment.racks > 1 else (), seeder_fallback=seeder_fallback,
            )
        except Exception:
            self.inward.close()
            raise
        self.outward._piece_sink = self._hand_over
        self.info = self.inward.info
        self.path = self.inward.path
        self.stall_timeout = float(stall_timeout)
        self.seeder_fallback = float(seeder_fallback)
        self.rescued = False
        self._init_reports(on_progress, progress_interval)

    def _hand_over(self, piece, data):
        self.inward._handle.add_piece(piece, data, 0)

    def connect(self, *endpoints):
        """Connect the outward session (the one that meets the seeder) to members directly."""
        self.outward.connect(*endpoints)

    def progress(self):
        outward, inward = self.outward.progress(), self.inward.progress()
        return Progress(
            bytes_done=inward.bytes_done, size=inward.size, rate=outward.rate + inward.rate,
            bytes_from_seeder=outward.bytes_from_seeder + inward.bytes_from_seeder,
            bytes_from_peers=outward.bytes_from_peers + inward.bytes_from_peers,
            peers=outward.peers + inward.peers, hash_failures=outward.hash_failures + inward.hash_failures,
        )

    def _repair_hand_over(self):
        """Hand over again every piece the outward session has and the inward one lacks (an alert lost)."""
        outward, inward = self.outward._handle, self.inward._handle
        for piece in range(inward.torrent_file().num_pieces()):
            if outward.have_piece(piece) and not inward.have_piece(piece):
                outward.read_piece(piece)

    def _rescue(self):
        """Let the outward session fetch every piece the inward one still lacks, from the seeder too."""
        self._repair_hand_over()
        handle = self.inward._handle
        wanted = [0 if handle.have_piece(p) or self.outward._handle.have_piece(p) else rack_split.STRIPE_PRIORITY
                  for p in range(handle.torrent_file().num_pieces())]
        self.outward._handle.prioritize_pieces(wanted)
        self.outward._back_to_seeders()
        self.rescued = True
        log.info("%s: nothing came from the rack for %g s with %d pieces missing: fetching them from outside",
                 self.info.name, self.seeder_fallback, wanted.count(rack_split.STRIPE_PRIORITY))

    def download(self, deadline=None):
        """Download until the inward session has every piece; return a :class:`DownloadResult`."""
        started = time.monotonic()
        stall = policy.StallDetector(self.stall_timeout, started)
        quiet = policy.StallDetector(self.seeder_fallback, started)
        next_repair = started + REPAIR_SECONDS
        while True:
            self.outward._drain_alerts(int(TICK_SECONDS * 1000))
            self.inward._drain_alerts()
            now = time.monotonic()
            outward, inward = self.outward.status(), self.inward.status()
            self.outward._count_sources()
            self.inward._count_sources()
            for member, status in ((self.outward, outward), (self.inward, inward)):
                if member.error or status.errc.value():
                    reason = member.error or status.errc.message()
                    raise MurderError(f"download of {self.info.name} failed: {reason}")
            if inward.is_seeding:
                break
            if not outward.is_finished:
                self.outward._follow_seeder_policy(outward.total_wanted_done, now)
            # Only once this host's own stripes are in: what is missing is then its rack-mates'.
            if quiet.stalled(inward.total_wanted_done, now) and outward.is_finished and not self.rescued:
                self._rescue()
            if now >= next_repair:
                self._repair_hand_over()
                next_repair = now + REPAIR_SECONDS
            # Bytes that only grow: a rescue lowers what the outward session wants, and so its bytes done.
            done = inward.total_wanted_done + outward.total_payload_download
            if stall.stalled(done, now):
                raise StallError(
                    f"download of {self.info.name} stalled: no data for {self.stall_timeout:g} s "
                    f"({inward.total_wanted_done} of {self.info.size} bytes; outward session: "
                    f"{outward.num_peers} peers, tried {self.outward.tried_line()}; inward session: "
                    f"{inward.num_peers} peers, tried {self.inward.tried_line()}; "
                    f"tracker: {outward.current_tracker or 'none answered'})"
                )
            _check_deadline(self.info, deadline, now, inward.total_wanted_done)
            self._report(now)
        self.outward._count_sources()
        self.inward._count_sources()
        self.inward._flush()
        self._report(time.monotonic(), force=True)
        done = self.progress()
        leave = self.outward._leave
        return DownloadResult(
            path=self.path, size=self.info.size, seconds=time.monotonic() - started,
            bytes_from_seeder=done.bytes_from_seeder, bytes_from_peers=done.bytes_from_peers,
            hash_failures=done.hash_failures, left_seeder=bool(leave and leave.left),
            back_to_seeder=bool(leave and leave.returned), rescued=self.rescued,
            bytes_from_outside=self.outward.status().total_payload_download,
        )

    def verify(self, sha256, on_chunk=None):
        self.inward.verify(sha256, on_chunk)

    def linger(self, limit):
        """Seed from both sessions until the tracker counts no host still fetching (see :meth:`Peer.linger`).

        The tracker counts hosts by their inward sessions: once every rack has
        every piece, no outward session of another rack needs this one's stripes.
        """
        return self.inward.linger(limit, beside=[self.outward])

    def close(self, announce_stop=True):
        """Close both sessions and drop the outward session's partial copy (never the artifact)."""
        self.outward.close(announce_stop)
        self.inward.close(announce_stop)
        shutil.rmtree(self.outward.save_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
