"""The release layout: activate, shared links, keep, rollback, and the atomic switch."""
import os
import shutil
import threading
import time

import pytest

from murder_core import release as rel
from murder_core.errors import InvalidInput, ReleaseError

# Sortable release ids, oldest first.
A, B, C, D, E = (
    "20261124T090000Z",
    "20261125T093000Z",
    "20261126T101500Z",
    "20261127T083000Z",
    "20261128T120000Z",
)


def make_release(tree, name, files=None):
    """Write a release the way the unpacker does: in staging, then renamed into place."""
    staging = rel.staging_dir(tree, name)
    for path, text in (files or {}).items():
        full = os.path.join(staging, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as handle:
            handle.write(text)
    with open(os.path.join(staging, "COMPLETE"), "w", encoding="utf-8") as handle:
        handle.write(name)
    os.rename(staging, tree.release_dir(name))
    return tree.release_dir(name)


@pytest.fixture
def tree(tmp_path):
    return rel.ReleaseTree(tmp_path / "app")


# Layout.


def test_an_empty_base_dir_has_no_releases_and_no_current(tree):
    assert tree.releases() == []
    assert tree.current() is None
    assert tree.previous() is None
    assert not os.path.exists(tree.base_dir)  # reading never creates anything


def test_layout_paths_follow_capistrano(tree, tmp_path):
    base = str(tmp_path / "app")
    assert tree.base_dir == base
    assert tree.releases_dir == os.path.join(base, "releases")
    assert tree.shared_dir == os.path.join(base, "shared")
    assert tree.current_link == os.path.join(base, "current")
    assert tree.release_dir(A) == os.path.join(base, "releases", A)


def test_releases_are_sorted_by_name_and_ignore_hidden_files_and_bad_names(tree):
    for name in (C, A, B):
        make_release(tree, name)
    os.makedirs(os.path.join(tree.releases_dir, ".removing-x"))
    os.makedirs(os.path.join(tree.releases_dir, "not a release"))
    with open(os.path.join(tree.releases_dir, "20261126T999999Z"), "w", encoding="utf-8") as handle:
        handle.write("a file, not a release")
    os.symlink(tree.release_dir(A), os.path.join(tree.releases_dir, "20261126T888888Z"))
    assert tree.releases() == [A, B, C]


def test_staging_dir_follows_the_convention_and_is_never_a_release(tree):
    staging = rel.staging_dir(tree.base_dir, A)
    parent, name = os.path.split(staging)
    assert parent == tree.releases_dir
    assert name.startswith(f"{rel.STAGING_PREFIX}{A}-")
    assert os.path.isdir(staging)
    assert tree.releases() == []
    assert not tree.has(A)
    with pytest.raises(ReleaseError, match=A):
        tree.activate(A)
    assert tree.current() is None
    # A second writer of the same release gets its own directory.
    assert rel.staging_dir(tree, A) != staging


def test_staging_dir_refuses_a_bad_release_name(tree):
    with pytest.raises(InvalidInput):
        rel.staging_dir(tree, "../escape")
    assert not os.path.exists(tree.base_dir)


@pytest.mark.bad_input
@pytest.mark.parametrize("base_dir", ["relative/app", "app", "", None, 5])
def test_base_dir_must_be_absolute(base_dir):
    with pytest.raises(InvalidInput, match="absolute"):
        rel.ReleaseTree(base_dir)


@pytest.mark.bad_input
@pytest.mark.parametrize("base_dir", ["/", "//", "/srv/../etc", "/srv/app/.."])
def test_base_dir_must_be_below_root_without_dot_dot(base_dir):
    with pytest.raises(InvalidInput, match="below /"):
        rel.ReleaseTree(base_dir)


@pytest.mark.bad_input
@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "", "x/../y", "/abs"])
def test_bad_release_names_are_invalid_input(tree, name):
    make_release(tree, A)
    with pytest.raises(InvalidInput):
        tree.activate(name)
    with pytest.raises(InvalidInput):
        tree.release_dir(name)
    assert tree.current() is None


# Activation.


def test_activate_writes_a_relative_link_and_reports_old_and_new(tree):
    make_release(tree, A)
    make_release(tree, B)
    assert tree.activate(A) == (None, A)
    assert os.readlink(tree.current_link) == f"releases/{A}"
    assert tree.current() == A
    assert tree.activate(B) == (A, B)
    assert os.readlink(tree.current_link) == f"releases/{B}"
    assert os.path.realpath(tree.current_link) == os.path.realpath(tree.release_dir(B))
    # No temporary link is left beside current.
    assert sorted(os.listdir(tree.base_dir)) == [".murder", "current", "releases"]
    assert os.listdir(os.path.join(tree.base_dir, ".murder")) == [".activated"]


def test_activating_the_current_release_changes_nothing(tree):
    make_release(tree, A)
    tree.activate(A)
    before = os.lstat(tree.current_link)
    assert tree.activate(A) == (A, A)
    after = os.lstat(tree.current_link)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_activate_a_release_not_on_disk_names_it_and_changes_nothing(tree):
    make_release(tree, A)
    tree.activate(A)
    with pytest.raises(ReleaseError, match=f"{B}.*{tree.release_dir(B)}"):
        tree.activate(B)
    assert tree.current() == A


def test_a_real_current_directory_is_refused_and_left_alone(tree):
    make_release(tree, A)
    os.makedirs(os.path.join(tree.current_link, "data"))
    with pytest.raises(ReleaseError, match="not a symlink"):
        tree.activate(A)
    with pytest.raises(ReleaseError, match="not a symlink"):
        tree.cleanup(1)
    assert os.path.isdir(os.path.join(tree.current_link, "data"))
    assert not os.path.islink(tree.current_link)


def test_a_current_pointing_outside_releases_is_refused(tree, tmp_path):
    make_release(tree, A)
    os.symlink(str(tmp_path), tree.current_link)
    with pytest.raises(ReleaseError, match="not a release"):
        tree.current()
    with pytest.raises(ReleaseError):
        tree.activate(A)
    assert os.readlink(tree.current_link) == str(tmp_path)


def test_an_absolute_current_link_as_capistrano_writes_it_is_understood(tree):
    make_release(tree, A)
    make_release(tree, B)
    os.symlink(tree.release_dir(A), tree.current_link)
    assert tree.current() == A
    assert tree.activate(B) == (A, B)
    assert os.readlink(tree.current_link) == f"releases/{B}"


# Shared entries.


def test_link_shared_links_each_entry_relatively_and_creates_missing_directories(tree):
    make_release(tree, A, files={"log/shipped.log": "from the release\n", "config/default.yaml": "x"})
    os.makedirs(os.path.join(tree.shared_dir, "config"))
    with open(os.path.join(tree.shared_dir, "config", "app.yaml"), "w", encoding="utf-8") as handle:
        handle.write("secret: 1\n")
    linked = tree.link_shared(A, ["log", "tmp", "config/app.yaml"])
    assert linked == ["log", "tmp", "config/app.yaml"]
    release_dir = tree.release_dir(A)
    assert os.readlink(os.path.join(release_dir, "log")) == "../../shared/log"
    assert os.readlink(os.path.join(release_dir, "config", "app.yaml")) == "../../../shared/config/app.yaml"
    assert os.path.isdir(os.path.join(tree.shared_dir, "tmp"))
    # The release's own log directory gave way to the shared one.
    assert os.listdir(os.path.join(release_dir, "log")) == []
    with open(os.path.join(release_dir, "config", "app.yaml"), encoding="utf-8") as handle:
        assert handle.read() == "secret: 1\n"
    # Files the release ships beside a shared entry stay.
    assert os.path.isfile(os.path.join(release_dir, "config", "default.yaml"))
    # Linking again changes nothing.
    assert tree.unlinked_shared(A, ["log", "tmp", "config/app.yaml"]) == []
    assert tree.link_shared(A, ["log", "tmp", "config/app.yaml"]) == []


def test_link_shared_refuses_to_invent_a_shared_file_and_links_nothing(tree):
    make_release(tree, A, files={"config/app.yaml": "release copy\n"})
    with pytest.raises(ReleaseError, match="config/app.yaml"):
        tree.link_shared(A, ["log", "config/app.yaml"])
    assert not os.path.lexists(os.path.join(tree.release_dir(A), "log"))
    assert not os.path.islink(os.path.join(tree.release_dir(A), "config", "app.yaml"))


@pytest.mark.parametrize(
    "shared",
    [["../etc"], ["/etc/passwd"], ["a/../../b"], [""], ["./log"], "log", [5], ["config", "config/app.yaml"]],
)
def test_bad_shared_entries_are_invalid_input(tree, shared):
    make_release(tree, A)
    with pytest.raises(InvalidInput):
        tree.link_shared(A, shared)
    assert os.listdir(tree.release_dir(A)) == ["COMPLETE"]
    assert not os.path.exists(tree.shared_dir)


def test_link_shared_will_not_follow_a_symlink_out_of_the_release(tree, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    make_release(tree, A)
    os.symlink(str(outside), os.path.join(tree.release_dir(A), "config"))
    with pytest.raises(ReleaseError, match="symlink"):
        tree.link_shared(A, ["config/app.yaml"])
    assert list(outside.iterdir()) == []


# Rollback.


def test_previous_is_the_release_current_before(tree):
    for name in (A, B, C):
        make_release(tree, name)
    for name in (A, B, C):
        tree.activate(name)
    assert tree.previous() == B
    assert tree.previous(B) == A
    assert tree.previous(A) is None


def test_rollback_goes_to_the_previous_release_then_further(tree):
    for name in (A, B, C):
        make_release(tree, name)
    for name in (A, B, C):
        tree.activate(name)
    assert tree.rollback() == (C, B)
    assert tree.current() == B
    assert tree.rollback() == (B, A)
    with pytest.raises(ReleaseError, match=f"no release before {A}"):
        tree.rollback()
    assert tree.current() == A


def test_rollback_to_a_named_release(tree):
    for name in (A, B, C):
        make_release(tree, name)
    tree.activate(C)
    assert tree.rollback(to=A) == (C, A)
    assert tree.current() == A
    with pytest.raises(ReleaseError, match=D):
        tree.rollback(to=D)
    with pytest.raises(InvalidInput):
        tree.rollback(to="../x")
    assert tree.current() == A


def test_rollback_with_nothing_current_fails_clearly(tree):
    make_release(tree, A)
    with pytest.raises(ReleaseError, match="no release is current"):
        tree.rollback()
    assert tree.current() is None


def test_revert_restores_the_release_before_or_no_current_at_all(tree):
    make_release(tree, A)
    make_release(tree, B)
    tree.activate(A)
    tree.activate(B)
    assert tree.revert(A) == (B, A)
    assert tree.current() == A
    assert tree.revert(None) == (A, None)
    assert not os.path.lexists(tree.current_link)
    assert tree.releases() == [A, B]


# Activation as a whole: plan, shared links, switch, health check, clean-up.


def healthy_if(marker):
    """A health check that passes when the release holds ``marker``."""

    def check(release_dir):
        return None if os.path.exists(os.path.join(release_dir, marker)) else f"no {marker}"

    return check


def test_plan_activation_says_what_would_change_and_changes_nothing(tree):
    for name in (A, B, C):
        make_release(tree, name)
    tree.activate(B)
    plan = tree.plan_activation(C, shared=["log"], keep=2)
    assert (plan.old, plan.current, plan.shared, plan.removed) == (B, C, ["log"], [A])
    assert plan.switches and plan.changes_anything
    assert tree.current() == B
    assert tree.releases() == [A, B, C]
    assert not os.path.exists(tree.shared_dir)
    same = tree.plan_activation(B)
    assert not same.switches and not same.changes_anything


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"release": "../x"}, InvalidInput),
        ({"release": A, "keep": 0}, InvalidInput),
        ({"release": A, "shared": ["../etc"]}, InvalidInput),
        ({"release": D}, ReleaseError),
    ],
)
def test_plan_activation_refuses_bad_input_before_anything(tree, kwargs, error):
    make_release(tree, A)
    with pytest.raises(error):
        tree.plan_activation(**kwargs)
    assert tree.current() is None
    assert not os.path.exists(tree.shared_dir)


def test_carry_out_links_switches_checks_and_cleans_up(tree):
    for name in (A, B, C):
        make_release(tree, name)
    tree.activate(B)
    done = tree.carry_out(tree.plan_activation(C, shared=["log"], keep=2), check=healthy_if("COMPLETE"))
    assert (done.old, done.current, done.check_failed) == (B, C, None)
    assert (done.shared, done.removed) == (["log"], [A])
    assert tree.current() == C
    assert tree.releases() == [B, C]
    assert os.path.islink(os.path.join(tree.release_dir(C), "log"))


@pytest.mark.fault
def test_a_failed_check_puts_the_old_release_back_and_removes_nothing(tree):
    for name in (A, B, C):
        make_release(tree, name)
    tree.activate(B)
    done = tree.carry_out(tree.plan_activation(C, keep=1), check=healthy_if("HEALTHY"))
    assert done.check_failed == "no HEALTHY"
    assert (done.old, done.current, done.removed) == (B, B, [])
    assert not done.switches
    assert tree.current() == B
    assert tree.releases() == [A, B, C]


def test_a_failed_check_on_the_first_release_leaves_no_current(tree):
    make_release(tree, A)
    done = tree.carry_out(tree.plan_activation(A), check=healthy_if("HEALTHY"))
    assert done.check_failed == "no HEALTHY"
    assert done.current is None
    assert not os.path.lexists(tree.current_link)


def test_the_check_runs_only_when_current_switches(tree):
    make_release(tree, A)
    tree.activate(A)
    calls = []
    done = tree.carry_out(tree.plan_activation(A), check=lambda path: calls.append(path))
    assert calls == []
    assert not done.changes_anything


@pytest.mark.parametrize(
    "result, reason",
    [
        ({"retcode": 0, "stdout": "ok", "stderr": ""}, None),
        ({"retcode": 7, "stdout": "", "stderr": "curl: (7) refused\n"}, "exited 7: curl: (7) refused"),
        ({"retcode": 1, "stdout": "", "stderr": ""}, "exited 1: no output"),
        ({"retcode": 1, "stdout": "sleep 9 : Timed out after 2 seconds", "stderr": ""}, "timed out after 2s"),
    ],
)
def test_check_failure_says_why(result, reason):
    found = rel.check_failure("probe", 2, result)
    if reason is None:
        assert found is None
    else:
        assert found.startswith("check_cmd 'probe' ") and found.endswith(reason)


# Keep.


def test_cleanup_keeps_the_newest_and_removes_the_rest(tree):
    for name in (A, B, C, D, E):
        make_release(tree, name)
    tree.activate(E)
    assert tree.expired(2) == [A, B, C]
    assert tree.cleanup(2) == [A, B, C]
    assert tree.releases() == [D, E]
    assert sorted(os.listdir(tree.releases_dir)) == [D, E]  # nothing half-removed left
    assert tree.cleanup(2) == []


def test_cleanup_never_removes_current_nor_its_rollback_target(tree):
    for name in (A, B, C, D, E):
        make_release(tree, name)
    tree.activate(A)
    tree.activate(B)  # rolled back to an old release
    assert tree.cleanup(1) == [C, D]
    assert tree.releases() == [A, B, E]
    assert tree.current() == B


def test_keep_one_still_keeps_the_rollback_target(tree):
    for name in (A, B, C):
        make_release(tree, name)
    for name in (A, B, C):
        tree.activate(name)
    assert tree.cleanup(1) == [A]
    assert tree.releases() == [B, C]
    assert tree.rollback() == (C, B)


def test_expired_can_preview_another_current(tree):
    for name in (A, B, C, D):
        make_release(tree, name)
    tree.activate(A)
    tree.activate(B)
    # D's rollback target is B, the release current before it; C never was.
    assert tree.expired(2, current=D) == [A]
    assert tree.expired(2) == []
    assert tree.expired(1) == [C]
    assert tree.releases() == [A, B, C, D]  # previews remove nothing


@pytest.mark.parametrize("keep", [0, -1, True, "5", 2.5, None])
def test_keep_below_one_or_not_a_number_is_invalid_input(tree, keep):
    for name in (A, B, C):
        make_release(tree, name)
    with pytest.raises(InvalidInput, match="keep"):
        tree.cleanup(keep)
    assert tree.releases() == [A, B, C]


# Atomicity.


def test_current_is_never_missing_nor_half_written_during_switches(tree):
    names = [A, B, C]
    for name in names:
        make_release(tree, name)
    tree.activate(A)
    complete = {f"releases/{name}" for name in names}
    stop = threading.Event()
    seen = {"reads": 0, "targets": set(), "bad": []}
    deadline = time.monotonic() + 60

    def reader():
        while not stop.is_set() and seen["reads"] < 5_000_000 and time.monotonic() < deadline:
            try:
                target = os.readlink(tree.current_link)
                real = os.path.realpath(tree.current_link)
            except OSError as exc:
                seen["bad"].append(f"current unreadable: {exc}")
                continue
            seen["reads"] += 1
            seen["targets"].add(target)
            if target not in complete or not os.path.isfile(os.path.join(real, "COMPLETE")):
                seen["bad"].append(f"current -> {target} ({real})")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for switch in range(200):
            # A release being written at the same time must never show.
            staging = rel.staging_dir(tree, D)
            tree.activate(names[(switch + 1) % len(names)])
            os.rmdir(staging)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert seen["bad"] == []
    assert seen["reads"] > 200
    assert len(seen["targets"]) > 1  # the reader really ran during the switches
    assert tree.current() == names[200 % len(names)]
    assert sorted(os.listdir(tree.base_dir)) == [".murder", "current", "releases"]
    assert os.listdir(os.path.join(tree.base_dir, ".murder")) == [".activated"]


def test_command_check_runs_in_the_release_and_reports_what_could_not_run(tmp_path):
    calls = []

    def run(cmd, cwd, timeout, python_shell):
        calls.append((cmd, cwd, timeout, python_shell))
        return {"retcode": 3, "stdout": "", "stderr": "down\n"}

    assert rel.command_check(run, "probe", 5)(str(tmp_path)) == "check_cmd 'probe' exited 3: down"
    assert calls == [("probe", str(tmp_path), 5, True)]

    def cannot(*args, **kwargs):
        raise LookupError("no shell")

    assert rel.command_check(cannot, "probe", 5, errors=(LookupError,))(str(tmp_path)) == (
        "check_cmd 'probe' could not run: no shell")
    with pytest.raises(LookupError):  # anything else is a bug, not a failed check
        rel.command_check(cannot, "probe", 5)(str(tmp_path))


def test_rollback_skips_a_release_that_was_never_current(tree):
    # A deploy of C failed here after this host had unpacked it; D was deployed after it.
    for name in (A, B, C, D):
        make_release(tree, name)
    for name in (A, B, D):
        tree.activate(name)
    assert tree.previous() == B
    assert tree.rollback() == (D, B)
    # Only releases on disk stay in the record.
    shutil.rmtree(tree.release_dir(A))
    tree.activate(C)
    # D was undone by the rollback: the record is a stack of currents.
    assert open(tree.activated_record).read().split() == [B, C]
    assert tree.previous() == B


def test_a_release_undone_by_a_failed_check_is_never_a_rollback_target(tree):
    for name in (A, B, C, D):
        make_release(tree, name)
    for name in (A, B):
        tree.activate(name)
    tree.activate(C)
    tree.revert(B)  # C failed its health check
    tree.activate(D)
    assert tree.previous() == B
    assert tree.rollback() == (D, B)
    assert tree.rollback() == (B, A)


def test_a_tree_without_a_record_rolls_back_by_name(tree):
    for name in (A, B, C):
        make_release(tree, name)
    tree.activate(C)
    os.unlink(tree.activated_record)  # activated before murder kept the record
    assert tree.previous() == B
