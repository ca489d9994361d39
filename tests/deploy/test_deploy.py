"""`salt-run murder.deploy` end to end: real master, reactor, minions and swarm."""
import json
import os
import stat
import time

import pytest

from .conftest import LOOPBACK, MINIONS, make_source

pytestmark = pytest.mark.usefixtures("salt_minions")


def tree(root):
    """{relative path: (kind, mode, bytes or link target)} of a directory."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, root)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(full, "rb") as handle:
                    found[rel] = ("file", stat.S_IMODE(st.st_mode), handle.read())
    return found


def base(app_root, minion, app):
    return app_root.format(minion=minion, app=app)


def deploy(salt_run_cli, *args):
    return salt_run_cli.run("murder.deploy", *args)


def test_deploy_puts_the_tree_on_every_minion_and_activates(salt_run_cli, app_root, tmp_path):
    source = make_source(tmp_path / "v1", 1)
    # More pieces (1 MiB each) than minions, so each minion has a stripe of its own.
    with open(os.path.join(source, "blob"), "wb") as handle:
        handle.write(os.urandom(3 * 1024 * 1024))
    ret = deploy(salt_run_cli, f"source={source}", "app=shop", "tgt=murder-m*", "release=r1",
                 f"base_dir={app_root}", "timeout=120")
    assert ret.returncode == 0, ret.stdout + ret.stderr
    summary = ret.data
    assert summary["result"] is True
    assert set(summary["minions"]) == set(MINIONS)
    assert len(summary["info_hash"]) == 64 and summary["release"] == "r1" and summary["app"] == "shop"
    # The minions had nothing: every piece left the master's seeder at least once, by its own count.
    assert summary["size"] <= summary["seeder_bytes_sent"] <= len(MINIONS) * summary["size"]
    expected = tree(source)
    for minion in MINIONS:
        report = summary["minions"][minion]
        assert report["result"] is True and report["activated"] is True, report
        assert report["bytes_from_peers"] + report["bytes_from_seeder"] > 0
        assert report["stripe"] == [sorted(MINIONS).index(minion), len(MINIONS)]
        root = base(app_root, minion, "shop")
        assert tree(os.path.join(root, "releases", "r1")) == expected
        assert os.readlink(os.path.join(root, "current")) == "releases/r1"

    status = salt_run_cli.run("murder.status", f"deploy_id={summary['deploy_id']}")
    assert status.returncode == 0, status.stdout
    assert status.data["state"] == "succeeded"
    assert {m: s["state"] for m, s in status.data["minions"].items()} == {m: "done" for m in MINIONS}
    listing = salt_run_cli.run("murder.status")
    assert summary["deploy_id"] in [d["deploy_id"] for d in listing.data["deploys"]]
    unknown = salt_run_cli.run("murder.status", "deploy_id=no-such-deploy")
    assert unknown.returncode != 0 and "no deploy" in unknown.stdout


def test_release_of_twenty_thousand_small_files(salt_run_cli, app_root, tmp_path):
    """A virtualenv-sized tree (20,000 files, links among them) arrives whole on every minion: correctness, not time."""
    source = tmp_path / "venv-like"
    for package in range(200):
        directory = source / "lib" / f"pkg{package:03d}"
        directory.mkdir(parents=True)
        for module in range(100):
            (directory / f"mod{module:03d}.py").write_text(f"VALUE = {package * 100 + module}\n")
        (directory / "mod000.py").chmod(0o640)
    (source / "bin").mkdir()
    (source / "bin" / "python").symlink_to("../lib/pkg000/mod001.py")
    (source / "lib" / "pkg199" / "latest").symlink_to("../pkg000")
    ret = deploy(salt_run_cli, f"source={source}", "app=venv", "tgt=murder-m*", "release=r1",
                 f"base_dir={app_root}", "timeout=300")
    assert ret.returncode == 0, ret.stdout + ret.stderr
    expected = tree(source)
    assert len(expected) == 20000 + 200 + 2 + 2  # files, package directories, lib and bin, links
    for minion in MINIONS:
        assert ret.data["minions"][minion]["activated"] is True, ret.data["minions"][minion]
        assert tree(os.path.join(base(app_root, minion, "venv"), "current")) == expected, minion


def test_second_release_then_rollback(salt_run_cli, salt_cli, app_root, tmp_path):
    for version in (1, 2):
        source = make_source(tmp_path / f"v{version}", version)
        ret = deploy(salt_run_cli, f"source={source}", "app=cart", "tgt=murder-m*", f"release=r{version}",
                     f"base_dir={app_root}", "timeout=120")
        assert ret.returncode == 0, ret.stdout
    for minion in MINIONS:
        current = os.path.join(base(app_root, minion, "cart"), "current")
        assert os.readlink(current) == "releases/r2"
        assert open(os.path.join(current, "conf", "app.yaml")).read() == "version: 2\n"

    ret = salt_run_cli.run("murder.rollback", "app=cart", "tgt=murder-m*", f"base_dir={app_root}")
    assert ret.returncode == 0, ret.stdout
    assert ret.data["result"] is True
    for minion in MINIONS:
        current = os.path.join(base(app_root, minion, "cart"), "current")
        assert os.readlink(current) == "releases/r1"

    ret = salt_cli.run("murder.current", f"base_dir={app_root}", "app=cart", minion_tgt=MINIONS[0])
    assert ret.returncode == 0, ret.stdout
    assert "r1" in json.dumps(ret.data)


@pytest.mark.bad_input
@pytest.mark.parametrize("release", ["../evil", "a/b", "with space", "x" * 300])
def test_invalid_release_name_writes_nothing(salt_run_cli, app_root, tmp_path, release):
    source = make_source(tmp_path / "v1", 1)
    ret = deploy(salt_run_cli, f"source={source}", "app=bad", "tgt=murder-m*", f"release={release}",
                 f"base_dir={app_root}")
    assert ret.returncode != 0
    assert "invalid release name" in ret.stdout + ret.stderr
    for minion in MINIONS:
        assert not os.path.exists(base(app_root, minion, "bad"))


@pytest.mark.bad_input
def test_target_matching_no_minion_is_an_error(salt_run_cli, app_root, tmp_path):
    source = make_source(tmp_path / "v1", 1)
    ret = deploy(salt_run_cli, f"source={source}", "app=ghost", "tgt=nobody-*", f"base_dir={app_root}")
    assert ret.returncode != 0
    assert "matches no minion" in ret.stdout + ret.stderr


def test_event_triggered_deploy(salt_master, salt_run_cli, app_root, tmp_path, event_listener):
    source = make_source(tmp_path / "v1", 1)
    request = {"source": source, "app": "evented", "tgt": "murder-m*", "release": "r7", "base_dir": app_root,
               "timeout": 120}
    started = time.time()
    ret = salt_run_cli.run("event.send", "murder/deploy/request", f"data={json.dumps(request)}")
    assert ret.returncode == 0, ret.stdout
    events = event_listener.wait_for_events(
        [(salt_master.id, "murder/deploy/*/complete")], after_time=started, timeout=180
    )
    assert events.found_all_events, "no murder/deploy/*/complete event"
    complete = next(iter(events.matches)).data
    assert complete["release"] == "r7" and complete["result"] is True
    start = event_listener.get_events([(salt_master.id, f"murder/deploy/{complete['deploy_id']}/start")],
                                      after_time=started)
    # The deploy's floor for the peers' progress events, from its fleet size.
    assert [e.data["peer"]["progress_interval"] for e in start] == [len(MINIONS) / 200]
    for minion in MINIONS:
        assert os.readlink(os.path.join(base(app_root, minion, "evented"), "current")) == "releases/r7"


@pytest.mark.fault
def test_minion_down_is_named_and_nothing_is_activated(salt_master, salt_run_cli, app_root, tmp_path):
    down = salt_master.salt_minion_daemon(
        "murder-down", overrides={"murder": dict(LOOPBACK), "master": "127.0.0.1"}
    )
    with down.started(start_timeout=120):
        pass  # its key is now accepted; the minion itself is stopped
    source = make_source(tmp_path / "v1", 1)
    targets = ",".join(MINIONS + ("murder-down",))
    ret = deploy(salt_run_cli, f"source={source}", "app=halfway", f"tgt={targets}", "tgt_type=list",
                 "release=r1", f"base_dir={app_root}", "timeout=25")
    assert ret.returncode != 0
    summary = ret.data
    assert summary["result"] is False
    # Named once it has been silent for silence_timeout (10 s), before the 25 s deadline.
    assert summary["minions"]["murder-down"]["state"] == "failed", summary["minions"]["murder-down"]
    silent = f"no word from the minion for {LOOPBACK['silence_timeout']} s"
    assert silent in summary["minions"]["murder-down"]["comment"]
    assert "murder-down failed: no word" in ret.stdout + ret.stderr
    for minion in MINIONS:
        report = summary["minions"][minion]
        assert report["state"] == "done" and report["activated"] is False
        assert "not activated" in report["comment"]
        root = base(app_root, minion, "halfway")
        assert os.path.isdir(os.path.join(root, "releases", "r1"))
        assert not os.path.lexists(os.path.join(root, "current"))
