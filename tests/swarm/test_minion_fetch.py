"""``minion.fetch`` on real libtorrent sessions: download, verify, unpack."""
import logging
import os
import threading

import pytest

from murder_core import minion, pack, swarm, torrent
from murder_core.errors import MurderError, ReleaseError, VerifyError

MiB = 1024 * 1024
FILES = 300


def test_fetch_keeps_reporting_while_it_verifies_and_unpacks(tracker, members, tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    for number in range(FILES):
        (build / f"module{number:03d}.py").write_text(f"VALUE = {number}\n")
    (build / "blob.bin").write_bytes(os.urandom(3 * MiB))
    artifact = pack.pack(str(build), str(tmp_path / "master" / "app-r1.tar.zst"))
    made = torrent.make_torrent(artifact.path, [tracker.url], piece_size=256 * 1024)
    tracker.serve(*torrent.describe(made).tracker_keys)
    members.append(swarm.Seeder(made, artifact.path, listen="127.0.0.1:0"))

    reports = []
    # Interval 0: every call to the progress callback goes through, so the
    # reports count the heartbeats; the runner names a minion silent without them.
    peer, report = minion.fetch(torrent=made, sha256=artifact.sha256, base_dir=str(tmp_path / "minion"),
                                release="r1", listen="127.0.0.1:0", stall_timeout=20,
                                progress_interval=0, on_progress=reports.append)
    members.append(peer)

    assert report["changed"] is True
    assert (tmp_path / "minion" / "releases" / "r1" / "module299.py").read_text() == "VALUE = 299\n"
    after_download = [p for p in reports if p.bytes_done == p.size]
    # The download itself ends with one complete report; verifying adds one per
    # MiB and unpacking one per member (FILES modules, the blob, the root).
    assert len(after_download) > FILES


def _publish(tracker, members, tmp_path, name, text):
    build = tmp_path / name
    build.mkdir()
    (build / "app.txt").write_text(text)
    artifact = pack.pack(str(build), str(tmp_path / name / "out" / "app-r1.tar.zst"))
    made = torrent.make_torrent(artifact.path, [tracker.url], piece_size=256 * 1024)
    tracker.serve(*torrent.describe(made).tracker_keys)
    members.append(swarm.Seeder(made, artifact.path, listen="127.0.0.1:0"))
    return made, artifact.sha256


def _fetch(made, sha256, base_dir, members):
    peer, report = minion.fetch(torrent=made, sha256=sha256, base_dir=str(base_dir), release="r1",
                                listen="127.0.0.1:0", stall_timeout=20)
    if peer is not None:
        members.append(peer)
    return report


@pytest.mark.bad_input
def test_a_release_name_means_one_content(tracker, members, tmp_path):
    first, first_sha = _publish(tracker, members, tmp_path, "first", "one\n")
    other, other_sha = _publish(tracker, members, tmp_path, "other", "two\n")
    base = tmp_path / "minion"
    assert _fetch(first, first_sha, base, members)["changed"] is True
    # The same name with other bytes: refused before any download, the release left as it was.
    before = sorted(os.listdir(base / ".murder" / "r1"))
    with pytest.raises(ReleaseError, match="release r1 on this host holds different content.*new release name"):
        _fetch(other, other_sha, base, members)
    assert (base / "releases" / "r1" / "app.txt").read_text() == "one\n"
    assert sorted(os.listdir(base / ".murder" / "r1")) == before
    # The same content again is a no-op.
    assert _fetch(first, first_sha, base, members)["changed"] is False


@pytest.mark.bad_input
def test_a_release_murder_did_not_put_there_is_not_taken_for_the_deployed_one(tracker, members, tmp_path):
    made, sha256 = _publish(tracker, members, tmp_path, "build", "one\n")
    base = tmp_path / "minion"
    (base / "releases" / "r1").mkdir(parents=True)
    with pytest.raises(ReleaseError, match="not put there by murder"):
        _fetch(made, sha256, base, members)
    assert os.listdir(base / "releases" / "r1") == []


def _one_file_release(tracker, members, tmp_path, torrent_format, tamper=False):
    """A packed release, its torrent in ``torrent_format``; the seeder serves the file, or a tampered copy."""
    build = tmp_path / "build"
    build.mkdir()
    (build / "blob.bin").write_bytes(os.urandom(MiB))
    artifact = pack.pack(str(build), str(tmp_path / "master" / "app-r1.tar.zst"))
    made = torrent.make_torrent(artifact.path, [tracker.url], piece_size=64 * 1024, torrent_format=torrent_format)
    served = artifact.path
    if tamper:
        # Same size, one byte changed mid-file: the seeder (seed mode, no re-check) sends it as it is.
        served = str(tmp_path / "tampered" / os.path.basename(artifact.path))
        os.makedirs(os.path.dirname(served))
        data = bytearray(open(artifact.path, "rb").read())
        data[len(data) // 2] ^= 0xFF
        open(served, "wb").write(bytes(data))
    tracker.serve(*torrent.describe(made).tracker_keys)
    members.append(swarm.Seeder(made, served, listen="127.0.0.1:0"))
    return made, artifact.sha256


@pytest.mark.parametrize("torrent_format", ["hybrid", "v2", "v1"])
def test_a_v1_artifact_gets_the_sha256_pass_and_v2_blocks_need_none(tracker, members, tmp_path, torrent_format):
    made, sha256 = _one_file_release(tracker, members, tmp_path, torrent_format)
    # A SHA-256 that is not the artifact's: only the whole-file pass can notice it.
    wrong = "0" * 64
    base = tmp_path / "minion"
    if torrent_format == "v1":
        with pytest.raises(VerifyError, match="has SHA-256"):
            _fetch(made, wrong, base, members)
        assert not (base / "releases" / "r1").exists()
    else:
        report = _fetch(made, wrong, base, members)
        assert report["changed"] is True and "verify" not in report["steps"]
        assert set(report["steps"]) == {"download", "unpack"}
        assert (base / "releases" / "r1" / "blob.bin").stat().st_size == MiB


@pytest.mark.fault
@pytest.mark.parametrize("torrent_format", ["hybrid", "v2"])
def test_tampered_blocks_are_never_unpacked_without_the_sha256_pass(tracker, members, tmp_path, torrent_format):
    made, sha256 = _one_file_release(tracker, members, tmp_path, torrent_format, tamper=True)
    base = tmp_path / "minion"
    with pytest.raises(MurderError):
        minion.fetch(torrent=made, sha256=sha256, base_dir=str(base), release="r1", listen="127.0.0.1:0",
                     stall_timeout=3)
    assert not (base / "releases" / "r1").exists()


def test_a_peer_announces_its_signed_place_to_the_tracker(tracker, members, tmp_path):
    from murder_core import location

    made, sha256 = _publish(tracker, members, tmp_path, "build", "one\n")
    keys = torrent.describe(made).tracker_keys
    key = location.swarm_key(location.new_secret(), torrent.describe(made).info_hash)
    tracker.serve(*keys, location_key=key)
    peer, report = minion.fetch(torrent=made, sha256=sha256, base_dir=str(tmp_path / "minion"), release="r1",
                                listen="127.0.0.1:0", stall_timeout=20, place="ams1/r7", location_key=key)
    members.append(peer)
    assert report["place"] == "ams1/r7"
    # The seeder, unsigned, is placed by its address; the peer where it said it is.
    assert tracker.places(keys[0]) == {"ams1/r7": 1, location.by_address("127.0.0.1"): 1}


@pytest.mark.parametrize("peers, leaving", [(4, True), (2, False)])
def test_a_deploys_peers_leave_the_seeder_only_from_four_stripes_on(tracker, members, run_all, tmp_path, peers,
                                                                    leaving, caplog, request):
    build = tmp_path / "build"
    build.mkdir()
    (build / "blob.bin").write_bytes(os.urandom(4 * MiB))
    artifact = pack.pack(str(build), str(tmp_path / "master" / "app-r1.tar.zst"))
    made = torrent.make_torrent(artifact.path, [tracker.url], piece_size=64 * 1024)  # 65 pieces
    tracker.serve(*torrent.describe(made).tracker_keys)
    # The seeder on an address of its own, as a master is; slow enough that stripes come in before the rest.
    seeder = swarm.Seeder(made, artifact.path, listen="127.0.0.2:0", upload_rate_limit=2 * MiB,
                          libtorrent={"outgoing_interfaces": "127.0.0.2"})
    members.append(seeder)
    names = [f"m{i}" for i in range(peers)]
    # Started together, every peer asks the seeder for its own stripe first and the stripes come in at the
    # same moment as the whole release: whether a peer sees its stripe complete before the end is a race.
    # So the last peer starts once another has left; until then its stripe only comes after the others'.
    someone_left = _LogWatch("stripe complete: leaving the seeder")
    caplog.set_level(logging.INFO, logger="murder_core.swarm")
    logging.getLogger("murder_core.swarm").addHandler(someone_left)
    request.addfinalizer(lambda: logging.getLogger("murder_core.swarm").removeHandler(someone_left))

    def fetch(i):
        if leaving and i == peers - 1:
            someone_left.seen.wait(timeout=30)  # a deadline, not a pause: the assertion below says what happened
        peer, report = minion.fetch(torrent=made, sha256=artifact.sha256, base_dir=str(tmp_path / names[i]),
                                    release="r1", seeders=[seeder.endpoint], listen=f"127.0.0.{3 + i}:0",
                                    stall_timeout=20, minion=names[i], minions=names, leave_seeder=True)
        members.append(peer)
        return report

    reports = run_all([lambda i=i: fetch(i) for i in range(peers)])
    assert all(r["changed"] and r["stripe"][1] == peers for r in reports), reports
    # A peer whose stripe came in last may have had the rest already: it had nothing to leave for.
    assert any(r["left_seeder"] for r in reports) is leaving, reports


class _LogWatch(logging.Handler):
    """Sets ``seen`` once a record it handles starts with ``prefix``."""

    def __init__(self, prefix):
        super().__init__(logging.INFO)
        self.prefix = prefix
        self.seen = threading.Event()

    def emit(self, record):
        if record.getMessage().startswith(self.prefix):
            self.seen.set()
