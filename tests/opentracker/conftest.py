"""Debian's opentracker as murder's tracker, and a master whose engine points its torrents at it.

opentracker is started first (Debian builds it to serve only whitelisted
hashes), then a master with ``tracker_url`` on it, ``tracker_whitelist`` on
its whitelist file and ``tracker_whitelist_reload`` sending it SIGHUP, as
the README tells an operator to configure it.
"""
import os
import shutil
import tempfile

import pytest

from devtools.opentracker import OpenTracker
from tests.conftest import started_minions, started_murder_master

MINIONS = ("ot-m1", "ot-m2")
LOOPBACK = {"seeder_address": "127.0.0.1", "peer_address": "127.0.0.1", "stall_timeout": 15,
            "progress_interval": 0.5, "silence_timeout": 15}


@pytest.fixture(scope="package")
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


@pytest.fixture(scope="package")
def salt_master(salt_factories, tmp_path_factory, opentracker):
    murder = dict(LOOPBACK, tracker_url=opentracker.url, tracker_whitelist=opentracker.whitelist,
                  tracker_whitelist_reload=f"kill -HUP {opentracker.process.pid}")
    with started_murder_master(salt_factories, "ot-master", tmp_path_factory.mktemp("store"), murder) as master:
        yield master


@pytest.fixture(scope="package")
def salt_minions(salt_master):
    settings = {"murder": LOOPBACK, "master": "127.0.0.1"}
    with started_minions(salt_master, MINIONS, lambda minion_id: settings) as factories:
        yield factories
