"""A master running the murder engine from the shipped snippet, and three minions, all on 127.0.0.1.

Every host's upload is capped (``UPLOAD_CAP``), the engine's seeder too, so
peers that fetch at the same time must trade with each other, and a
deploy of ``test_engine.INTERRUPTED_SIZE`` bytes lasts long enough to interrupt it. The master
serves a state tree and pillar of the test's own beside the snippet's
``file_roots``, for highstates with ``murder.release``.
"""
import os
import pathlib
import shutil
import socket

import pytest

from murder_core.saltext import master_snippet
from tests.conftest import started_minions
from tests.deploy.conftest import LOOPBACK

MINIONS = ("eng-1", "eng-2", "eng-3")
MiB = 1024 * 1024
UPLOAD_CAP = 2 * MiB
# No test here waits for the silence rule: the longer limit spares a slow first job start a false verdict.
SETTINGS = dict(LOOPBACK, upload_rate_limit=UPLOAD_CAP, silence_timeout=15)


@pytest.fixture(scope="package")
def engine_trees(tmp_path_factory):
    return tmp_path_factory.mktemp("engine-states"), tmp_path_factory.mktemp("engine-pillar")


@pytest.fixture(scope="package")
def metrics_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="package")
def salt_master(salt_factories, tmp_path_factory, engine_trees, metrics_port):
    states, pillar = engine_trees
    overrides = master_snippet(store_dir=tmp_path_factory.mktemp("engine-store"))
    overrides["murder"] = dict(overrides["murder"], metrics_port=metrics_port, **SETTINGS)
    overrides["file_roots"]["base"].append(str(states))
    overrides.update({"interface": "127.0.0.1", "open_mode": False, "auto_accept": True,
                      "pillar_roots": {"base": [str(pillar)]}})
    factory = salt_factories.salt_master_daemon("engine-master", overrides=overrides)
    factory.slow_stop = False
    with factory.started(start_timeout=120):
        yield factory


def minion_overrides():
    return {"murder": dict(SETTINGS), "master": "127.0.0.1"}


@pytest.fixture(scope="package")
def salt_minions(salt_master):
    with started_minions(salt_master, MINIONS, lambda minion_id: minion_overrides()) as factories:
        yield factories


@pytest.fixture
def start_minion(salt_master):
    """Start a minion of this test's own (a late joiner); stopped at the end of the test."""
    started = []

    def start(minion_id):
        factory = salt_master.salt_minion_daemon(minion_id, overrides=minion_overrides())
        factory.slow_stop = False
        factory.start(start_timeout=120)
        started.append(factory)
        return factory

    yield start
    for factory in started:
        factory.terminate()


@pytest.fixture
def store_dir(salt_master):
    return pathlib.Path(salt_master.config["murder"]["store_dir"])


def make_release(path, version, size=0):
    """A release tree; ``size`` bytes of random data make it take a while to fetch under the caps."""
    path = pathlib.Path(path)
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "app").write_text(f"#!/bin/sh\necho version {version}\n")
    (path / "bin" / "app").chmod(0o755)
    (path / "VERSION").write_text(f"{version}\n")
    if size:
        (path / "blob.bin").write_bytes(os.urandom(size))
    return str(path)


@pytest.fixture
def fleet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine-fleet")
    yield root
    shutil.rmtree(root, ignore_errors=True)
