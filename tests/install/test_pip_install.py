"""murder installed from its wheel, as the README's "On a real fleet" says, on real daemons.

A master that is also a minion runs on the Python murder was pip-installed
into; a second minion starts without murder. The master is configured with
the snippet the installed copy prints (``python -m murder_core.saltext
snippet``), nothing from the checkout. ``state.apply murder.minion`` must
install murder on the bare minion and leave the master's install whole
(the runner and the module still load), and a deploy then reaches both.
"""
import json
import pathlib
import subprocess
import sys

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from devtools.lab import Lab  # noqa: E402
from tests.conftest import free_port  # noqa: E402

MASTER_MINION, FRESH = "op-master", "op-fresh"
LOOPBACK = {"seeder_address": "127.0.0.1", "peer_address": "127.0.0.1", "announce_interval": 1,
            "progress_interval": 0.5, "stall_timeout": 15}


def run(lab, tool, *args, timeout=300):
    """Run a Salt CLI tool; return the process and its return (salt-run prints progress documents first)."""
    done = subprocess.run(lab.command(tool, "--out=json", "--out-indent=-1", *args), capture_output=True, text=True,
                          timeout=timeout)
    lines = done.stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        data = None
    return done, data


@pytest.fixture(scope="module")
def lab(tmp_path_factory, operator_python, bare_python, wheel_dir):
    top = tmp_path_factory.mktemp("op-lab")
    # Run where an operator is, not in the checkout (python -m would import the checkout's copy).
    printed = subprocess.run([str(operator_python), "-m", "murder_core.saltext", "snippet", "--wheel-dir",
                              str(wheel_dir), "--store-dir", str(top / "store")],
                             capture_output=True, text=True, timeout=60, check=True, cwd=top).stdout
    snippet = yaml.safe_load(printed)
    site = pathlib.Path(operator_python).parents[1]
    for entry in snippet["reactor"]:
        for paths in entry.values():
            assert all(path.startswith(str(site)) for path in paths), snippet  # the installed copy, no checkout
    lab = Lab(top, master_address="127.0.0.1", publish_port=free_port(), ret_port=free_port(),
              murder_master=dict(LOOPBACK, tracker_port=free_port()), murder_minion=LOOPBACK,
              python=operator_python, snippet=snippet)
    with lab:
        lab.start_master()
        lab.start_minion(MASTER_MINION, murder={"rack": "r1", "datacenter": "dc1"})
        lab.start_minion(FRESH, python=bare_python)
        lab.wait_for_minions()
        yield lab


def test_murder_minion_installs_the_wheel_and_keeps_the_masters_install(lab, tmp_path):
    done, before = run(lab, "salt", "--static", FRESH, "sys.list_functions", "murder")
    assert before == {FRESH: []}, done.stdout + done.stderr  # no murder on the bare minion yet

    done, applied = run(lab, "salt", "--static", "-t", "300", "*", "state.apply", "murder.minion")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for minion in (MASTER_MINION, FRESH):
        states = {key.split("_|-")[1]: value for key, value in applied[minion].items()}
        assert all(value["result"] is True for value in states.values()), states
        assert "murder-libarchive" in states, states  # Debian's libarchive13, through which releases unpack
    assert "murder-package" not in states_changed(applied[MASTER_MINION])  # installed there: pip left it alone
    assert "murder-package" in states_changed(applied[FRESH])

    # The master, also a minion, still has its runner; both minions have the module.
    done, status = run(lab, "salt-run", "murder.status")
    assert done.returncode == 0 and status == {"deploys": []}, done.stdout + done.stderr
    base = str(tmp_path / "{minion}" / "{app}")
    done, releases = run(lab, "salt", "--static", "*", "murder.releases", "app=shop", f"base_dir={base}")
    assert done.returncode == 0 and releases == {MASTER_MINION: [], FRESH: []}, done.stdout + done.stderr

    # The installed package's grain carries the minion's `murder:` place to the master (rack_split's plan).
    done, grain = run(lab, "salt", "--static", MASTER_MINION, "grains.get", "murder_location")
    assert grain == {MASTER_MINION: {"rack": "r1", "datacenter": "dc1"}}, done.stdout + done.stderr
    done, cached = run(lab, "salt-run", "cache.grains", f"tgt={MASTER_MINION}")
    assert cached[MASTER_MINION]["murder_location"] == {"rack": "r1", "datacenter": "dc1"}, done.stdout

    # And a deploy through the installed reactor reaches both.
    source = tmp_path / "build"
    source.mkdir()
    (source / "app.txt").write_text("installed with pip\n")
    done, summary = run(lab, "salt-run", "murder.deploy", f"source={source}", "app=shop", "tgt=*", "release=r1",
                        f"base_dir={base}", "timeout=120")
    assert done.returncode == 0 and summary["result"] is True, done.stdout[-4000:] + done.stderr[-2000:]
    for minion in (MASTER_MINION, FRESH):
        current = tmp_path / minion / "shop" / "current"
        assert (current / "app.txt").read_text() == "installed with pip\n"


def states_changed(returns):
    return {key.split("_|-")[1] for key, value in returns.items() if value["changes"]}
