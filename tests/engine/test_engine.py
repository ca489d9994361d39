"""Releases that stay available: the murder engine on a real master, with real minions.

Published releases are seeded by the engine and fetched any time (a
highstate with ``murder.release`` ``fetch: True``, a late joiner with
``murder.fetch``); a deploy runs in the engine, so it outlives an
interrupted or killed ``salt-run``, and an engine killed mid-deploy is
restarted by Salt, fails that deploy with the reason and seeds again.
"""
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest
from saltfactories.utils.tempfiles import temp_file

from .conftest import MINIONS, MiB, make_release

pytestmark = pytest.mark.usefixtures("salt_minions")

FLEET = "eng-[123]"  # the three minions, as a glob

RELEASE_SLS = """
{%- set wanted = pillar['engine_app'] %}
{{ wanted['base_dir'] }}:
  murder.release:
    - app: {{ wanted['app'] }}
    - release: {{ wanted['release'] | yaml_encode }}
    - fetch: True
"""


def current(root, minion, app):
    link = root / minion / app / "current"
    return os.readlink(link) if os.path.islink(link) else None


def wait_until(predicate, timeout, what):
    """Poll ``predicate`` with a deadline; return its first true value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout} s")


def publish(salt_run_cli, source, app, release):
    ret = salt_run_cli.run("murder.publish", f"source={source}", f"app={app}", f"release={release}")
    assert ret.returncode == 0, ret.stdout + ret.stderr
    return ret.data


def release_states(ret, target):
    """{minion: the murder.release return} out of a highstate (one minion's comes unwrapped)."""
    assert isinstance(ret.data, dict), ret.stdout
    returns = ret.data if not any("_|-" in key for key in ret.data) else {target: ret.data}
    found = {}
    for minion, states in returns.items():
        matches = [value for key, value in states.items() if key.startswith("murder_|-")]
        assert len(matches) == 1, states
        found[minion] = matches[0]
    return found


def highstate(salt_cli, target, pillar_file, state_tree, pillar_tree, app, release, base_dir):
    """A highstate on ``target`` (a glob) with the pillar naming ``app`` ``release``.

    A highstate compiles the minion's pillar afresh: no refresh before it.
    """
    pillar_file.write_text(json.dumps({"engine_app": {"app": app, "release": release, "base_dir": base_dir}}))
    return release_states(salt_cli.run("state.highstate", minion_tgt=target), target)


@pytest.fixture
def trees(engine_trees):
    """The top files of this master's state tree and pillar, with the release SLS; the pillar file to change."""
    states, pillar = engine_trees
    top = "base:\n  '*':\n    - engine_app\n"
    with temp_file("top.sls", top, states), temp_file("engine_app.sls", RELEASE_SLS, states), \
            temp_file("top.sls", top, pillar), temp_file("engine_app.sls", "{}", pillar) as pillar_file:
        yield states, pillar, pillar_file


def test_a_published_release_is_listed_seeded_and_fetched(salt_run_cli, salt_cli, fleet_root, tmp_path):
    first = make_release(tmp_path / "v1", 1, size=1 * MiB)
    published = publish(salt_run_cli, first, "catalog", "p1")
    assert published["result"] is True and published["changed"] is True and len(published["info_hash"]) == 64
    assert publish(salt_run_cli, first, "catalog", "p1")["changed"] is False  # same content: no-op
    other = salt_run_cli.run("murder.publish", f"source={make_release(tmp_path / 'v2', 2)}", "app=catalog",
                             "release=p1")
    assert other.returncode != 0 and "already published with other content" in other.stdout

    listed = salt_run_cli.run("murder.published", "app=catalog")
    assert [(r["release"], r["sha256"]) for r in listed.data["published"]] == [("p1", published["sha256"])]

    base = str(fleet_root / "{minion}" / "{app}")
    ret = salt_cli.run("murder.fetch", "app=catalog", "release=p1", f"base_dir={base}", minion_tgt=MINIONS[0])
    assert ret.returncode == 0, ret.stdout
    assert ret.data["changed"] is True and ret.data["bytes_from_seeder"] > 0  # the engine's seeder served it
    assert (fleet_root / MINIONS[0] / "catalog" / "releases" / "p1" / "VERSION").read_text() == "1\n"
    assert current(fleet_root, MINIONS[0], "catalog") is None  # fetched, not activated


def test_highstates_fetch_through_the_swarm_and_follow_the_pillar(salt_run_cli, salt_cli, trees, fleet_root,
                                                                  tmp_path):
    states, pillar, pillar_file = trees
    base = str(fleet_root / "{minion}" / "{app}")
    # 6 MiB against 2 MiB/s caps on every host: the three minions must trade to finish.
    publish(salt_run_cli, make_release(tmp_path / "h1", 1, size=6 * MiB), "webapp", "h1")
    first = highstate(salt_cli, FLEET, pillar_file, states, pillar, "webapp", "h1", base)
    assert set(first) == set(MINIONS)
    for minion, ret in first.items():
        assert ret["result"] is True, ret["comment"]
        assert ret["changes"]["current"] == {"old": None, "new": "h1"}
        assert ret["changes"]["fetched"]["release"] == "h1"
        assert current(fleet_root, minion, "webapp") == "releases/h1"
    assert sum(ret["changes"]["fetched"]["bytes_from_peers"] for ret in first.values()) > 0

    publish(salt_run_cli, make_release(tmp_path / "h2", 2), "webapp", "h2")
    second = highstate(salt_cli, FLEET, pillar_file, states, pillar, "webapp", "h2", base)
    for minion, ret in second.items():
        assert ret["result"] is True and ret["changes"]["current"] == {"old": "h1", "new": "h2"}, ret
        assert (fleet_root / minion / "webapp" / "current" / "VERSION").read_text() == "2\n"

    third = highstate(salt_cli, MINIONS[0], pillar_file, states, pillar, "webapp", "h2", base)
    assert third[MINIONS[0]]["result"] is True and third[MINIONS[0]]["changes"] == {}, third


def test_test_mode_says_it_would_fetch_and_changes_nothing(salt_run_cli, salt_cli, trees, fleet_root, tmp_path):
    states, pillar, pillar_file = trees
    base = str(fleet_root / "{minion}" / "{app}")
    publish(salt_run_cli, make_release(tmp_path / "t1", 1), "dryrun", "t1")
    pillar_file.write_text(json.dumps({"engine_app": {"app": "dryrun", "release": "t1", "base_dir": base}}))
    ret = release_states(salt_cli.run("state.highstate", "test=True", minion_tgt=MINIONS[0]), MINIONS[0])[MINIONS[0]]
    assert ret["result"] is None and "would be fetched through the swarm" in ret["comment"], ret
    assert ret["changes"]["fetched"] == {"release": "t1"}
    assert not (fleet_root / MINIONS[0] / "dryrun").exists()


@pytest.mark.bad_input
def test_a_release_neither_on_disk_nor_published_fails_and_changes_nothing(salt_cli, trees, fleet_root):
    states, pillar, pillar_file = trees
    base = str(fleet_root / "{minion}" / "{app}")
    ret = highstate(salt_cli, MINIONS[0], pillar_file, states, pillar, "ghost", "never", base)[MINIONS[0]]
    assert ret["result"] is False and ret["changes"] == {}
    assert "release never of app ghost is not published on the master" in ret["comment"]
    assert "nothing was changed" in ret["comment"]
    assert not (fleet_root / MINIONS[0] / "ghost").exists()


def test_a_late_joiner_fetches_with_murder_fetch_and_with_a_highstate(salt_run_cli, salt_cli, trees, fleet_root,
                                                                     start_minion, tmp_path):
    states, pillar, pillar_file = trees
    base = str(fleet_root / "{minion}" / "{app}")
    ret = salt_run_cli.run("murder.deploy", f"source={make_release(tmp_path / 'l1', 1)}", "app=scaled",
                           f"tgt={','.join(MINIONS)}", "tgt_type=list", "release=l1", f"base_dir={base}",
                           "timeout=120")
    assert ret.returncode == 0, ret.stdout
    publish(salt_run_cli, make_release(tmp_path / "l2", 2), "scaled", "l2")

    late = start_minion("eng-late")
    ret = salt_cli.run("murder.fetch", "app=scaled", "release=l1", f"base_dir={base}", minion_tgt=late.id)
    assert ret.returncode == 0 and ret.data["changed"] is True, ret.stdout
    assert (fleet_root / late.id / "scaled" / "releases" / "l1" / "VERSION").read_text() == "1\n"
    joined = highstate(salt_cli, late.id, pillar_file, states, pillar, "scaled", "l2", base)[late.id]
    assert joined["result"] is True and joined["changes"]["fetched"]["release"] == "l2", joined
    assert current(fleet_root, late.id, "scaled") == "releases/l2"


def first_bytes(event_listener, salt_master, app, after):
    """The deploy id of ``app``'s deploy, once a minion has some of its bytes (the download is under way)."""
    def found():
        for event in event_listener.get_events([(salt_master.id, "murder/peer/*/*/progress")], after_time=after):
            data, deploy_id = event.data.get("data") or {}, event.tag.split("/")[2]
            if deploy_id.startswith(f"{app}-") and 0 < data.get("bytes_done", 0) < data.get("size", 0):
                return deploy_id
        return None

    return wait_until(found, 60, "no minion got its first bytes")


# Several seconds of download at UPLOAD_CAP: a signal sent at a deploy's first bytes must land while it
# still runs, also when the test's events reach it late on a busy machine.
INTERRUPTED_SIZE = 24 * MiB


def deploy_command(salt_run_cli, source, app, base):
    return salt_run_cli.cmdline("murder.deploy", f"source={source}", f"app={app}", f"tgt={','.join(MINIONS)}",
                                "tgt_type=list", "release=r1", f"base_dir={base}", "timeout=120")


@pytest.mark.fault
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_deploy_goes_on_in_the_engine_when_salt_run_is_interrupted(salt_master, salt_run_cli, fleet_root,
                                                                     store_dir, event_listener, tmp_path, sig):
    app = f"outlives-{sig.name.lower()}"
    base = str(fleet_root / "{minion}" / "{app}")
    before = time.time()
    source = make_release(tmp_path / "v1", 1, size=INTERRUPTED_SIZE)
    running = subprocess.Popen(deploy_command(salt_run_cli, source, app, base), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=salt_run_cli.environ)
    try:
        deploy_id = first_bytes(event_listener, salt_master, app, before)
        running.send_signal(sig)
        said, _ = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
    assert running.returncode != 0
    if sig == signal.SIGINT:
        assert "goes on in the murder engine" in said and "Traceback" not in said, said

    def finished():
        ret = salt_run_cli.run("murder.status", f"deploy_id={deploy_id}")
        return ret.data if ret.returncode == 0 and ret.data.get("state") in ("succeeded", "failed") else None

    status = wait_until(finished, 120, "the deploy did not end in the engine")
    assert status["state"] == "succeeded", status
    for minion in MINIONS:
        assert current(fleet_root, minion, app) == "releases/r1"
    assert os.listdir(store_dir / "work") == []


def test_an_engine_ended_by_sigterm_stops_its_tracker_and_seeders_first(salt_master, store_dir, salt_run_cli):
    """Salt's own SIGTERM handler leaves with os._exit; the engine's stops the tracker and seeders first."""
    pid = int((store_dir / "engine.pid").read_text())
    os.kill(pid, signal.SIGTERM)

    def restarted():
        try:
            now = int((store_dir / "engine.pid").read_text())
        except (OSError, ValueError):
            return None
        return now if now != pid and os.path.exists(f"/proc/{now}") else None

    wait_until(restarted, 60, "Salt did not start the engine again")
    with open(salt_master.config["log_file"], encoding="utf-8", errors="replace") as handle:
        said = [line for line in handle if f"({pid})] " in line]
    assert any("tracker on" in line and line.rstrip().endswith("stopped") for line in said), said[-5:]
    ret = salt_run_cli.run("murder.published")
    assert ret.returncode == 0, ret.stdout


@pytest.mark.fault
def test_an_engine_killed_mid_deploy_is_restarted_and_fails_that_deploy(salt_master, salt_run_cli, salt_cli,
                                                                        fleet_root, store_dir, event_listener,
                                                                        tmp_path):
    base = str(fleet_root / "{minion}" / "{app}")
    before = time.time()
    running = subprocess.Popen(deploy_command(salt_run_cli, make_release(tmp_path / "v1", 1, size=INTERRUPTED_SIZE),
                                              "restarted", base),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=salt_run_cli.environ)
    try:
        deploy_id = first_bytes(event_listener, salt_master, "restarted", before)
        killed = int((store_dir / "engine.pid").read_text())
        os.kill(killed, signal.SIGKILL)
        said, _ = running.communicate(timeout=120)  # the restarted engine ends the deploy it lost
    finally:
        if running.poll() is None:
            running.kill()
    assert running.returncode != 0, said

    def restarted():
        pid = int((store_dir / "engine.pid").read_text())
        return pid if pid != killed and os.path.exists(f"/proc/{pid}") else None

    wait_until(restarted, 60, "Salt did not start the engine again")
    status = salt_run_cli.run("murder.status", f"deploy_id={deploy_id}").data
    assert status["state"] == "failed" and "the murder engine stopped during this deploy" in status["error"], status
    for minion in MINIONS:
        assert current(fleet_root, minion, "restarted") is None  # nothing activated by it

    # The release it had published is seeded again, and the next deploy works.
    ret = salt_cli.run("murder.fetch", "app=restarted", "release=r1", f"base_dir={tmp_path / 'late'}",
                       minion_tgt=MINIONS[0])
    assert ret.returncode == 0, ret.stdout
    ret = salt_run_cli.run("murder.deploy", f"source={make_release(tmp_path / 'v2', 2)}", "app=restarted",
                           f"tgt={','.join(MINIONS)}", "tgt_type=list", "release=r2", f"base_dir={base}",
                           "timeout=120")
    assert ret.returncode == 0, ret.stdout
    for minion in MINIONS:
        assert current(fleet_root, minion, "restarted") == "releases/r2"
    assert os.listdir(store_dir / "work") == []


def test_the_engine_exposes_its_swarms_for_prometheus(salt_run_cli, salt_cli, metrics_port, fleet_root, tmp_path):
    publish(salt_run_cli, make_release(tmp_path / "m1", 1), "scraped", "m1")
    ret = salt_cli.run("murder.fetch", "app=scraped", "release=m1", f"base_dir={fleet_root / 'x'}",
                       minion_tgt=MINIONS[0])
    assert ret.returncode == 0, ret.stdout
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        scraped = answer.read().decode()
    figures = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in scraped.splitlines() if line.startswith("murder_")}
    assert figures["murder_published_releases"] >= 1
    assert figures['murder_bytes_served_total{app="scraped",release="m1"}'] > 0
    assert 'murder_swarm_peers{app="scraped",release="m1",state="complete"}' in figures
    assert figures["murder_tracker_announces_total"] > 0
