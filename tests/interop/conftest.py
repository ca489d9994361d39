"""Fixtures for interop with third-party BitTorrent clients, and the table they rebuild.

Every test runs one client in a network namespace of its own and murder's
tracker, seeder or peer on this side of the namespace's link. At the end
the suite prints which client joined murder's swarm in which direction, for
each torrent format, as the README's table states it.
"""
import itertools
import os
import signal
import subprocess

import pytest

from murder_core import torrent
from murder_core.pack import sha256_file
from murder_core.tracker import Tracker

from .netns import ClientNamespace

SIZE = 6 * 1024 * 1024 + 12345  # several pieces and a short last one
PIECE_SIZE = 256 * 1024
_indexes = itertools.count(1)
# (client, torrent format, direction) -> passed
RESULTS = {}
DIRECTIONS = {"download": "downloads from a murder seeder", "seed": "seeds to a murder peer"}


@pytest.fixture
def namespace():
    if os.geteuid() != 0:
        pytest.skip("interop tests run each client in a network namespace: they need root (CI runs as root)")
    with ClientNamespace(next(_indexes)) as made:
        yield made


@pytest.fixture
def tracker(namespace):
    with Tracker(host=namespace.here, port=0, interval=1) as running:
        yield running


class Release:
    """An artifact with its torrent in one format, served by the test's tracker."""

    def __init__(self, directory, tracker, torrent_format):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "app-r1.tar.zst")
        with open(self.path, "wb") as handle:
            handle.write(os.urandom(SIZE))
        self.sha256 = sha256_file(self.path)
        self.torrent = torrent.make_torrent(self.path, [tracker.url], piece_size=PIECE_SIZE,
                                            torrent_format=torrent_format)
        self.info = torrent.describe(self.torrent)
        self.torrent_file = os.path.join(os.path.dirname(directory), f"app-r1.{torrent_format}.torrent")
        with open(self.torrent_file, "wb") as handle:
            handle.write(self.torrent)
        tracker.serve(*self.info.tracker_keys)


@pytest.fixture
def make_release(tmp_path, tracker):
    return lambda torrent_format: Release(str(tmp_path / "master"), tracker, torrent_format)


@pytest.fixture
def run_client(namespace, tmp_path):
    """Start a client's command inside the namespace; it is stopped (by its PID) at the end."""
    started = []

    def run(argv):
        log = open(tmp_path / f"client-{len(started)}.log", "w")
        process = subprocess.Popen(namespace.command(*argv), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        started.append((process, log))
        return process

    yield run
    for process, log in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        log.close()


def client_log(tmp_path):
    """The clients' output of this test, for a failure's message."""
    text = ""
    for path in sorted(tmp_path.glob("client-*.log")):
        text += path.read_text(errors="replace").replace("\r", "\n")[-3000:]
    return text


def pytest_runtest_logreport(report):
    if report.when == "call" and "test_clients.py" in report.nodeid and "[" in report.nodeid:
        client, torrent_format, direction = report.nodeid.rsplit("[", 1)[1].rstrip("]").split("-")
        RESULTS[(client, torrent_format, direction)] = report.passed


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    terminalreporter.write_line("interop (client, torrent format: " + "; ".join(DIRECTIONS.values()) + "):")
    for (client, torrent_format) in sorted({key[:2] for key in RESULTS}):
        cells = [{True: "yes", False: "no", None: "not run"}[RESULTS.get((client, torrent_format, d))]
                 for d in DIRECTIONS]
        terminalreporter.write_line(f"  {client:<13}{torrent_format:<7}" + "  ".join(f"{c:<8}" for c in cells))
