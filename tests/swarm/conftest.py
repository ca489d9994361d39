"""Fixtures for swarms of real libtorrent sessions on 127.0.0.1."""
import os
import threading

import pytest

from murder_core import torrent
from murder_core.pack import sha256_file
from murder_core.tracker import Tracker


@pytest.fixture
def tracker():
    with Tracker(host="127.0.0.1", port=0, interval=1) as running:
        yield running


class Release:
    """An artifact on the 'master' with its torrent, served by the tracker."""

    def __init__(self, directory, size, tracker, piece_size=256 * 1024):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "app-r1.tar.zst")
        with open(self.path, "wb") as handle:
            handle.write(os.urandom(size))
        self.sha256 = sha256_file(self.path)
        self.torrent = torrent.make_torrent(self.path, [tracker.url], piece_size=piece_size)
        self.info = torrent.describe(self.torrent)
        tracker.serve(*self.info.tracker_keys)


@pytest.fixture
def make_release(tmp_path, tracker):
    def make(size, piece_size=256 * 1024, served_by=None):
        return Release(str(tmp_path / "master"), size, served_by or tracker, piece_size)

    return make


@pytest.fixture
def members():
    """Collects seeders and peers and closes them all at the end, also on failure."""
    opened = []
    yield opened
    for member in opened:
        member.close()


@pytest.fixture
def run_all():
    return _run_all


def _run_all(functions, timeout=120):
    """Run callables in threads at once; return their results or raise their first error."""
    results, errors = [None] * len(functions), []

    def call(index, function):
        try:
            results[index] = function()
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i, f), daemon=True) for i, f in enumerate(functions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a download did not return in time"
    if errors:
        raise errors[0]
    return results
