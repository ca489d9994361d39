"""Torrent creation: v2 by default, hybrid and v1 on request, deterministic, validated input."""
import os

import libtorrent as lt
import pytest

from murder_core import torrent
from murder_core.config import DEFAULTS
from murder_core.errors import InvalidInput

TRACKER = "http://127.0.0.1:8998/announce"


@pytest.fixture
def artifact(tmp_path):
    path = tmp_path / "app-r1.tar.zst"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 123))
    return str(path)


def test_hybrid_torrent_with_sha256_and_tracker(artifact):
    data = torrent.make_torrent(artifact, [TRACKER], piece_size=1 << 20, torrent_format="hybrid")
    info = torrent.describe(data)
    hashes = torrent.load(data).info_hashes()
    assert hashes.has_v1() and hashes.has_v2()
    assert info.info_hash == hashes.v2.to_bytes().hex() and len(info.info_hash) == 64
    assert info.tracker_keys == (hashes.v1.to_bytes(), hashes.v2.to_bytes()[:20])
    assert info.name == "app-r1.tar.zst"
    assert info.size == os.path.getsize(artifact)
    assert (info.piece_size, info.num_pieces) == (1 << 20, 4)
    assert info.trackers == (TRACKER,)
    assert b"piece layers" in lt.bdecode(data)


def test_the_default_format_is_the_configured_one(artifact):
    assert torrent.describe(torrent.make_torrent(artifact, [TRACKER])).torrent_format == DEFAULTS["torrent_format"] == "v2"


def test_same_artifact_same_torrent(artifact):
    assert torrent.make_torrent(artifact, [TRACKER]) == torrent.make_torrent(artifact, [TRACKER])


@pytest.mark.bad_input
@pytest.mark.parametrize("piece_size", [1000, 8192, 3 << 20, -1, "1M", True, 1.5])
def test_bad_piece_size_is_refused(artifact, piece_size):
    with pytest.raises(InvalidInput, match="piece_size must be 0"):
        torrent.make_torrent(artifact, [TRACKER], piece_size=piece_size)


@pytest.mark.parametrize("size, piece_size", [
    (1, 64 << 10),  # at least 64 KiB, however small the release
    (16 << 20, 64 << 10),
    (32 << 20, 128 << 10),  # the datacenter bench's 32 MiB: 256 pieces
    ((32 << 20) - 1, 64 << 10),
    (64 << 20, 256 << 10),
    (256 << 20, 1 << 20),
    (4 << 30, 1 << 20),  # at most 1 MiB, however large
])
def test_the_automatic_piece_size_cuts_a_release_into_at_least_256_pieces(size, piece_size):
    assert torrent.auto_piece_size(size) == piece_size


def test_the_default_piece_size_is_chosen_from_the_artifacts_size(tmp_path):
    assert DEFAULTS["piece_size"] == 0
    small = tmp_path / "small.tar.zst"
    small.write_bytes(os.urandom(300 * 1024))
    assert torrent.describe(torrent.make_torrent(str(small), [TRACKER])).piece_size == 64 << 10
    large = tmp_path / "large.tar.zst"
    with open(large, "wb") as out:  # sparse: 40 MiB of zeros hash as fast as any bytes
        out.truncate(40 << 20)
    info = torrent.describe(torrent.make_torrent(str(large), [TRACKER]))
    assert (info.piece_size, info.num_pieces) == (128 << 10, 320)


def test_missing_artifact_and_trackers_are_refused(tmp_path, artifact):
    with pytest.raises(InvalidInput, match="missing or empty"):
        torrent.make_torrent(str(tmp_path / "nope"), [TRACKER])
    with pytest.raises(InvalidInput, match="tracker"):
        torrent.make_torrent(artifact, [])


@pytest.mark.bad_input
def test_garbage_is_not_a_torrent():
    with pytest.raises(InvalidInput, match="not a valid torrent"):
        torrent.describe(b"d4:spam3:egge")


@pytest.mark.parametrize("torrent_format, hashes", [("hybrid", 2), ("v2", 1), ("v1", 1)])
def test_each_torrent_format_makes_what_it_names(tmp_path, torrent_format, hashes):
    artifact = tmp_path / "app-r1.tar.zst"
    artifact.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    made = torrent.make_torrent(str(artifact), [TRACKER], piece_size=1 << 20, torrent_format=torrent_format)
    info = torrent.describe(made)
    assert info.torrent_format == torrent_format
    # The artifact's own size: a v2 torrent pads the last piece, which the size must not count.
    assert info.size == 3 * 1024 * 1024 + 7
    assert len(info.tracker_keys) == hashes
    assert len(info.info_hash) == (40 if torrent_format == "v1" else 64)
    decoded = lt.bdecode(made)[b"info"]
    assert (b"pieces" in decoded) == (torrent_format != "v2")  # v1's SHA-1 pieces
    assert (b"file tree" in decoded) == (torrent_format != "v1")  # v2's merkle tree, which aria2 cannot read


@pytest.mark.bad_input
def test_unknown_torrent_format_is_refused(tmp_path):
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"x" * 100)
    with pytest.raises(InvalidInput, match="torrent_format must be one of hybrid, v2, v1"):
        torrent.make_torrent(str(artifact), [TRACKER], torrent_format="v3")


@pytest.mark.bad_input
def test_the_engine_names_a_bad_torrent_format_setting():
    from murder_core.engine import check_settings

    check_settings({"torrent_format": "v1"})
    with pytest.raises(InvalidInput, match="torrent_format must be one of hybrid, v2, v1, got 'v3'"):
        check_settings({"torrent_format": "v3"})


@pytest.mark.bad_input
def test_the_engine_names_a_bad_piece_size_setting():
    from murder_core.engine import check_settings

    check_settings({"piece_size": 1 << 20})
    check_settings({"piece_size": 0})
    with pytest.raises(InvalidInput, match="piece_size must be 0 .* got 3000"):
        check_settings({"piece_size": 3000})
