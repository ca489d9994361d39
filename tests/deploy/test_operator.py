"""What an operator hits first, on the real master and minions of ``tests/deploy``.

A release name reused for other content, a deploy without ``base_dir``,
peers that must end their jobs once the swarm is complete, a ``check_cmd``
that is not a string, and misspelled arguments, on the CLI and through the
``murder/deploy/request`` reaction.
"""
import json
import os
import subprocess
import time

import pytest

from .conftest import MINIONS, make_source

pytestmark = pytest.mark.usefixtures("salt_minions")

TARGET = ",".join(MINIONS)


def deploy(salt_run_cli, *args):
    return salt_run_cli.run("murder.deploy", f"tgt={TARGET}", "tgt_type=list", "timeout=120", *args)


def where(template, minion, app):
    return template.format(minion=minion, app=app)


def current(template, minion, app):
    link = os.path.join(where(template, minion, app), "current")
    return os.readlink(link) if os.path.islink(link) else None


@pytest.mark.bad_input
def test_a_release_name_reused_for_other_content_fails_and_changes_nothing(salt_run_cli, app_root, tmp_path):
    first = make_source(tmp_path / "v1", 1)
    ret = deploy(salt_run_cli, f"source={first}", "app=same", "release=r1", f"base_dir={app_root}")
    assert ret.returncode == 0, ret.stdout
    # The same content under the same name is a no-op.
    ret = deploy(salt_run_cli, f"source={first}", "app=same", "release=r1", f"base_dir={app_root}")
    assert ret.returncode == 0 and ret.data["changed"] is False, ret.stdout

    # The master refuses the name while it still has the release published...
    other = make_source(tmp_path / "v2", 2)
    ret = deploy(salt_run_cli, f"source={other}", "app=same", "release=r1", f"base_dir={app_root}")
    assert ret.returncode != 0 and ret.data["result"] is False
    assert "release r1 of app same is already published with other content" in ret.data["error"]
    assert {host["state"] for host in ret.data["minions"].values()} == {"not started"}, ret.stdout
    assert_still_first(app_root)

    # ... and each minion refuses it once the master no longer remembers it (keep_published: 3).
    for number in (2, 3, 4):
        published = salt_run_cli.run("murder.publish", f"source={make_source(tmp_path / f'p{number}', number)}",
                                     "app=same", f"release=r{number}")
        assert published.returncode == 0 and published.data["changed"] is True, published.stdout
    listed = salt_run_cli.run("murder.published", "app=same")
    assert [item["release"] for item in listed.data["published"]] == ["r4", "r3", "r2"], listed.stdout
    ret = deploy(salt_run_cli, f"source={other}", "app=same", "release=r1", f"base_dir={app_root}")
    assert ret.returncode != 0 and ret.data["result"] is False
    for minion in MINIONS:
        report = ret.data["minions"][minion]
        assert report["state"] == "failed" and report["activated"] is False, report
        assert "release r1 on this host holds different content" in report["comment"]
        assert "deploy under a new release name" in report["comment"]
    assert_still_first(app_root)


def assert_still_first(app_root):
    for minion in MINIONS:
        root = where(app_root, minion, "same")
        assert open(os.path.join(root, "current", "conf", "app.yaml")).read() == "version: 1\n"
        assert sorted(os.listdir(os.path.join(root, ".murder", "r1"))) == ["same-r1.tar.zst", "sha256"]


def test_without_base_dir_each_minion_uses_its_own_setting(salt_run_cli, own_base_dir, tmp_path):
    for version in (1, 2):
        source = make_source(tmp_path / f"v{version}", version)
        ret = deploy(salt_run_cli, f"source={source}", "app=own", f"release=r{version}")
        assert ret.returncode == 0, ret.stdout
    assert not os.path.exists("/srv/own")  # the default, which the master would have sent
    for minion in MINIONS:
        assert current(own_base_dir, minion, "own") == "releases/r2"

    ret = salt_run_cli.run("murder.rollback", "app=own", f"tgt={TARGET}", "tgt_type=list")
    assert ret.returncode == 0, ret.stdout
    for minion in MINIONS:
        assert current(own_base_dir, minion, "own") == "releases/r1"


def test_finished_peers_end_their_jobs_once_the_swarm_is_complete(salt_master, salt_run_cli, app_root, tmp_path,
                                                                    event_listener):
    started = time.time()
    ret = deploy(salt_run_cli, f"source={make_source(tmp_path / 'v1', 1)}", "app=brief", "release=r1",
                 f"base_dir={app_root}")
    assert ret.returncode == 0, ret.stdout
    # The minions' linger limit is the default, 60 s; their jobs must end on the swarm's word first.
    # Each minion also returns its activation job: wait for the murder.peer returns themselves.
    deadline = time.monotonic() + 45
    while True:
        peers = {event.data["id"]: event.data for event in event_listener.get_events(
            [(salt_master.id, "salt/job/*/ret/*")], after_time=started) if event.data.get("fun") == "murder.peer"}
        if set(peers) == set(MINIONS) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert set(peers) == set(MINIONS), f"murder.peer still running on {set(MINIONS) - set(peers)}"
    assert {data["return"]["linger"] for data in peers.values()} <= {"swarm complete", "tracker gone"}, peers


@pytest.mark.bad_input
def test_a_check_cmd_that_is_not_a_string_is_refused_before_anything_runs(salt_run_cli, salt_cli, app_root,
                                                                           tmp_path):
    ret = deploy(salt_run_cli, f"source={make_source(tmp_path / 'v1', 1)}", "app=unquoted", "release=r1",
                 f"base_dir={app_root}", "check_cmd=true")
    assert ret.returncode != 0
    assert "check_cmd must be a shell command as a string" in ret.stdout + ret.stderr
    assert "quote the command" in ret.stdout + ret.stderr
    for minion in MINIONS:
        assert not os.path.exists(where(app_root, minion, "unquoted"))
    ret = salt_cli.run("murder.activate", "app=unquoted", "release=r1", f"base_dir={app_root}", "check_cmd=true",
                       minion_tgt=MINIONS[0])
    assert ret.returncode != 0
    assert "check_cmd must be a shell command as a string" in ret.stdout + ret.stderr


@pytest.mark.bad_input
@pytest.mark.parametrize("function,arguments,named", [
    ("murder.deploy", ["app=typo", "release=r1", "relase=r1"], "relase (did you mean release?)"),
    ("murder.deploy", ["app=typo", "release=r1", "bogus=1"], "bogus"),
    ("murder.rollback", ["app=typo", "relase=r1"], "relase (did you mean release?)"),
    ("murder.rollback", ["app=typo", "bogus=1"], "bogus"),
    ("murder.status", ["deploy_idd=x"], "deploy_idd (did you mean deploy_id?)"),
    ("murder.status", ["bogus=1"], "bogus"),
])
def test_an_unknown_runner_argument_fails_the_command(salt_run_cli, app_root, tmp_path, function, arguments, named):
    source = make_source(tmp_path / "v1", 1)
    extra = [f"source={source}", f"base_dir={app_root}"] if function == "murder.deploy" else []
    if function != "murder.status":
        extra.append(f"tgt={TARGET}")
        extra.append("tgt_type=list")
    ret = salt_run_cli.run(function, *extra, *arguments)
    assert ret.returncode != 0, ret.stdout
    said = ret.stdout + ret.stderr
    assert f"{function} does not take {named}" in said
    assert "It takes: " in said and "CLI Example" not in said  # an error, not the docstring
    for minion in MINIONS:
        assert not os.path.exists(where(app_root, minion, "typo"))


def test_a_deploy_request_event_passes_every_argument(salt_master, salt_run_cli, app_root, tmp_path,
                                                      event_listener):
    request = {"source": make_source(tmp_path / "v1", 1), "app": "asked", "tgt": TARGET, "tgt_type": "list",
               "release": "r1", "base_dir": app_root, "timeout": 120, "shared": ["log"],
               "check_cmd": "test -d log/. && test -f conf/app.yaml", "check_timeout": 20}
    complete = send_request(salt_master, salt_run_cli, event_listener, request)
    assert complete["result"] is True, complete
    for minion in MINIONS:
        root = where(app_root, minion, "asked")
        assert os.path.islink(os.path.join(root, "releases", "r1", "log"))  # shared reached the activation
        assert "health check passed" in complete["minions"][minion]["comment"]


@pytest.mark.bad_input
def test_a_deploy_request_with_an_unknown_key_is_recorded_as_failed(salt_master, salt_run_cli, app_root, tmp_path,
                                                                    event_listener):
    request = {"source": make_source(tmp_path / "v1", 1), "app": "typo", "tgt": TARGET, "tgt_type": "list",
               "relase": "r1", "base_dir": app_root}
    complete = send_request(salt_master, salt_run_cli, event_listener, request)
    assert complete["result"] is False and complete["state"] == "refused"
    assert "murder.deploy does not take relase (did you mean release?)" in complete["error"]
    # No release was given: none is made up for the record.
    assert complete["release"] is None and complete["deploy_id"].startswith("typo-refused-"), complete
    status = salt_run_cli.run("murder.status", f"deploy_id={complete['deploy_id']}")
    assert status.returncode == 0 and status.data["state"] == "refused", status.stdout
    for minion in MINIONS:
        assert not os.path.exists(where(app_root, minion, "typo"))


def send_request(salt_master, salt_run_cli, event_listener, request):
    started = time.time()
    ret = salt_run_cli.run("event.send", "murder/deploy/request", f"data={json.dumps(request)}")
    assert ret.returncode == 0, ret.stdout
    events = event_listener.wait_for_events([(salt_master.id, "murder/deploy/*/complete")], after_time=started,
                                            timeout=180)
    assert events.found_all_events, "no murder/deploy/*/complete event"
    return next(iter(events.matches)).data


def send(salt_run_cli, request):
    ret = salt_run_cli.run("event.send", "murder/deploy/request", f"data={json.dumps(request)}")
    assert ret.returncode == 0, ret.stdout


def test_a_ci_job_waits_for_its_request_and_gets_the_outcome_as_exit_code(salt_run_cli, app_root, tmp_path):
    good = {"source": make_source(tmp_path / "v1", 1), "app": "ci", "tgt": TARGET, "tgt_type": "list",
            "release": "r1", "base_dir": app_root, "timeout": 120, "request_id": "ci-good"}
    send(salt_run_cli, good)
    ret = salt_run_cli.run("murder.wait", "request_id=ci-good")
    assert ret.returncode == 0 and ret.data["result"] is True and ret.data["request_id"] == "ci-good", ret.stdout

    sick = dict(good, source=make_source(tmp_path / "v2", 2), release="r2", check_cmd="exit 3",
                request_id="ci-sick")
    send(salt_run_cli, sick)
    ret = salt_run_cli.run("murder.wait", "request_id=ci-sick")
    assert ret.returncode != 0 and ret.data["result"] is False and ret.data["state"] == "failed", ret.stdout


@pytest.mark.bad_input
def test_waiting_for_a_refused_or_unknown_request_fails(salt_run_cli, app_root, tmp_path):
    send(salt_run_cli, {"source": str(tmp_path / "missing"), "app": "ci", "tgt": TARGET, "request_id": "ci-lost"})
    ret = salt_run_cli.run("murder.wait", "request_id=ci-lost")
    assert ret.returncode != 0 and ret.data["state"] == "refused", ret.stdout
    assert "does not exist on the master" in ret.data["error"]
    ret = salt_run_cli.run("murder.wait", "request_id=ci-never-sent", "timeout=3")
    assert ret.returncode != 0 and "no deploy request 'ci-never-sent' is known" in ret.stdout


def test_salt_run_out_json_prints_one_document(salt_run_cli, app_root, tmp_path):
    command = salt_run_cli.cmdline("murder.deploy", f"source={make_source(tmp_path / 'v1', 1)}", "app=jsonout",
                                   f"tgt={TARGET}", "tgt_type=list", "release=r1", f"base_dir={app_root}",
                                   "timeout=120")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=salt_run_cli.environ)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)  # one document: progress lines are not printed with --out=json
    assert summary["result"] is True and set(summary["minions"]) == set(MINIONS)


def orchestrate(salt_run_cli, deploy_arguments):
    return salt_run_cli.run("state.orchestrate", "murder.orchestrate",
                            f"pillar={json.dumps({'deploy': deploy_arguments})}")


def orchestration_states(ret):
    """{state id: its return} wherever the orchestration's output nests them."""
    found, todo = {}, [ret.data]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(key, str) and key.count("_|-") == 3 and isinstance(value, dict):
                    found[key.split("_|-")[1]] = value
                else:
                    todo.append(value)
    return found


def test_the_shipped_orchestration_runs_its_next_step_only_after_a_deploy_that_succeeded(salt_run_cli, app_root,
                                                                                       tmp_path):
    arguments = {"source": make_source(tmp_path / "v1", 1), "app": "orch", "tgt": TARGET, "tgt_type": "list",
                 "release": "r1", "base_dir": app_root, "timeout": 120}
    ret = orchestrate(salt_run_cli, arguments)
    assert ret.returncode == 0, ret.stdout
    states = orchestration_states(ret)
    assert states["murder-deploy"]["result"] is True and states["after-the-deploy"]["result"] is True, states
    assert all(os.readlink(os.path.join(where(app_root, m, "orch"), "current")) == "releases/r1" for m in MINIONS)

    # A failed health check: murder.deploy gets check_cmd (Salt's own check_cmd must not take it) and fails.
    failing = dict(arguments, source=make_source(tmp_path / "v2", 2), release="r2", check_cmd="exit 3")
    ret = orchestrate(salt_run_cli, failing)
    assert ret.returncode != 0, ret.stdout
    states = orchestration_states(ret)
    assert states["murder-deploy"]["result"] is False, states
    assert states["murder-deploy"]["changes"]["return"]["state"] == "failed"
    assert "failed its health check" in json.dumps(states["murder-deploy"]["changes"]["return"])
    assert states["after-the-deploy"]["result"] is False and "requisite" in states["after-the-deploy"]["comment"]
    assert all(os.readlink(os.path.join(where(app_root, m, "orch"), "current")) == "releases/r1" for m in MINIONS)

    # A deploy refused before it starts fails the orchestration too.
    ret = orchestrate(salt_run_cli, dict(arguments, source=str(tmp_path / "missing"), release="r3"))
    assert ret.returncode != 0, ret.stdout
    assert orchestration_states(ret)["murder-deploy"]["result"] is False


def test_salt_run_shows_one_line_per_update_and_a_compact_summary_by_default(salt_run_cli, app_root, tmp_path):
    command = [arg for arg in salt_run_cli.cmdline(
        "murder.deploy", f"source={make_source(tmp_path / 'v1', 1)}", "app=plain", f"tgt={TARGET}",
        "tgt_type=list", "release=r1", f"base_dir={app_root}", "timeout=120") if not arg.startswith("--out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=salt_run_cli.environ)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("deploy plain-r1-") and " SUCCEEDED in " in done.stdout.splitlines()[0]
    assert "3 hosts: 3 activated" in done.stdout
    assert "event:" not in done.stdout + done.stderr  # no progress event blocks
    assert "3/3 hosts done" in done.stderr
    failing = [arg for arg in salt_run_cli.cmdline(
        "murder.deploy", f"source={make_source(tmp_path / 'v2', 2)}", "app=plain", f"tgt={TARGET}",
        "tgt_type=list", "release=r2", f"base_dir={app_root}", "timeout=120", "check_cmd=exit 3")
        if not arg.startswith("--out")]
    done = subprocess.run(failing, capture_output=True, text=True, timeout=300, env=salt_run_cli.environ)
    assert done.returncode != 0 and " FAILED in " in done.stdout.splitlines()[0], done.stdout
    assert "rolled back" in done.stdout  # the hosts' lines say why
