"""Bad input to a deploy, on a real master and real minions: a clear error, and nothing written.

Release names and a target matching no minion are tried in ``tests/deploy``;
unsafe archives member by member in ``tests/unit/test_pack.py``; garbage
announces in ``tests/unit/test_tracker.py``. Here: what reaches ``salt-run``.
"""
import io
import os
import subprocess
import tarfile
import time

import pytest

from .conftest import ORDINARY, base, current, deploy, make_small_source

pytestmark = [pytest.mark.bad_input, pytest.mark.usefixtures("salt_minions")]

# salt-run as root without the capabilities that let root read any file: so "unreadable" means it.
UNPRIVILEGED = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def missing(tmp_path):
    return {"source": str(tmp_path / "no-such-build")}


def unreadable_directory(tmp_path):
    source = make_small_source(tmp_path / "locked", 1)
    os.chmod(source, 0)
    return {"source": source}


def unreadable_file(tmp_path):
    source = make_small_source(tmp_path / "locked-file", 1)
    os.chmod(os.path.join(source, "VERSION"), 0)
    return {"source": source}


def empty(tmp_path):
    (tmp_path / "empty").mkdir()
    return {"source": str(tmp_path / "empty")}


def archive_escaping(tmp_path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        member = tarfile.TarInfo("../../outside")
        member.size = 4
        tar.addfile(member, io.BytesIO(b"evil"))
    return {"source": str(path)}


CASES = {
    "source does not exist": (missing, "does not exist"),
    "source directory unreadable": (unreadable_directory, "is not readable"),
    "file in source unreadable": (unreadable_file, "Permission denied"),
    "source is an empty directory": (empty, "is empty"),
    "archive with ../ member": (archive_escaping, "refusing archive member '../../outside'"),
    "app name with ..": (lambda tmp_path: {"app": "../etc"}, "invalid app name"),
    "app name is a path": (lambda tmp_path: {"app": "/srv/shop"}, "invalid app name"),
    "relative base_dir": (lambda tmp_path: {"base_dir": "srv/{app}"}, "must be an absolute path"),
    "base_dir is /": (lambda tmp_path: {"base_dir": "/"}, "must be a directory below /"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_deploy_input_is_refused_and_writes_nothing(
    app, case, salt_master, salt_run_cli, app_root, tmp_path, event_listener
):
    make, message = CASES[case]
    arguments = {"source": make_small_source(tmp_path / "good", 1), "app": app, "base_dir": app_root}
    arguments.update(make(tmp_path))
    work = os.path.join(salt_master.config["murder"]["store_dir"], "work")
    before = time.time()

    command = salt_run_cli.cmdline(
        "murder.deploy", *(f"{key}={value}" for key, value in arguments.items()),
        f"tgt={','.join(ORDINARY)}", "tgt_type=list", "release=r1", "timeout=30",
    )
    ret = subprocess.run(UNPRIVILEGED + command, capture_output=True, text=True, timeout=120,
                         env=salt_run_cli.environ, check=False)

    assert ret.returncode != 0, ret.stdout
    assert message in ret.stdout, ret.stdout
    root = os.path.dirname(os.path.dirname(app_root))
    assert os.listdir(root) == []
    assert not any(os.path.lexists(os.path.join("/", name)) for name in ("releases", ".murder", "current"))
    assert not os.path.isdir(work) or os.listdir(work) == []
    assert not event_listener.get_events([(salt_master.id, "murder/deploy/*/start")], after_time=before)


def test_minion_without_libtorrent_is_named_at_once(app, start_minion, salt_cli, salt_run_cli, app_root, tmp_path):
    shim = tmp_path / "no-libtorrent"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text('import sys\nsys.modules["libtorrent"] = None  # no libtorrent here\n')
    bare = start_minion("fault-bare", environ={"PYTHONPATH": str(shim)})

    ret = salt_cli.run("murder.current", "app=shop", minion_tgt=bare.id)
    assert ret.returncode != 0
    assert "the libtorrent Python bindings are not installed" in ret.stdout

    timeout = 60
    ret = deploy(salt_run_cli, make_small_source(tmp_path / "v1", 1), app, ["fault-a", bare.id], "r1", app_root,
                 timeout=timeout)

    assert ret.returncode != 0
    report = ret.data["minions"][bare.id]
    assert report["state"] == "failed" and "libtorrent" in report["comment"], report
    assert f"{bare.id} failed:" in ret.stdout + ret.stderr
    assert ret.data["seconds"] < timeout / 2, "named only at the deadline"
    assert ret.data["minions"]["fault-a"]["activated"] is False
    assert current(app_root, "fault-a", app) is None
    assert not os.path.exists(base(app_root, bare.id, app))


@pytest.mark.parametrize("torrent", [b"d4:infoi3ee", b"not bencoded at all", b"d8:announce3:abc4:infod4:name1:xee"],
                         ids=["info-not-a-dict", "not-bencoded", "no-pieces"])
def test_malformed_torrent_handed_to_murder_peer_is_a_clear_error(salt_cli, app_root, torrent):
    import base64

    ret = salt_cli.run("murder.peer", "app=shop", "release=r-bad", f"torrent={base64.b64encode(torrent).decode()}",
                       f"sha256={'ab' * 32}", "size=10", "info_hash=00", "deploy_id=shop-r-bad-test", f"base_dir={app_root}",
                       minion_tgt=ORDINARY[0])
    assert ret.returncode != 0
    assert "not a valid torrent" in ret.stdout, ret.stdout
    assert not os.path.exists(base(app_root, ORDINARY[0], "shop"))
