"""opentracker carries the tracker: peers meet through it, and a deploy through ``salt-run`` finishes."""
import os
import time
import urllib.parse
import urllib.request

import libtorrent as lt

from murder_core import swarm, torrent, whitelist
from murder_core.pack import sha256_file

from .conftest import MINIONS

MiB = 1024 * 1024


def _announce(url, key):
    query = urllib.parse.urlencode({"info_hash": key, "peer_id": b"-XX0001-probe0000000", "port": 7001,
                                    "uploaded": 0, "downloaded": 0, "left": 0, "compact": 1})
    with urllib.request.urlopen(f"{url}?{query}", timeout=5) as answer:
        return lt.bdecode(answer.read())


def _announce_once_reloaded(url, key, seconds=30, reload=None):
    """Announce until opentracker stops refusing ``key`` or ``seconds`` pass; its SIGHUP re-read is not instant.

    ``reload`` (a callable sending SIGHUP) is called again every 2 s while refused: opentracker listens, and
    answers, before the thread that re-reads the whitelist on SIGHUP waits for it, and a SIGHUP in between
    is lost (in CI, twice in five runs, once long after opentracker started).
    """
    deadline = time.monotonic() + seconds
    next_reload = time.monotonic() + 2
    answer = _announce(url, key)
    while b"failure reason" in answer and time.monotonic() < deadline:
        time.sleep(0.2)
        if reload is not None and time.monotonic() >= next_reload:
            reload()
            next_reload = time.monotonic() + 2
        answer = _announce(url, key)
    return answer


def test_a_seeder_and_peers_meet_only_through_opentracker(opentracker, tmp_path):
    artifact = tmp_path / "master" / "app-r1.tar.zst"
    artifact.parent.mkdir()
    artifact.write_bytes(os.urandom(4 * MiB))
    made = torrent.make_torrent(str(artifact), [opentracker.url], piece_size=256 * 1024)
    keys = torrent.describe(made).tracker_keys
    assert b"failure reason" in _announce(opentracker.url, keys[0])  # not whitelisted yet: refused
    whitelist.write(opentracker.whitelist, sorted(key.hex() for key in keys))
    opentracker.reload()
    assert b"failure reason" not in _announce_once_reloaded(opentracker.url, keys[0], reload=opentracker.reload)

    members = [swarm.Seeder(made, str(artifact), listen="127.0.0.1:0")]
    try:
        # No member is told of another: only opentracker's answers bring them together.
        peers = [swarm.Peer(made, str(tmp_path / f"peer{i}"), listen="127.0.0.1:0", stall_timeout=30)
                 for i in range(3)]
        members.extend(peers)
        for peer in peers:
            result = peer.download(deadline=time.monotonic() + 60)
            assert sha256_file(result.path) == sha256_file(str(artifact))
    finally:
        for member in members:
            member.close()


def test_deploy_through_opentracker(opentracker, salt_minions, salt_run_cli, app_root, tmp_path):
    source = tmp_path / "build"
    source.mkdir()
    (source / "app.txt").write_text("tracked by opentracker\n")
    ret = salt_run_cli.run("murder.deploy", f"source={source}", "app=ot", "tgt=ot-m*", "release=r1",
                           f"base_dir={app_root}", "timeout=120")
    assert ret.returncode == 0, ret.stdout + ret.stderr
    assert ret.data["result"] is True and set(ret.data["minions"]) == set(MINIONS)
    for minion in MINIONS:
        current = app_root.format(minion=minion, app="ot")
        assert open(os.path.join(current, "current", "app.txt")).read() == "tracked by opentracker\n"
    # The engine listed the release in opentracker's whitelist and had it re-read: opentracker serves it.
    listed = whitelist.read(opentracker.whitelist)
    info_hash = ret.data["info_hash"]
    assert info_hash[:40] in listed, (info_hash, listed)
    # The engine sent one SIGHUP; opentracker can lose one (twice in CI): the note on issue #17 says more.
    answer = _announce_once_reloaded(opentracker.url, bytes.fromhex(info_hash[:40]), reload=opentracker.reload)
    assert b"failure reason" not in answer and answer[b"complete"] >= 1
