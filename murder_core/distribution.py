"""The master's side of a deploy: pack, torrent, tracker and seeder.

A :class:`Distribution` is a context manager: entering it packs the source,
makes the torrent, starts the tracker (unless an external ``tracker_url``
is configured) and the seeder; leaving it stops both and removes the work
directory, also when the deploy failed.
"""
import base64
import datetime
import logging
import os
import secrets
import shutil
import socket

from murder_core import config, pack, swarm, torrent
from murder_core.errors import MurderError
from murder_core.tracker import Tracker

log = logging.getLogger(__name__)

# Ports tried above the configured tracker port when it is taken (another deploy).
TRACKER_PORT_RETRIES = 20


def new_release_id(now=None):
    """A sortable release id: the UTC time, e.g. ``20261126T101500Z``."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ")


def new_deploy_id(app, release):
    return f"{app}-{release}-{secrets.token_hex(3)}"


def default_address(interface):
    """The address minions reach the master's seeder on.

    The master's configured ``interface`` when it is a specific address,
    else the local address of the route to the outside (no packet is sent:
    a UDP socket only picks its source address), else loopback.
    """
    if interface and interface not in ("0.0.0.0", "::"):
        return interface
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing decision only, nothing is sent
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


class Distribution:
    """Pack a release and serve it to the swarm for the length of a deploy."""

    def __init__(self, *, source, app, release, workdir, address, settings):
        self.app = config.check_app_name(app)
        self.release = config.check_release_name(release)
        self.source = source
        self.workdir = workdir
        self.address = address
        self.settings = settings
        self.artifact = None
        self.torrent = None
        self.info = None
        self.tracker = None
        self.seeder = None

    def _option(self, key):
        return self.settings.get(key, config.DEFAULTS[key])

    def __enter__(self):
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _start_tracker(self):
        first = int(self._option("tracker_port"))
        last_error = None
        for port in range(first, first + TRACKER_PORT_RETRIES + 1) if first else [0]:
            candidate = Tracker(
                host=self.address, port=port,
                interval=int(self._option("announce_interval")),
                max_peers=int(self._option("max_peers_per_announce")),
            )
            try:
                return candidate.start()
            except MurderError as exc:
                last_error = exc
        raise MurderError(f"no free tracker port from {first}: {last_error}")

    def _prepare(self):
        os.makedirs(self.workdir, exist_ok=True)
        name = f"{self.app}-{self.release}.tar.zst"
        self.artifact = pack.pack(
            self.source, os.path.join(self.workdir, name), excludes=self._option("excludes")
        )
        external = self._option("tracker_url")
        if external:
            trackers = [external]
        else:
            self.tracker = self._start_tracker()
            trackers = [self.tracker.url]
        self.torrent = torrent.make_torrent(self.artifact.path, trackers, self._option("piece_size"))
        self.info = torrent.describe(self.torrent)
        if self.tracker:
            self.tracker.serve(*self.info.tracker_keys)
        first, last = int(self._option("peer_port_first")), int(self._option("peer_port_last"))
        self.seeder = swarm.Seeder(
            self.torrent, self.artifact.path,
            listen=f"{self.address}:{first}", port_retries=max(last - first, 0),
            upload_rate_limit=int(self._option("upload_rate_limit")),
            super_seeding=bool(self._option("super_seeding")),
            libtorrent=self._option("libtorrent"),
        )
        log.info("deploy of %s %s: %d bytes, info-hash %s, seeder %s:%s",
                 self.app, self.release, self.artifact.size, self.info.info_hash,
                 self.address, self.seeder.listen_port)

    @property
    def seeder_endpoint(self):
        return f"{self.address}:{self.seeder.listen_port}"

    def peer_arguments(self):
        """What every ``murder.peer`` call needs, as plain data for an event."""
        return {
            "torrent": base64.b64encode(self.torrent).decode("ascii"),
            "sha256": self.artifact.sha256,
            "size": self.artifact.size,
            "info_hash": self.info.info_hash,
            "seeders": [self.seeder_endpoint],
        }

    def close(self):
        if self.seeder is not None:
            # Our own tracker stops next, so the seeder need not tell it; an
            # external tracker is told, so it stops handing out this seeder.
            self.seeder.close(announce_stop=self.tracker is None)
            self.seeder = None
        if self.tracker is not None:
            self.tracker.stop()
            self.tracker = None
        if self.workdir and os.path.isdir(self.workdir):
            shutil.rmtree(self.workdir, ignore_errors=True)
