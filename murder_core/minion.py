"""What ``murder.peer`` does on a minion: fetch one release through the swarm.

Download the artifact into ``<base_dir>/.murder/<release>/`` (libtorrent
checks every block; a v1 torrent's artifact is then checked against its
SHA-256, see ``torrent.blocks_authenticated``), unpack it into ``<base_dir>/releases/<release>`` (through a staging
directory), report, then keep seeding for the rest of the swarm. Nothing is
activated here: the deploy's second phase does that once every host has the
release.

The cached artifact stays beside the releases so a second run of the same
deploy downloads nothing (libtorrent checks the cached file and seeds it),
and is removed with its release.
"""
import logging
import os
import shutil
import time

from murder_core import config, location, pack, policy, rack_split, swarm, torrent as torrent_mod
from murder_core.errors import InvalidInput, MurderError, ReleaseError

log = logging.getLogger(__name__)

# In .murder/<release>/: the SHA-256 of the artifact the release was unpacked from.
CONTENT_RECORD = "sha256"


def artifact_dir(base_dir, release):
    return os.path.join(base_dir, config.STATE_DIR, release)


def release_dir(base_dir, release):
    return os.path.join(base_dir, "releases", release)


def forget_artifacts(base_dir):
    """Remove cached artifacts whose release is no longer on disk."""
    cache = os.path.join(base_dir, config.STATE_DIR)
    if not os.path.isdir(cache):
        return []
    removed = []
    for name in sorted(os.listdir(cache)):
        if os.path.isdir(os.path.join(cache, name)) and not os.path.isdir(release_dir(base_dir, name)):
            shutil.rmtree(os.path.join(cache, name), ignore_errors=True)
            removed.append(name)
    return removed


def recorded_content(base_dir, release):
    """The SHA-256 of what ``releases/<release>`` was unpacked from, or None when nothing says."""
    downloads = artifact_dir(base_dir, release)
    try:
        with open(os.path.join(downloads, CONTENT_RECORD), encoding="ascii") as handle:
            return handle.read().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MurderError(f"cannot read the content record of release {release} in {downloads}: {exc}") from exc


def record_content(base_dir, release, sha256):
    downloads = artifact_dir(base_dir, release)
    partial = os.path.join(downloads, f".{CONTENT_RECORD}.tmp")
    with open(partial, "w", encoding="ascii") as handle:
        handle.write(sha256 + "\n")
    os.replace(partial, os.path.join(downloads, CONTENT_RECORD))


def check_same_content(base_dir, release, sha256):
    """Raise ReleaseError unless ``releases/<release>``, when on disk, was unpacked from ``sha256``.

    A release name means one content: a second deploy under the same name
    with other bytes must fail on this host, not report the release as
    current while the old tree stays in service.
    """
    if not os.path.isdir(release_dir(base_dir, release)):
        return
    recorded = recorded_content(base_dir, release)
    if recorded == sha256:
        return
    if recorded is None:
        detail = f"it was not put there by murder (no record of its content in {artifact_dir(base_dir, release)})"
    else:
        detail = f"SHA-256 {recorded}, this deploy's is {sha256}"
    raise ReleaseError(
        f"release {release} on this host holds different content ({detail}); "
        "deploy under a new release name; nothing was changed"
    )


def free_bytes(path):
    """Bytes an unprivileged writer may still use on the filesystem holding ``path``."""
    while not os.path.exists(path):
        path = os.path.dirname(path)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _no_space(base_dir, needed):
    return MurderError(
        f"No space left on device: {base_dir} has {free_bytes(base_dir)} bytes free, "
        f"the release needs {needed} for its artifact alone"
    )


def fetch(*, torrent, sha256, base_dir, release, seeders=(), listen="0.0.0.0:6881", port_retries=0,
          stall_timeout=30, progress_interval=2.0, on_progress=None,
          upload_rate_limit=0, download_rate_limit=0, deadline=None, libtorrent=None, minion=None, minions=(),
          place=None, location_key=None, leave_seeder=False, seeder_fallback=10.0, split=None):
    """Make ``releases/<release>`` hold the release; return ``(peer, report)``.

    ``peer`` is the running :class:`swarm.Peer` (call :func:`linger` then
    close it) and ``report`` a dict: ``changed``, ``path``, ``seconds``,
    ``bytes_from_seeder``, ``bytes_from_peers``, ``hash_failures``, ``stripe``,
    and ``steps``: seconds of ``download``, ``verify`` (a ``v1`` torrent
    only, see ``torrent.blocks_authenticated``) and ``unpack``.
    ``minion`` and ``minions`` (every peer of the deploy) give this peer its
    stripe of pieces to fetch first (``policy.stripe``); ``stripe`` in the
    report is ``[index, count]`` or None. ``place`` (``location.of_minion``)
    is announced to the tracker, signed with ``location_key``, when both are
    given; the report's ``place`` is what was announced, or None. With
    ``leave_seeder`` a peer with a stripe (in a deploy of at least
    ``policy.LEAVE_MIN_STRIPES``) leaves the ``seeders`` once its stripe is in, and goes back to them after ``seeder_fallback`` seconds
    without data (``policy.SeederLeave``); the report's ``left_seeder`` and
    ``back_to_seeder`` say what it did. ``split`` (a ``rack_split.Assignment``
    for ``place``, with ``location_key``) makes the peer a ``swarm.SplitPeer``:
    ``stripe`` in the report is then ``[index, rack size]``, and ``split``
    and ``rescued`` say so.
    On failure the partial artifact and any staging directory are removed
    and the error is raised; an existing release is never touched. A
    release already on disk with other content (``check_same_content``)
    fails before anything is fetched.
    """
    config.check_release_name(release)
    torrent = torrent_mod.decode(torrent)
    target = release_dir(base_dir, release)
    downloads = artifact_dir(base_dir, release)
    check_same_content(base_dir, release, sha256)
    already = os.path.isdir(target)
    inward_torrent = None
    if already:  # it only seeds the release: an outward session would fetch its stripes again
        split = None
    if not (place and location_key):
        place = None
    else:
        # Our tracker reads the place from the announce; the info-hash does not change.
        urls = [location.announce_url(url, location_key, place) for url in torrent_mod.describe(torrent).trackers]
        if split is not None and split.place == place:
            inward_torrent = torrent_mod.with_trackers(
                torrent, [rack_split.announce_url(url, rack_split.INWARD) for url in urls])
            urls = [rack_split.announce_url(url, split.announce_value()) for url in urls]
        torrent = torrent_mod.with_trackers(torrent, urls)

    info = torrent_mod.describe(torrent)
    size = info.size
    if not already and free_bytes(base_dir) < size:
        raise _no_space(base_dir, size)

    stripe = None if inward_torrent is not None else policy.stripe(minion, minions, info.num_pieces)
    started = time.monotonic()
    steps = {}
    peer = None
    try:
        if inward_torrent is not None:
            peer = swarm.SplitPeer(
                torrent, inward_torrent, downloads, split, listen=listen, port_retries=port_retries,
                upload_rate_limit=upload_rate_limit, download_rate_limit=download_rate_limit,
                stall_timeout=stall_timeout, on_progress=on_progress, progress_interval=progress_interval,
                libtorrent=libtorrent, leave_seeders=[host for host, _ in seeders] if leave_seeder else (),
                seeder_fallback=seeder_fallback,
            )
        else:
            peer = swarm.Peer(
                torrent, downloads, listen=listen, port_retries=port_retries,
                upload_rate_limit=upload_rate_limit, download_rate_limit=download_rate_limit,
                stall_timeout=stall_timeout, on_progress=on_progress, progress_interval=progress_interval,
                libtorrent=libtorrent, stripe=stripe,
                leave_seeders=[host for host, _ in seeders] if policy.leaves_seeder(leave_seeder, stripe) else (),
                seeder_fallback=seeder_fallback,
            )
        peer.connect(*seeders)
        result = peer.download(deadline=deadline)
        steps["download"] = time.monotonic() - started
        if not already:
            # Keep reporting while verifying and unpacking: the runner fails a silent minion.
            if not torrent_mod.blocks_authenticated(info):
                mark = time.monotonic()
                peer.verify(sha256, on_chunk=peer.heartbeat)
                steps["verify"] = time.monotonic() - mark
            record_content(base_dir, release, sha256)
            mark = time.monotonic()
            pack.unpack(result.path, target, on_member=peer.heartbeat)
            steps["unpack"] = time.monotonic() - mark
    except Exception as exc:
        if peer is not None:
            peer.close()
        if not already:
            shutil.rmtree(downloads, ignore_errors=True)
            # libtorrent does not always say ENOSPC (a short write can surface as a hash
            # mismatch), so judge by the disk itself once the partial download is gone.
            if free_bytes(base_dir) < size and not isinstance(exc, InvalidInput):
                raise _no_space(base_dir, size) from exc
        raise
    report = _report(not already, target, time.monotonic() - started, result.bytes_from_seeder,
                     result.bytes_from_peers, result.hash_failures,
                     split.as_list() if inward_torrent is not None else stripe)
    report["split"] = inward_torrent is not None
    report["rescued"] = result.rescued
    report["bytes_from_outside"] = result.bytes_from_outside
    report["steps"] = {name: round(seconds, 3) for name, seconds in steps.items()}
    report["place"] = place
    report["left_seeder"], report["back_to_seeder"] = result.left_seeder, result.back_to_seeder
    return peer, report


def _report(changed, path, seconds, from_seeder, from_peers, hash_failures, stripe):
    return {
        "changed": changed,
        "path": path,
        "seconds": round(seconds, 3),
        "bytes_from_seeder": from_seeder,
        "bytes_from_peers": from_peers,
        "hash_failures": hash_failures,
        "stripe": list(stripe) if stripe else None,
    }


def parse_endpoints(seeders):
    """``["10.0.0.1:6881", …]`` → ``[("10.0.0.1", 6881), …]``."""
    endpoints = []
    for item in seeders or ():
        host, sep, port = str(item).rpartition(":")
        if not sep or not port.isdigit():
            raise InvalidInput(f"seeder {item!r} is not host:port")
        endpoints.append((host.strip("[]"), int(port)))
    return endpoints

