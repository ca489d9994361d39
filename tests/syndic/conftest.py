"""A master of masters with murder on it, one syndic, two minions behind the syndic and one on the top master.

As Salt scales past one master: the top master (``order_masters``) runs the
engine, the tracker and the seeder; the syndic's master carries nothing of
murder but relays jobs down and returns and events up.
"""
import pytest

from tests.conftest import started_minions, started_murder_master

BEHIND_SYNDIC = ("syn-m1", "syn-m2")
ON_TOP = ("top-m1",)
LOOPBACK = {"seeder_address": "127.0.0.1", "peer_address": "127.0.0.1", "stall_timeout": 15,
            "progress_interval": 0.5, "announce_interval": 1, "silence_timeout": 20}


@pytest.fixture(scope="package")
def salt_master(salt_factories, tmp_path_factory):
    with started_murder_master(salt_factories, "top-master", tmp_path_factory.mktemp("store"), LOOPBACK,
                               order_masters=True) as master:
        yield master


@pytest.fixture(scope="package")
def syndic(salt_master):
    common = {"interface": "127.0.0.1", "open_mode": False, "auto_accept": True}
    factory = salt_master.salt_syndic_daemon("syndic-1", master_overrides=common)
    factory.master.slow_stop = False
    factory.slow_stop = False
    with factory.master.started(start_timeout=120), factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="package")
def salt_minions(salt_master, syndic):
    settings = {"murder": LOOPBACK, "master": "127.0.0.1"}
    with started_minions(syndic.master, BEHIND_SYNDIC, lambda minion_id: settings) as below, \
            started_minions(salt_master, ON_TOP, lambda minion_id: settings) as top:
        yield below + top
