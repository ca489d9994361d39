"""Faults during a deploy, on a real master and real minions.

Each test breaks one thing in the middle of ``salt-run murder.deploy`` and
checks what must hold afterwards: the exit code, the message naming the
minion, and that no host's ``current`` changed unless the deploy succeeded.
"""
import concurrent.futures
import os
import subprocess
import time

import pytest

from tests.deploy.test_deploy import tree

from .conftest import (
    MiB, ORDINARY, SLOW, SLOW_SETTINGS, base, current, deploy, finished_releases, kill_tree, leftovers,
    make_random_source, make_small_source, tmpfs, wait_for_event, wait_until,
)

pytestmark = [pytest.mark.fault, pytest.mark.usefixtures("salt_minions")]


def got_bytes(release):
    """A progress event of ``release`` after the first payload bytes arrived."""
    return lambda outer: outer["data"]["release"] == release and (
        outer["data"]["bytes_from_seeder"] + outer["data"]["bytes_from_peers"] > 0
    )


def test_minion_killed_mid_download_is_named_and_nothing_is_activated(
    app, salt_master, start_minion, salt_run_cli, app_root, tmp_path, event_listener
):
    victim = start_minion("fault-victim", settings=SLOW_SETTINGS)
    fleet = [*ORDINARY, victim.id]
    ret = deploy(salt_run_cli, make_small_source(tmp_path / "v1", 1), app, fleet, "r1", app_root)
    assert ret.returncode == 0, ret.stdout

    timeout = 60
    before = time.time()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(deploy, salt_run_cli, make_random_source(tmp_path / "v2", 6 * MiB, 2), app,
                              fleet, "r2", app_root, timeout=timeout)
        wait_for_event(event_listener, salt_master.id, f"murder/peer/*/{victim.id}/progress", before, 60,
                       where=got_bytes("r2"), what="first bytes on the victim")
        kill_tree(victim.pid)
        ret = running.result(timeout=timeout + 60)

    assert ret.returncode != 0
    summary = ret.data
    assert summary["result"] is False
    # Named once silent for silence_timeout (10 s), long before the deadline.
    assert summary["seconds"] < timeout, "the victim was only named at the deadline"
    assert summary["minions"][victim.id]["state"] == "failed", summary["minions"][victim.id]
    assert f"{victim.id} failed: no word from the minion" in ret.stdout + ret.stderr
    for minion in ORDINARY:
        report = summary["minions"][minion]
        assert report["state"] == "done" and report["activated"] is False, report
        assert "not activated" in report["comment"]
        assert finished_releases(app_root, minion, app) == ["r1", "r2"]
        assert leftovers(app_root, minion, app) == []
    for minion in fleet:
        assert current(app_root, minion, app) == "r1"
    # The victim died mid-download: its partial download is no finished release.
    assert finished_releases(app_root, victim.id, app) == ["r1"]


@pytest.mark.fault
def test_a_live_but_slow_minion_is_named_at_the_deadline(app, start_minion, salt_run_cli, app_root, tmp_path):
    """It keeps reporting, so only the deadline ends the wait (the silence rule must not fire)."""
    slowpoke = start_minion("fault-slowpoke", settings=SLOW_SETTINGS)
    # 20 MiB at SLOW_RATE (1 MiB/s) needs 20 s: past silence_timeout (10 s) and the deadline.
    timeout = 16
    ret = deploy(salt_run_cli, make_random_source(tmp_path / "v1", 20 * MiB, 1), app, [slowpoke.id], "r1",
                 app_root, timeout=timeout)
    assert ret.returncode != 0
    report = ret.data["minions"][slowpoke.id]
    assert report["state"] == "timed out" and "timeout" in report["comment"], report
    assert f"timed out waiting for {slowpoke.id}" in ret.stdout + ret.stderr
    assert finished_releases(app_root, slowpoke.id, app) == []


# 6m: the 4 MiB artifact fits, so the disk fills while the release is written out;
# 2m: it cannot fit, and the minion refuses before downloading a byte.
@pytest.mark.parametrize("disk", ["6m", "2m"])
def test_disk_full_on_one_minion_is_named_and_leaves_it_as_it_was(app, salt_run_cli, app_root, tmp_path, disk):
    full = "fault-b"
    with tmpfs(os.path.dirname(base(app_root, full, app)), disk):
        ret = deploy(salt_run_cli, make_small_source(tmp_path / "v1", 1), app, ORDINARY, "r1", app_root)
        assert ret.returncode == 0, ret.stdout

        ret = deploy(salt_run_cli, make_random_source(tmp_path / "v2", 4 * MiB, 2), app, ORDINARY, "r2",
                     app_root)

        assert ret.returncode != 0
        report = ret.data["minions"][full]
        assert report["state"] == "failed" and "No space left on device" in report["comment"], report
        assert f"{full} failed:" in ret.stdout + ret.stderr
        assert ret.data["minions"]["fault-a"]["activated"] is False
        assert finished_releases(app_root, full, app) == ["r1"]
        assert leftovers(app_root, full, app) == []
        for minion in ORDINARY:
            assert current(app_root, minion, app) == "r1"


def test_failed_health_check_rolls_the_fleet_back_and_is_reported(app, salt_run_cli, app_root, tmp_path):
    ret = deploy(salt_run_cli, make_small_source(tmp_path / "v1", 1), app, ORDINARY, "r1", app_root)
    assert ret.returncode == 0, ret.stdout
    sick = "fault-b"
    open(os.path.join(base(app_root, sick, app), "unhealthy"), "w").close()
    source = make_small_source(tmp_path / "v2", 2)
    # Shipped executables never run by being deployed: only the operator's check_cmd does.
    ran = tmp_path / "hook-ran"
    with open(os.path.join(source, "bin", "post-deploy"), "w") as hook:
        hook.write(f"#!/bin/sh\ntouch {ran}\n")
    os.chmod(os.path.join(source, "bin", "post-deploy"), 0o755)

    ret = deploy(salt_run_cli, source, app, ORDINARY, "r2", app_root,
                 "check_cmd=test ! -e ../../unhealthy || { echo unhealthy >&2; exit 3; }", "check_timeout=20")

    assert ret.returncode != 0
    assert ret.data["result"] is False
    # One failed health check rolls the whole fleet back by default (max_failures 0, on_failure rollback).
    healthy = ret.data["minions"]["fault-a"]
    assert healthy["rolled_back"] is True and healthy["result"] is False
    assert healthy["comment"].startswith("rolled back to r1")
    report = ret.data["minions"][sick]
    assert report["activated"] is False and report["result"] is False
    assert "failed its health check and was rolled back" in report["comment"]
    assert "exited 3: unhealthy" in report["comment"]
    assert f"{sick}: activation failed" in ret.stdout + ret.stderr
    assert current(app_root, "fault-a", app) == "r1"
    assert current(app_root, sick, app) == "r1"
    assert not ran.exists()


def test_concurrent_deploys_other_app_runs_same_app_is_refused(salt_master, app_root, tmp_path, event_listener):
    fleet = [*ORDINARY, *SLOW]
    # The slow minions keep the first deploy busy for a few seconds.
    alpha = make_random_source(tmp_path / "alpha", 6 * MiB, "alpha")
    beta = make_small_source(tmp_path / "beta", "beta")
    # One CLI factory per salt-run at a time: a factory keeps the state of the process it runs.
    cli = [salt_master.salt_run_cli(timeout=300) for _ in range(3)]
    before = time.time()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(deploy, cli[0], alpha, "alpha", fleet, "r1", app_root)
        wait_for_event(event_listener, salt_master.id, "murder/deploy/alpha-*/start", before, 60,
                       what="start of the first deploy")
        other_app = pool.submit(deploy, cli[1], beta, "beta", fleet, "r1", app_root)
        same_app = deploy(cli[2], beta, "alpha", fleet, "r2", app_root)
        assert not first.done(), "the first deploy ended before the second one was tried"
        other_app, first = other_app.result(timeout=120), first.result(timeout=120)

    assert same_app.returncode != 0
    assert "a deploy of app 'alpha' is already running" in same_app.stdout
    assert first.returncode == 0, first.stdout
    assert other_app.returncode == 0, other_app.stdout
    alpha_done = wait_for_event(event_listener, salt_master.id, "murder/deploy/alpha-r1-*/complete", before, 30)
    refused = wait_for_event(event_listener, salt_master.id, "murder/deploy/alpha-r2-*/complete", before, 30)
    assert refused.data["state"] == "refused" and "already running" in refused.data["error"]
    starts = {event.data["app"]: event for event in event_listener.get_events(
        [(salt_master.id, "murder/deploy/*/start")], after_time=before)}
    assert len(starts) == 2 and set(starts) == {"alpha", "beta"}, "the refused deploy must not start"
    assert starts["beta"].stamp < alpha_done.stamp, "the two apps did not deploy at the same time"
    assert starts["alpha"].data["peer"]["seeders"] != starts["beta"].data["peer"]["seeders"]
    assert first.data["info_hash"] != other_app.data["info_hash"]
    for minion in fleet:
        for app, source in (("alpha", alpha), ("beta", beta)):
            assert current(app_root, minion, app) == "r1"
            assert tree(os.path.join(base(app_root, minion, app), "current/")) == tree(source)
        assert finished_releases(app_root, minion, "alpha") == ["r1"]


def test_the_same_deploy_twice_downloads_nothing_the_second_time(salt_run_cli, app_root, tmp_path):
    source = make_random_source(tmp_path / "v1", 2 * MiB, 1)
    first = deploy(salt_run_cli, source, "again", ORDINARY, "r1", app_root)
    assert first.returncode == 0, first.stdout
    assert first.data["changed"] is True

    second = deploy(salt_run_cli, source, "again", ORDINARY, "r1", app_root)

    assert second.returncode == 0, second.stdout
    assert second.data["info_hash"] == first.data["info_hash"]
    assert second.data["changed"] is False
    for minion in ORDINARY:
        report = second.data["minions"][minion]
        assert report["changed"] is False and report["activated"] is True, report
        assert report["bytes_from_seeder"] == report["bytes_from_peers"] == 0
        assert "already current" in report["comment"]
        assert current(app_root, minion, "again") == "r1"


def test_master_stopping_mid_deploy_leaves_minions_clean_and_the_next_deploy_works(
    app, salt_master, salt_minions, salt_run_cli, salt_cli, app_root, tmp_path, event_listener
):
    ret = deploy(salt_run_cli, make_small_source(tmp_path / "v1", 1), app, SLOW, "r1", app_root)
    assert ret.returncode == 0, ret.stdout
    before = time.time()
    command = salt_run_cli.cmdline(
        "murder.deploy", f"source={make_random_source(tmp_path / 'v2', 6 * MiB, 2)}", f"app={app}",
        f"tgt={','.join(SLOW)}", "tgt_type=list", "release=r2", f"base_dir={app_root}", "timeout=120",
    )
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=salt_run_cli.environ)
    try:
        for minion in SLOW:
            wait_for_event(event_listener, salt_master.id, f"murder/peer/*/{minion}/progress", before, 60,
                           where=got_bytes("r2"), what=f"first bytes on {minion}")
        # The master host goes away: salt-run with its seeder and tracker, and the master.
        kill_tree(run.pid)
        salt_master.terminate()
        try:
            stopped = time.monotonic()
            for minion in SLOW:
                wait_until(lambda: not leftovers(app_root, minion, app),
                           SLOW_SETTINGS["stall_timeout"] + 20, f"{minion} giving up and cleaning up")
            assert time.monotonic() - stopped < SLOW_SETTINGS["stall_timeout"] + 20
            for minion in SLOW:
                assert current(app_root, minion, app) == "r1"
                assert finished_releases(app_root, minion, app) == ["r1"]
        finally:
            salt_master.start(start_timeout=120)
    finally:
        kill_tree(run.pid)

    def all_answer():
        answers = salt_cli.run("-L", "test.ping", "--timeout=3", minion_tgt=",".join(salt_minions)).data
        return isinstance(answers, dict) and all(answers.get(minion) is True for minion in salt_minions)

    wait_until(all_answer, 90, "every minion answering the restarted master")
    ret = deploy(salt_run_cli, make_small_source(tmp_path / "v3", 3), app, SLOW, "r3", app_root)
    assert ret.returncode == 0, ret.stdout
    for minion in SLOW:
        assert current(app_root, minion, app) == "r3"
        assert leftovers(app_root, minion, app) == []
