"""``minion.fetch`` on real libtorrent sessions: download, verify, unpack."""
import os

from murder_core import minion, pack, swarm, torrent

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
    members.append(swarm.Seeder(made, artifact.path, listen="127.0.0.1:0", shared_address=True))

    reports = []
    # Interval 0: every call to the progress callback goes through, so the
    # reports count the heartbeats; the runner names a minion silent without them.
    peer, report = minion.fetch(torrent=made, sha256=artifact.sha256, base_dir=str(tmp_path / "minion"),
                                release="r1", listen="127.0.0.1:0", shared_address=True, stall_timeout=20,
                                progress_interval=0, on_progress=reports.append)
    members.append(peer)

    assert report["changed"] is True
    assert (tmp_path / "minion" / "releases" / "r1" / "module299.py").read_text() == "VALUE = 299\n"
    after_download = [p for p in reports if p.bytes_done == p.size]
    # The download itself ends with one complete report; verifying adds one per
    # MiB and unpacking one per member (FILES modules, the blob, the root).
    assert len(after_download) > FILES
