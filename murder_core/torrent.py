"""Make the torrent of a release artifact, and read one.

Three formats (the ``torrent_format`` setting, README "Which BitTorrent
clients can join"):

* ``v2`` (default): SHA-256 merkle tree only, every 16 KiB block checked;
  libtorrent 2 clients (murder's peers, qBittorrent 4.4 and later). The
  cheapest for a host's CPU: one hash pass (``make bench-swarm``).
* ``hybrid``: BitTorrent v1+v2 in one torrent; the v1 half (SHA-1 pieces)
  serves v1 clients that understand a hybrid's v2 keys (libtorrent 1.2 based
  ones). Every block is hashed twice.
* ``v1``: SHA-1 pieces only; every BitTorrent client (aria2 and Transmission
  cannot read a v2 or hybrid ``file tree``, whose file names are dictionary
  keys with an empty key for the file itself).

What authenticates the bytes a minion unpacks (:func:`blocks_authenticated`):
the torrent itself reaches the minion through Salt's encrypted channel, never
from a peer. A torrent with v2 hashes (``hybrid``, ``v2``) holds the merkle
root of the artifact's SHA-256 block tree, and libtorrent checks every block
against it (and the piece layers against it) before the block counts as
downloaded, also for a cached file it re-checks; a second whole-file
SHA-256 pass would only repeat that work (``make bench-swarm`` measures it).
A ``v1`` torrent has only SHA-1 pieces, which are not collision-resistant,
so there the peer checks the finished file against the whole-artifact
SHA-256 the deploy carries beside the torrent, also through Salt.
"""
import base64
import binascii
import os
from dataclasses import dataclass

import libtorrent as lt

from murder_core.config import DEFAULTS
from murder_core.errors import InvalidInput, MurderError

CREATOR = "murder for Salt"
MIN_PIECE_SIZE = 16 * 1024
# piece_size 0 (the default): the largest power of two from AUTO_MIN_PIECE_SIZE to
# AUTO_MAX_PIECE_SIZE that still cuts the release into AUTO_PIECES pieces. A peer passes a piece
# on only once it has all of it, so a small release in 1 MiB pieces (32 pieces for sixteen
# hosts) leaves the swarm little to trade: 16 hosts, 32 MiB at 12 Mbit/s took 1.69-1.90 x the
# bound in 1 MiB pieces and 1.44-1.57 x in 64-256 KiB (docs/datacenter.md, session 14). Large
# releases keep 1 MiB, which costs the least CPU per byte (docs/tuning.md).
AUTO_PIECES = 256
AUTO_MIN_PIECE_SIZE = 64 * 1024
AUTO_MAX_PIECE_SIZE = 1024 * 1024
FORMATS = ("hybrid", "v2", "v1")
_FLAGS = {"hybrid": 0, "v2": lt.create_torrent.v2_only, "v1": lt.create_torrent.v1_only}


def check_format(torrent_format):
    """Return ``torrent_format`` if it is one of :data:`FORMATS`, else raise InvalidInput."""
    if torrent_format not in FORMATS:
        raise InvalidInput(f"torrent_format must be one of {', '.join(FORMATS)}, got {torrent_format!r}")
    return torrent_format


@dataclass(frozen=True)
class TorrentInfo:
    """What the deploy needs to know about a torrent."""

    info_hash: str  # hex; the v2 SHA-256 info-hash (64 digits), or the v1 SHA-1 one (40) of a v1 torrent
    tracker_keys: tuple  # the 20-byte hashes peers announce under (v1 and truncated v2)
    name: str  # the artifact's file name inside the torrent
    size: int
    piece_size: int
    num_pieces: int
    trackers: tuple
    torrent_format: str = "hybrid"


def auto_piece_size(size):
    """Return the piece size ``piece_size: 0`` gives an artifact of ``size`` bytes (see :data:`AUTO_PIECES`)."""
    piece_size = AUTO_MAX_PIECE_SIZE
    while piece_size > AUTO_MIN_PIECE_SIZE and size < piece_size * AUTO_PIECES:
        piece_size //= 2
    return piece_size


def check_piece_size(piece_size):
    """Return ``piece_size`` if it is 0 (chosen from the size) or a power of two of at least 16 KiB, else raise InvalidInput."""
    if (not isinstance(piece_size, int) or isinstance(piece_size, bool)
            or (piece_size and (piece_size < MIN_PIECE_SIZE or piece_size & (piece_size - 1)))):
        raise InvalidInput(f"piece_size must be 0 (chosen from the release's size) or a power of two "
                           f"of at least {MIN_PIECE_SIZE}, got {piece_size!r}")
    return piece_size


def make_torrent(artifact, trackers, piece_size=None, torrent_format=None):
    """Return the bencoded torrent of the single file ``artifact``.

    ``trackers`` is a list of announce URLs (one tier each). ``piece_size`` is
    a power of two of at least 16 KiB, or 0 for :func:`auto_piece_size` of the
    artifact (default: ``DEFAULTS['piece_size']``); ``torrent_format`` one of
    :data:`FORMATS`. The torrent has no creation date, so the same artifact
    and trackers always make the same bytes and the same info-hash.
    """
    piece_size = check_piece_size(DEFAULTS["piece_size"] if piece_size is None else piece_size)
    torrent_format = check_format(torrent_format or DEFAULTS["torrent_format"])
    if not trackers:
        raise InvalidInput("a torrent needs at least one tracker URL")
    artifact = os.path.abspath(artifact)
    if not os.path.isfile(artifact) or os.path.getsize(artifact) == 0:
        raise InvalidInput(f"artifact {artifact} is missing or empty")
    piece_size = piece_size or auto_piece_size(os.path.getsize(artifact))

    creator = lt.create_torrent(lt.list_files(artifact), piece_size, flags=_FLAGS[torrent_format])
    for tier, url in enumerate(trackers):
        creator.add_tracker(url, tier)
    creator.set_creator(CREATOR)
    try:
        lt.set_piece_hashes(creator, os.path.dirname(artifact))
    except RuntimeError as exc:
        raise MurderError(f"cannot hash {artifact}: {exc}") from exc
    entry = creator.generate()
    entry.pop(b"creation date", None)
    return lt.bencode(entry)


def load(torrent):
    """Return the :class:`libtorrent.torrent_info` of bencoded torrent bytes."""
    try:
        return lt.torrent_info(lt.bdecode(torrent))
    except (RuntimeError, TypeError) as exc:
        raise InvalidInput(f"not a valid torrent: {exc}") from exc


def _trackers(torrent):
    decoded = lt.bdecode(torrent)
    tiers = decoded.get(b"announce-list") or [[decoded.get(b"announce", b"")]]
    return tuple(url.decode() for tier in tiers for url in tier if url)


def describe(torrent):
    """Return the :class:`TorrentInfo` of bencoded torrent bytes."""
    info = load(torrent)
    hashes = info.info_hashes()
    keys = []
    if hashes.has_v1():
        keys.append(hashes.v1.to_bytes())
    if hashes.has_v2():
        keys.append(hashes.v2.to_bytes()[:20])
    info_hash = hashes.v2 if hashes.has_v2() else hashes.v1
    kind = "hybrid" if hashes.has_v1() and hashes.has_v2() else ("v2" if hashes.has_v2() else "v1")
    return TorrentInfo(
        info_hash=info_hash.to_bytes().hex(),
        tracker_keys=tuple(keys),
        name=info.name(),
        size=info.size_on_disk(),  # a v2 torrent counts the pad file after the last piece in total_size()
        piece_size=info.piece_length(),
        num_pieces=info.num_pieces(),
        trackers=_trackers(torrent),
        torrent_format=kind,
    )


def blocks_authenticated(info):
    """Whether libtorrent authenticates every block of this torrent (a :class:`TorrentInfo`) with SHA-256.

    True for ``hybrid`` and ``v2`` (a SHA-256 merkle tree whose root is in the
    torrent), False for ``v1`` (SHA-1 pieces only).
    """
    return info.torrent_format in ("hybrid", "v2")


def encode(torrent):
    """A torrent as text for an event or a JSON record (base64)."""
    return base64.b64encode(torrent).decode("ascii")


def decode(text):
    """The torrent bytes of :func:`encode`'s text; InvalidInput when it is not base64."""
    if isinstance(text, bytes):
        return text
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise InvalidInput("torrent must be base64 text of a .torrent file") from exc


def with_trackers(torrent, trackers):
    """The same torrent announcing to ``trackers``: the info dict, and so the info-hash, is unchanged.

    The engine's tracker may come back on another address or port after a
    restart; the torrents it hands out name the one that runs.
    """
    decoded = lt.bdecode(torrent)
    decoded.pop(b"announce-list", None)
    decoded[b"announce"] = trackers[0].encode()
    if len(trackers) > 1:
        decoded[b"announce-list"] = [[url.encode()] for url in trackers]
    return lt.bencode(decoded)
