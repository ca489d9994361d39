"""Debian's opentracker as murder's tracker, and a master whose engine points its torrents at it.

opentracker is started first (Debian builds it to serve only whitelisted
hashes), then a master with ``tracker_url`` on it, ``tracker_whitelist`` on
its whitelist file and ``tracker_whitelist_reload`` sending it SIGHUP, as
the README tells an operator to configure it.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from tests.conftest import free_port, started_minions, started_murder_master

MINIONS = ("ot-m1", "ot-m2")
LOOPBACK = {"seeder_address": "127.0.0.1", "peer_address": "127.0.0.1", "stall_timeout": 15,
            "progress_interval": 0.5, "silence_timeout": 15}


class OpenTracker:
    def __init__(self, directory):
        self.directory = directory
        self.whitelist = os.path.join(directory, "whitelist.txt")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/announce"
        self.process = None

    def start(self):
        open(self.whitelist, "w").close()
        os.chmod(self.whitelist, 0o644)
        config = os.path.join(self.directory, "opentracker.conf")
        with open(config, "w") as handle:
            handle.write(f"listen.tcp 127.0.0.1:{self.port}\nlisten.udp 127.0.0.1:{self.port}\n"
                         f"access.whitelist {self.whitelist}\n")
        self.log = open(os.path.join(self.directory, "opentracker.log"), "w")
        self.process = subprocess.Popen(["opentracker", "-f", config], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"opentracker exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("opentracker did not listen within 10 s")

    def reload(self):
        self.process.send_signal(signal.SIGHUP)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()


@pytest.fixture(scope="session")
def opentracker():
    if shutil.which("opentracker") is None:
        pytest.skip("opentracker is not installed (apt-get install opentracker)")
    # opentracker drops to nobody, who must be able to read the whitelist again on SIGHUP.
    directory = tempfile.mkdtemp(prefix="murder-opentracker-", dir="/tmp")
    os.chmod(directory, 0o755)
    tracker = OpenTracker(directory)
    try:
        yield tracker.start()
    finally:
        tracker.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def salt_master(salt_factories, tmp_path_factory, opentracker):
    murder = dict(LOOPBACK, tracker_url=opentracker.url, tracker_whitelist=opentracker.whitelist,
                  tracker_whitelist_reload=f"kill -HUP {opentracker.process.pid}")
    with started_murder_master(salt_factories, "ot-master", tmp_path_factory.mktemp("store"), murder) as master:
        yield master


@pytest.fixture(scope="session")
def salt_minions(salt_master):
    settings = {"murder": LOOPBACK, "master": "127.0.0.1"}
    with started_minions(salt_master, MINIONS, lambda minion_id: settings) as factories:
        yield factories
