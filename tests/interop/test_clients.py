"""Debian's BitTorrent clients join a murder swarm: they download from murder's seeder and seed to murder's peer.

One test per client, torrent format and direction; the formats are those
the client can read (``clients.CLIENTS``, and the README's table). Files
must arrive byte-identical, through murder's own tracker.
"""
import os
import time

import pytest

from murder_core import swarm
from murder_core.pack import sha256_file

from .clients import CLIENTS
from .conftest import client_log

CASES = [pytest.param(client, torrent_format, direction, id=f"{client}-{torrent_format}-{direction}")
         for client in CLIENTS for torrent_format in CLIENTS[client].formats for direction in ("download", "seed")]
DEADLINE = 90


def _client(name):
    client = CLIENTS[name]
    missing = client.missing()
    if missing:
        pytest.skip(missing)
    return client


def _arrived(path, sha256):
    return os.path.exists(path) and sha256_file(path) == sha256


@pytest.mark.parametrize("client_name, torrent_format, direction", CASES)
def test_client_joins_the_swarm(client_name, torrent_format, direction, namespace, make_release, run_client,
                                tmp_path):
    client = _client(client_name)
    release = make_release(torrent_format)
    listen = f"{namespace.here}:0"
    if direction == "download":
        seeder = swarm.Seeder(release.torrent, release.path, listen=listen)
        try:
            target = tmp_path / "client"
            target.mkdir()
            process = run_client(client.download(release.torrent_file, target, tmp_path))
            arrived = target / release.info.name
            deadline = time.monotonic() + DEADLINE
            while not _arrived(arrived, release.sha256) and time.monotonic() < deadline:
                if process.poll() not in (None, 0):
                    break
                time.sleep(0.25)
            assert _arrived(arrived, release.sha256), (
                f"{client_name} did not download a {torrent_format} torrent from murder's seeder "
                f"(exit {process.poll()}): {client_log(tmp_path)}")
            # The seeder was the only source; its counter trails the last blocks, so only "it sent" is asserted.
            assert seeder.stats()["uploaded"] > 0
        finally:
            seeder.close()
    else:
        # The client holds the whole file and is the only source: murder's peer must get it from there.
        holding = tmp_path / "client"
        holding.mkdir()
        os.link(release.path, holding / release.info.name)
        run_client(client.seed(release.torrent_file, holding, tmp_path))
        peer = swarm.Peer(release.torrent, str(tmp_path / "peer"), listen=listen, stall_timeout=DEADLINE)
        try:
            try:
                result = peer.download(deadline=time.monotonic() + DEADLINE)
            except Exception as exc:
                raise AssertionError(f"murder's peer got nothing from {client_name}: {exc}; "
                                     f"{client_log(tmp_path)}") from exc
            assert result.path and sha256_file(result.path) == release.sha256
            assert result.bytes_from_seeder == 0 and result.bytes_from_peers > 0
        finally:
            peer.close()
