"""A real salt-master with the shipped config snippet and three real salt-minions.

Everything listens on 127.0.0.1: the minions share that address with each
other and the seeder, as several minions on one host do, with no setting for
it. The ``murder`` settings pin the swarm to loopback and shorten its clocks;
``linger`` keeps its default, so a finished peer that lingers without need
shows as a ``murder.peer`` job still running.
"""
import pathlib
import shutil

import pytest

from tests.conftest import started_minions, started_murder_master

REPO = pathlib.Path(__file__).resolve().parents[2]
MINIONS = ("murder-m1", "murder-m2", "murder-m3")

LOOPBACK = {"seeder_address": "127.0.0.1", "peer_address": "127.0.0.1", "stall_timeout": 15,
            "progress_interval": 0.5, "announce_interval": 1, "silence_timeout": 10}


@pytest.fixture(scope="package")
def salt_master(salt_factories, tmp_path_factory):
    with started_murder_master(salt_factories, "murder-master", tmp_path_factory.mktemp("store"), LOOPBACK) as master:
        yield master


@pytest.fixture(scope="package")
def own_base_dir(tmp_path_factory):
    """The ``murder: base_dir`` of every minion's own config: used when a call names none."""
    root = tmp_path_factory.mktemp("own-base")
    yield str(root / "{minion}" / "{app}")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="package")
def salt_minions(salt_master, own_base_dir):
    settings = {"murder": dict(LOOPBACK, base_dir=own_base_dir), "master": "127.0.0.1"}
    with started_minions(salt_master, MINIONS, lambda minion_id: settings) as factories:
        yield factories


def make_source(path, version):
    """A small application tree with the kinds of entries a release has."""
    path = pathlib.Path(path)
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "app").write_text(f"#!/bin/sh\necho version {version}\n")
    (path / "bin" / "app").chmod(0o755)
    (path / "conf").mkdir()
    (path / "conf" / "app.yaml").write_text(f"version: {version}\n")
    (path / "conf" / "secret.yaml").write_text("token: x\n")
    (path / "conf" / "secret.yaml").chmod(0o600)
    (path / "empty-dir").mkdir()
    (path / "current-config").symlink_to("conf/app.yaml")
    (path / "data.bin").write_bytes(bytes(range(256)) * 4096 * 4)
    return str(path)
