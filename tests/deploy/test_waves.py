"""Activation in waves with fleet-wide rollback, on the real master and minions of ``tests/deploy``."""
import os

import pytest

from .conftest import MINIONS, make_source

pytestmark = pytest.mark.usefixtures("salt_minions")

TARGET = ",".join(MINIONS)


def deploy(salt_run_cli, app, release, app_root, source, *extra):
    return salt_run_cli.run("murder.deploy", f"source={source}", f"app={app}", f"tgt={TARGET}", "tgt_type=list",
                            f"release={release}", f"base_dir={app_root}", "timeout=120", *extra)


def current(app_root, minion, app):
    link = os.path.join(app_root.format(minion=minion, app=app), "current")
    return os.readlink(link) if os.path.islink(link) else None


def failing_on(minion):
    """A health check that fails only on ``minion`` (it runs in that minion's release directory)."""
    return f"check_cmd=case $(pwd) in */{minion}/*) exit 1;; esac"


@pytest.fixture
def on_r1(salt_run_cli, app_root, tmp_path, request):
    app = request.node.name.split("[")[0].replace("test_", "")[:40].replace("_", "-")
    ret = deploy(salt_run_cli, app, "r1", app_root, make_source(tmp_path / "v1", 1))
    assert ret.returncode == 0, ret.stdout
    return app


@pytest.mark.fault
def test_a_failing_last_wave_rolls_the_whole_fleet_back(salt_run_cli, app_root, tmp_path, on_r1):
    ret = deploy(salt_run_cli, on_r1, "r2", app_root, make_source(tmp_path / "v2", 2), "batch=1",
                 failing_on(MINIONS[-1]))
    assert ret.returncode != 0 and ret.data["result"] is False
    minions = ret.data["minions"]
    for minion in MINIONS[:-1]:
        assert minions[minion]["rolled_back"] is True and minions[minion]["comment"].startswith("rolled back to r1")
    assert "failed its health check" in minions[MINIONS[-1]]["comment"]
    assert all(current(app_root, minion, on_r1) == "releases/r1" for minion in MINIONS)
    said = ret.stdout + ret.stderr
    assert "wave 1/3: activating murder-m1" in said and "wave 3/3 done: 0 activated, 1 failed" in said


@pytest.mark.fault
def test_on_failure_stop_leaves_the_switched_hosts_on_the_new_release(salt_run_cli, app_root, tmp_path, on_r1):
    ret = deploy(salt_run_cli, on_r1, "r2", app_root, make_source(tmp_path / "v2", 2), "batch=1",
                 "on_failure=stop", failing_on(MINIONS[-1]))
    assert ret.returncode != 0 and ret.data["result"] is False
    for minion in MINIONS[:-1]:
        assert ret.data["minions"][minion]["activated"] is True and ret.data["minions"][minion]["result"] is True
        assert current(app_root, minion, on_r1) == "releases/r2"
    assert current(app_root, MINIONS[-1], on_r1) == "releases/r1"


@pytest.mark.fault
def test_a_failing_canary_keeps_every_other_host_from_switching(salt_run_cli, app_root, tmp_path, on_r1):
    ret = deploy(salt_run_cli, on_r1, "r2", app_root, make_source(tmp_path / "v2", 2), "canary=1",
                 failing_on(MINIONS[0]))
    assert ret.returncode != 0 and ret.data["result"] is False
    for minion in MINIONS[1:]:
        assert ret.data["minions"][minion]["comment"].startswith("never switched: the deploy stopped after wave 1")
        assert ret.data["minions"][minion]["activated"] is False
    assert all(current(app_root, minion, on_r1) == "releases/r1" for minion in MINIONS)
