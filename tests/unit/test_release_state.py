"""murder.release, murder.rolled_back and the murder.* release functions, through Salt's loader."""
import json
import os
import pathlib
import subprocess
import sys

import pytest
from saltfactories.utils import random_string
from saltfactories.utils.functional import Loaders

from murder_core import release as rel
from salt.exceptions import CommandExecutionError, SaltInvocationError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

A, B, C, D = "20261124T090000Z", "20261125T093000Z", "20261126T101500Z", "20261127T083000Z"


@pytest.fixture(scope="module")
def minion_opts(salt_factories):
    """A minion config that loads ``_modules`` and ``_states`` from the checkout."""
    factory = salt_factories.salt_minion_daemon(
        random_string("release-state-"),
        overrides={"file_client": "local", "module_dirs": [str(REPO_ROOT)]},
    )
    return factory.config.copy()


@pytest.fixture(scope="module")
def loaders(minion_opts):
    return Loaders(minion_opts, loaded_base_name=f"{__name__}.loaded")


@pytest.fixture(autouse=True)
def reset_loaders_state(loaders):
    try:
        yield
    finally:
        loaders.reset_state()


@pytest.fixture
def states(loaders):
    return loaders.states


@pytest.fixture
def modules(loaders):
    return loaders.modules


@pytest.fixture
def tree(tmp_path):
    return rel.ReleaseTree(tmp_path / "app")


def make_release(tree, name):
    staging = rel.staging_dir(tree, name)
    pathlib.Path(staging, "COMPLETE").write_text(name)
    os.rename(staging, tree.release_dir(name))


def snapshot(tree):
    """What a failed state must leave alone: the current link and the release list."""
    link = os.readlink(tree.current_link) if os.path.islink(tree.current_link) else None
    return link, tree.releases(), os.path.isdir(tree.shared_dir)


def test_the_loader_finds_the_state_and_the_module(states, modules):
    assert "murder.release" in states
    assert "murder.rolled_back" in states
    for name in ("activate", "rollback", "releases", "current"):
        assert f"murder.{name}" in modules


# murder.release


def test_release_switches_current_and_reports_old_and_new(states, tree):
    make_release(tree, A)
    make_release(tree, B)
    ret = states.murder.release(name=tree.base_dir, release=A)
    assert ret.result is True
    assert ret.changes == {"current": {"old": None, "new": A}}
    ret = states.murder.release(name=tree.base_dir, release=B)
    assert ret.result is True
    assert ret.changes == {"current": {"old": A, "new": B}}
    assert os.readlink(tree.current_link) == f"releases/{B}"


def test_release_already_current_reports_no_changes(states, tree):
    make_release(tree, A)
    tree.activate(A)
    ret = states.murder.release(name=tree.base_dir, release=A)
    assert ret.result is True
    assert ret.changes == {}
    assert "already current" in ret.comment


def test_release_test_mode_changes_nothing_and_says_what_would_change(states, tree):
    for name in (A, B, C):
        make_release(tree, name)
    tree.activate(B)
    before = snapshot(tree)
    ret = states.murder.release(name=tree.base_dir, release=C, keep=2, shared=["log"], test=True)
    assert ret.result is None
    assert ret.changes == {"current": {"old": B, "new": C}, "shared": ["log"], "removed": [A]}
    assert "would" in ret.comment
    assert snapshot(tree) == before
    assert not os.path.lexists(os.path.join(tree.release_dir(C), "log"))


def test_release_test_mode_with_nothing_to_do_is_true(states, tree):
    make_release(tree, A)
    tree.activate(A)
    ret = states.murder.release(name=tree.base_dir, release=A, keep=5, test=True)
    assert ret.result is True
    assert ret.changes == {}
    assert "already current" in ret.comment


def test_release_links_shared_entries_before_the_switch(states, tree):
    make_release(tree, A)
    ret = states.murder.release(
        name=tree.base_dir, release=A, shared=["log", "tmp"], check_cmd="test -d log/. && test -d tmp/."
    )
    assert ret.result is True, ret.comment
    assert ret.changes == {"current": {"old": None, "new": A}, "shared": ["log", "tmp"]}
    assert os.readlink(os.path.join(tree.release_dir(A), "log")) == "../../shared/log"
    # Linked already: a second run changes nothing.
    ret = states.murder.release(name=tree.base_dir, release=A, shared=["log", "tmp"])
    assert ret.changes == {}


def test_release_removes_old_releases_beyond_keep(states, tree):
    for name in (A, B, C):
        make_release(tree, name)
    tree.activate(B)
    make_release(tree, D)
    ret = states.murder.release(name=tree.base_dir, release=D, keep=2)
    assert ret.result is True
    # B stays as D's rollback target: it was current before D (C is among the newest two).
    assert ret.changes == {"current": {"old": B, "new": D}, "removed": [A]}
    assert tree.releases() == [B, C, D]


def test_release_keep_defaults_to_the_minion_config(states, tree):
    for name in (A, B, C, D):
        make_release(tree, name)
    ret = states.murder.release(name=tree.base_dir, release=D)
    assert ret.result is True
    assert "removed" not in ret.changes  # default keep is 5
    assert tree.releases() == [A, B, C, D]


def test_a_passing_health_check_keeps_the_new_release(states, tree):
    make_release(tree, A)
    make_release(tree, B)
    tree.activate(A)
    # The check runs in the new release's directory, after the switch.
    ret = states.murder.release(
        name=tree.base_dir,
        release=B,
        check_cmd=f"grep -q {B} COMPLETE && readlink ../../current | grep -q {B}",
    )
    assert ret.result is True, ret.comment
    assert "health check passed" in ret.comment
    assert tree.current() == B


def test_a_failing_health_check_rolls_back(states, tree):
    make_release(tree, A)
    make_release(tree, B)
    tree.activate(A)
    ret = states.murder.release(
        name=tree.base_dir, release=B, keep=1, check_cmd="echo 'no pulse' >&2; exit 3"
    )
    assert ret.result is False
    assert "rolled back" in ret.comment
    assert "exited 3" in ret.comment
    assert "no pulse" in ret.comment
    assert ret.changes == {}
    assert tree.current() == A
    assert tree.releases() == [A, B]  # nothing removed after a failed check


def test_a_health_check_that_times_out_rolls_back(states, tree):
    make_release(tree, A)
    make_release(tree, B)
    tree.activate(A)
    ret = states.murder.release(name=tree.base_dir, release=B, check_cmd="sleep 20", check_timeout=1)
    assert ret.result is False
    assert "rolled back" in ret.comment
    assert "timed out" in ret.comment
    assert tree.current() == A


def test_a_failing_health_check_on_the_first_release_removes_current_again(states, tree):
    make_release(tree, A)
    ret = states.murder.release(name=tree.base_dir, release=A, check_cmd="false")
    assert ret.result is False
    assert "rolled back" in ret.comment
    assert not os.path.lexists(tree.current_link)


def test_a_release_not_on_disk_fails_clearly(states, tree):
    make_release(tree, A)
    tree.activate(A)
    ret = states.murder.release(name=tree.base_dir, release=B)
    assert ret.result is False
    assert "not on disk" in ret.comment
    assert tree.release_dir(B) in ret.comment
    assert "swarm" in ret.comment
    assert tree.current() == A


@pytest.mark.parametrize("bad", ["../20261124T090000Z", "a/b", "..", f"{A}/.."])
def test_a_bad_release_name_fails_and_changes_nothing(states, tree, bad):
    make_release(tree, A)
    tree.activate(A)
    before = snapshot(tree)
    ret = states.murder.release(name=tree.base_dir, release=bad, shared=["log"])
    assert ret.result is False
    assert "invalid release name" in ret.comment
    assert "nothing was changed" in ret.comment
    assert snapshot(tree) == before


@pytest.mark.bad_input
@pytest.mark.parametrize("check_cmd", [True, False, 0, ["test", "-d", "."]])
def test_a_check_cmd_that_is_not_a_string_fails_and_changes_nothing(states, modules, tree, check_cmd):
    # check_cmd: true in YAML is a boolean: run, it was the command "True" (exit 127).
    make_release(tree, A)
    make_release(tree, B)
    tree.activate(A)
    before = snapshot(tree)
    ret = states.murder.release(name=tree.base_dir, release=B, shared=["log"], check_cmd=check_cmd)
    assert ret.result is False and ret.changes == {}
    assert "check_cmd must be a shell command as a string" in ret.comment and "quote" in ret.comment
    assert "nothing was changed" in ret.comment
    with pytest.raises(SaltInvocationError, match="check_cmd must be a shell command as a string"):
        modules.murder.activate(tree.base_dir, B, check_cmd=check_cmd)
    assert snapshot(tree) == before


def test_a_relative_base_dir_fails(states):
    ret = states.murder.release(name="srv/myapp", release=A)
    assert ret.result is False
    assert "absolute" in ret.comment


def test_a_state_named_by_its_app_uses_the_minions_base_dir(minion_opts, tmp_path):
    """``myapp: murder.release`` manages the directory a deploy without base_dir uses on that minion."""
    opts = dict(minion_opts, murder={"base_dir": str(tmp_path / "{minion}" / "{app}")})
    states = Loaders(opts, loaded_base_name=f"{__name__}.by_app").states
    tree = rel.ReleaseTree(tmp_path / minion_opts["id"] / "shop")
    make_release(tree, A)
    make_release(tree, B)
    ret = states.murder.release(name="shop", release=A)
    assert ret.result is True and ret.changes == {"current": {"old": None, "new": A}}, ret.comment
    ret = states.murder.release(name="shop", app="shop", release=B)
    assert ret.result is True and tree.current() == B, ret.comment
    ret = states.murder.rolled_back(name="shop")
    assert ret.result is True and tree.current() == A, ret.comment
    assert str(tree.base_dir) in ret.comment
    before = snapshot(tree)
    ret = states.murder.release(name="shop", app="other", release=B)
    assert ret.result is False and "is an app, and app is 'other'" in ret.comment
    assert snapshot(tree) == before


def test_a_real_current_directory_fails_and_is_not_deleted(states, tree):
    make_release(tree, A)
    os.makedirs(os.path.join(tree.current_link, "data"))
    ret = states.murder.release(name=tree.base_dir, release=A, shared=["log"], keep=1)
    assert ret.result is False
    assert "not a symlink" in ret.comment
    assert os.path.isdir(os.path.join(tree.current_link, "data"))
    assert not os.path.lexists(os.path.join(tree.release_dir(A), "log"))
    # test=True fails the same way: it is an error, not a pending change.
    ret = states.murder.release(name=tree.base_dir, release=A, test=True)
    assert ret.result is False


@pytest.mark.parametrize("keep", [0, -2])
def test_keep_below_one_fails_and_changes_nothing(states, tree, keep):
    make_release(tree, A)
    make_release(tree, B)
    tree.activate(A)
    before = snapshot(tree)
    ret = states.murder.release(name=tree.base_dir, release=B, keep=keep)
    assert ret.result is False
    assert "keep" in ret.comment
    assert snapshot(tree) == before


def test_a_bad_shared_entry_fails_and_changes_nothing(states, tree):
    make_release(tree, A)
    ret = states.murder.release(name=tree.base_dir, release=A, shared=["log", "../../etc"])
    assert ret.result is False
    assert "../../etc" in ret.comment
    assert not os.path.lexists(tree.current_link)
    assert os.listdir(tree.release_dir(A)) == ["COMPLETE"]


# murder.rolled_back


def test_rolled_back_goes_to_the_release_before_current(states, tree):
    for name in (A, B, C):
        make_release(tree, name)
    for name in (A, B, C):
        tree.activate(name)
    ret = states.murder.rolled_back(name=tree.base_dir, test=True)
    assert ret.result is None
    assert ret.changes == {"current": {"old": C, "new": B}}
    assert tree.current() == C
    ret = states.murder.rolled_back(name=tree.base_dir)
    assert ret.result is True
    assert ret.changes == {"current": {"old": C, "new": B}}
    assert tree.current() == B


def test_rolled_back_to_a_named_release_is_idempotent(states, tree):
    for name in (A, B, C):
        make_release(tree, name)
    tree.activate(C)
    ret = states.murder.rolled_back(name=tree.base_dir, release=A)
    assert ret.changes == {"current": {"old": C, "new": A}}
    ret = states.murder.rolled_back(name=tree.base_dir, release=A)
    assert ret.result is True
    assert ret.changes == {}
    assert "already current" in ret.comment
    ret = states.murder.rolled_back(name=tree.base_dir, release=A, test=True)
    assert ret.result is True


def test_rolled_back_without_a_previous_release_fails_clearly(states, tree):
    make_release(tree, B)
    tree.activate(B)
    ret = states.murder.rolled_back(name=tree.base_dir)
    assert ret.result is False
    assert f"No release before {B}" in ret.comment
    assert tree.current() == B
    ret = states.murder.rolled_back(name=tree.base_dir, release=A)
    assert ret.result is False
    assert "not on disk" in ret.comment and "murder.fetch" in ret.comment
    assert tree.current() == B


def test_rolled_back_with_nothing_current_fails(states, tree):
    make_release(tree, A)
    ret = states.murder.rolled_back(name=tree.base_dir)
    assert ret.result is False
    assert "No release is current" in ret.comment


# The execution module.


def test_module_activate_current_releases_and_rollback(modules, tree):
    for name in (A, B, C):
        make_release(tree, name)
    assert modules.murder.current(tree.base_dir) is None
    ret = modules.murder.activate(tree.base_dir, B, shared=["log"])
    assert {key: ret[key] for key in ("old", "new", "shared", "removed")} == {
        "old": None,
        "new": B,
        "shared": ["log"],
        "removed": [],
    }
    assert "now current" in ret["comment"]
    ret = modules.murder.activate(tree.base_dir, C, keep=2)
    assert {key: ret[key] for key in ("old", "new", "shared", "removed")} == {
        "old": B,
        "new": C,
        "shared": [],
        "removed": [A],
    }
    assert modules.murder.releases(tree.base_dir) == [B, C]
    assert modules.murder.current(tree.base_dir) == C
    assert modules.murder.rollback(tree.base_dir) == {"old": C, "new": B}
    assert modules.murder.current(tree.base_dir) == B


def test_module_bad_input_is_a_salt_invocation_error(modules, tree):
    make_release(tree, A)
    with pytest.raises(SaltInvocationError, match="invalid release name") as info:
        modules.murder.activate(tree.base_dir, "../x")
    assert info.value.__cause__ is not None
    with pytest.raises(SaltInvocationError, match="absolute"):
        modules.murder.current("relative/app")
    with pytest.raises(SaltInvocationError, match="keep"):
        modules.murder.activate(tree.base_dir, A, keep=0)
    assert modules.murder.current(tree.base_dir) is None


def test_module_layout_problems_are_command_execution_errors(modules, tree):
    make_release(tree, A)
    with pytest.raises(CommandExecutionError, match="no release is current"):
        modules.murder.rollback(tree.base_dir)
    with pytest.raises(CommandExecutionError, match=r"not on disk .*murder\.fetch"):
        modules.murder.activate(tree.base_dir, B)
    os.makedirs(tree.current_link)
    with pytest.raises(CommandExecutionError, match="not a symlink"):
        modules.murder.activate(tree.base_dir, A, shared=["log"])
    assert os.path.isdir(tree.current_link)
    assert not os.path.lexists(os.path.join(tree.release_dir(A), "log"))


def test_module_takes_a_release_id_that_yaml_made_a_number(modules, states, tmp_path):
    tree = rel.ReleaseTree(tmp_path / "app")
    make_release(tree, "20261126101500")
    make_release(tree, "20261127101500")
    assert modules.murder.activate(tree.base_dir, 20261126101500)["new"] == "20261126101500"
    ret = states.murder.release(name=tree.base_dir, release=20261127101500)
    assert ret.changes == {"current": {"old": "20261126101500", "new": "20261127101500"}}


NO_LIBTORRENT = """
import importlib.util, json, sys
sys.modules["libtorrent"] = None  # "import libtorrent" fails, as on a minion without it
spec = importlib.util.spec_from_file_location("murder_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps([module.HAS_LIBTORRENT, module.__virtual__()]))
"""


@pytest.mark.bad_input
def test_module_is_not_loaded_without_libtorrent():
    # A fresh interpreter: no part of the core (which imports libtorrent) is loaded yet.
    found = subprocess.run([sys.executable, "-c", NO_LIBTORRENT, str(REPO_ROOT / "_modules" / "murder.py")],
                           capture_output=True, text=True, timeout=60, check=False)
    assert found.returncode == 0, found.stderr
    has_libtorrent, (loaded, reason) = json.loads(found.stdout)
    assert has_libtorrent is False and loaded is False
    assert "the libtorrent Python bindings are not installed" in reason


def test_module_expands_base_dir_for_app_and_minion(modules, minion_opts, tmp_path):
    template = str(tmp_path / "{minion}" / "{app}")
    tree = rel.ReleaseTree(tmp_path / minion_opts["id"] / "shop")
    make_release(tree, A)
    make_release(tree, B)
    assert modules.murder.activate(template, A, app="shop")["new"] == A
    assert modules.murder.activate(base_dir=template, release=B, app="shop")["old"] == A
    assert modules.murder.current(template, app="shop") == B
    assert modules.murder.releases(template, app="shop") == [A, B]
    assert modules.murder.rollback(template, app="shop") == {"old": B, "new": A}
    assert tree.current() == A
    with pytest.raises(SaltInvocationError, match="app"):
        modules.murder.current(template)
    with pytest.raises(SaltInvocationError, match="invalid app name"):
        modules.murder.current(template, app="../shop")


def test_module_health_check_failure_rolls_back_and_raises(modules, tree):
    make_release(tree, A)
    make_release(tree, B)
    tree.activate(A)
    with pytest.raises(CommandExecutionError, match="rolled back.*exited 4"):
        modules.murder.activate(tree.base_dir, B, keep=1, check_cmd="exit 4")
    assert tree.current() == A
    assert tree.releases() == [A, B]
    ret = modules.murder.activate(tree.base_dir, B, check_cmd="test -f COMPLETE", check_timeout=10)
    assert ret["new"] == B
    assert tree.current() == B
