"""The master's published releases: packed once, seeded by the engine, fetched any time.

Layout under the store's root (``murder: store_dir``, by default
``<master cachedir>/murder``)::

    releases/<app>/<release>/<app>-<release>.tar.zst   the artifact the engine seeds
    releases/<app>/<release>/release.json              its record (:class:`Published`)
    fileserver/murder-published/<app>/<release>.json   what a minion fetches it with
                                                       (a ``request.PeerRequest``), served
                                                       as salt://murder-published/... by
                                                       the master's file server
    deploys/<deploy_id>.json                           each deploy's record
    work/<id>/                                         a release being packed

A release is published under its name exactly once: publishing the name
again with the same content changes nothing, with other content it is
refused. Each app keeps its newest ``keep`` releases; older ones stop being
seeded and are removed. Every write is a rename of a complete file or
directory, so a crash leaves the old state or the new one, and work
directories left by a crash are removed by :meth:`Store.clean_work`.
"""
import dataclasses
import json
import logging
import os
import secrets
import shutil
import threading
import time

from murder_core import config, pack, torrent as torrent_mod
from murder_core.errors import InvalidInput, MurderError
from murder_core.request import PeerRequest

log = logging.getLogger(__name__)

RECORD = "release.json"
# The running engine's process id: salt-run checks it to fail at once when no engine runs.
ENGINE_PID = "engine.pid"
FILESERVER_PREFIX = config.FILESERVER_PREFIX


@dataclasses.dataclass(frozen=True)
class Published:
    """One published release, as recorded on the master."""

    app: str
    release: str
    sha256: str
    size: int
    info_hash: str
    published: float  # time.time() of its publication
    torrent: str  # base64 of the .torrent, announce URLs as published

    def artifact_name(self):
        return f"{self.app}-{self.release}.tar.zst"

    def summary(self):
        return {"app": self.app, "release": self.release, "info_hash": self.info_hash, "size": self.size,
                "sha256": self.sha256, "published": self.published}


def _write_json(path, data):
    partial = f"{path}.{secrets.token_hex(4)}.tmp"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


class Store:
    """The published releases and deploy records under one directory."""

    def __init__(self, root):
        if not isinstance(root, str) or not os.path.isabs(root):
            raise InvalidInput(f"store_dir must be an absolute path, got {root!r}")
        self.root = root
        self.releases_dir = os.path.join(root, "releases")
        self.fileserver_dir = os.path.join(root, "fileserver")
        self.deploys_dir = os.path.join(root, "deploys")
        self.work_dir = os.path.join(root, "work")
        self._lock = threading.Lock()

    def _release_dir(self, app, release):
        return os.path.join(self.releases_dir, config.check_app_name(app), config.check_release_name(release))

    def artifact_path(self, record):
        return os.path.join(self._release_dir(record.app, record.release), record.artifact_name())

    # Publishing.

    def new_work_dir(self, name):
        path = os.path.join(self.work_dir, f"{name}-{secrets.token_hex(3)}")
        os.makedirs(path)
        return path

    def publish(self, source, app, release, *, trackers, keep, excludes=(".git",), piece_size=None,
                torrent_format=None):
        """Pack ``source`` as ``app`` ``release`` and record it; return ``(record, changed, removed)``.

        ``changed`` is False when the same content was already published under
        that name; ``removed`` lists the releases of the app beyond ``keep``
        that were removed. Raises InvalidInput for a name already published
        with other content.
        """
        config.check_app_name(app)
        config.check_release_name(release)
        work = self.new_work_dir(f"publish-{app}-{release}")
        try:
            artifact = pack.pack(source, os.path.join(work, f"{app}-{release}.tar.zst"), excludes=excludes)
            with self._lock:
                existing = self.get(app, release)
                if existing is not None:
                    if existing.sha256 != artifact.sha256:
                        raise InvalidInput(
                            f"release {release} of app {app} is already published with other content "
                            f"(SHA-256 {existing.sha256}, this source's is {artifact.sha256}): publish "
                            "under a new release name; nothing was changed"
                        )
                    return existing, False, []
            made = torrent_mod.make_torrent(artifact.path, trackers, piece_size, torrent_format)
            info = torrent_mod.describe(made)
            record = Published(app=app, release=release, sha256=artifact.sha256, size=artifact.size,
                               info_hash=info.info_hash, published=time.time(),
                               torrent=torrent_mod.encode(made))
            _write_json(os.path.join(work, RECORD), dataclasses.asdict(record))
            with self._lock:
                target = self._release_dir(app, release)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.rename(work, target)
                removed = self._prune(app, keep)
            log.info("published %s %s (%d bytes, info-hash %s)", app, release, record.size, record.info_hash)
            return record, True, removed
        except OSError as exc:
            raise MurderError(f"cannot publish {app} {release} from {source}: {exc}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _prune(self, app, keep):
        removed = []
        for record in self.published(app)[keep:]:
            self.remove(record)
            removed.append(record.release)
        return removed

    def remove(self, record):
        shutil.rmtree(self._release_dir(record.app, record.release), ignore_errors=True)
        try:
            os.unlink(self._fileserver_path(record.app, record.release))
        except FileNotFoundError:
            pass
        log.info("removed published release %s %s", record.app, record.release)

    # Reading.

    def get(self, app, release):
        path = os.path.join(self._release_dir(app, release), RECORD)
        try:
            with open(path, encoding="utf-8") as handle:
                return Published(**json.load(handle))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise MurderError(f"cannot read the record of published release {app} {release} ({path}): {exc}") from exc

    def published(self, app=None):
        """The published releases (of ``app``, or all), newest first."""
        found = []
        apps = [app] if app is not None else sorted(_names(self.releases_dir))
        for name in apps:
            for release in _names(os.path.join(self.releases_dir, config.check_app_name(name))):
                record = self.get(name, release)
                if record is not None:
                    found.append(record)
        return sorted(found, key=lambda r: (r.published, r.release), reverse=True)

    # What minions fetch through the master's file server.

    def _fileserver_path(self, app, release):
        return os.path.join(self.fileserver_dir, FILESERVER_PREFIX, app, f"{release}.json")

    def offer(self, record, seeders, trackers, location_key=None):
        """Write the :class:`PeerRequest` a minion fetches ``record`` with (salt://murder-published/…)."""
        made = torrent_mod.with_trackers(torrent_mod.decode(record.torrent), trackers)
        peer = PeerRequest(app=record.app, release=record.release, torrent=torrent_mod.encode(made),
                           sha256=record.sha256, size=record.size, info_hash=record.info_hash,
                           seeders=tuple(seeders), location_key=location_key)
        path = self._fileserver_path(record.app, record.release)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write_json(path, peer.as_dict())
        return peer

    # Deploy records.

    def save_deploy(self, summary, keep=50):
        os.makedirs(self.deploys_dir, exist_ok=True)
        _write_json(os.path.join(self.deploys_dir, f"{summary['deploy_id']}.json"), summary)
        records = sorted(
            (os.path.getmtime(os.path.join(self.deploys_dir, name)), name)
            for name in os.listdir(self.deploys_dir) if name.endswith(".json")
        )
        for _, name in records[:-keep]:
            os.unlink(os.path.join(self.deploys_dir, name))

    def deploy(self, deploy_id):
        path = os.path.join(self.deploys_dir, f"{os.path.basename(str(deploy_id))}.json")
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None

    def deploys(self):
        found = []
        for name in _names(self.deploys_dir):
            if name.endswith(".json"):
                record = self.deploy(name[:-5])
                if record is not None:
                    found.append(record)
        return sorted(found, key=lambda d: d.get("started", 0), reverse=True)

    def deploy_by_request(self, request_id):
        """The newest deploy record of a request (``request_id``), or None."""
        for record in self.deploys():
            if record.get("request_id") == request_id:
                return record
        return None

    def clean_work(self, keep=()):
        """Remove work directories (interrupted packs, deploys no longer running) except ``keep``."""
        removed = []
        for name in _names(self.work_dir):
            if name not in keep:
                shutil.rmtree(os.path.join(self.work_dir, name), ignore_errors=True)
                removed.append(name)
        return removed


def _names(directory):
    try:
        return sorted(name for name in os.listdir(directory) if not name.startswith("."))
    except FileNotFoundError:
        return []
