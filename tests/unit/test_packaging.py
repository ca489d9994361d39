"""Salt finds murder through the salt.loader entry point; the master snippet names real files."""
import importlib.metadata
import os
import subprocess
import sys

import pytest
import yaml

from murder_core.saltext import loader_dirs, master_snippet


def test_salt_loader_entry_point_points_at_the_loader_modules():
    points = [p for p in importlib.metadata.entry_points(group="salt.loader") if p.name == "murder"]
    assert points, "setup.cfg registers no salt.loader entry point named murder"
    dirs = points[0].load()()
    assert dirs == loader_dirs()
    for kind in ("modules", "states", "runners", "engines", "output", "grains"):
        assert os.path.isfile(os.path.join(dirs[kind][0], "murder.py")), kind


def test_master_snippet_names_the_reactions_by_absolute_path_and_serves_the_state_tree():
    snippet = master_snippet()
    reactions = {tag: sls for entry in snippet["reactor"] for tag, sls in entry.items()}
    # Deploy requests go to the engine itself; the start of a deploy runs murder.peer through the reactor.
    assert set(reactions) == {"murder/deploy/*/start"}
    for paths in reactions.values():
        assert len(paths) == 1 and os.path.isabs(paths[0]) and os.path.isfile(paths[0]), paths
    assert snippet["engines"] == [{"murder": {}}]
    roots = snippet["file_roots"]["base"]
    assert roots[0] == "/srv/salt"  # a file_roots of ours must not hide Salt's default one
    assert os.path.isfile(os.path.join(roots[1], "murder", "minion.sls"))
    assert roots[2] == "/var/cache/salt/master/murder/fileserver"  # salt://murder-published/, the default store
    assert "murder" not in snippet  # would replace the operator's murder: settings in /etc/salt/master
    elsewhere = master_snippet(store_dir="/data/murder")
    assert elsewhere["murder"] == {"store_dir": "/data/murder"}
    assert elsewhere["file_roots"]["base"][2] == "/data/murder/fileserver"
    assert "module_dirs" not in snippet  # the entry point loads the modules
    # Salt drops a bus subscriber with more queued than this; the engine must outlast a fleet's burst.
    assert snippet["pub_server_write_queue_size"] >= 100_000


def run_snippet(*args):
    return subprocess.run([sys.executable, "-m", "murder_core.saltext", "snippet", *args],
                          capture_output=True, text=True, timeout=60)


def test_snippet_command_prints_the_snippet_with_the_wheel_directory(tmp_path):
    (tmp_path / "murder_salt-0.1.0-py3-none-any.whl").write_bytes(b"")
    done = run_snippet("--wheel-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed["file_roots"]["base"][-1] == str(tmp_path)
    assert printed["reactor"] == master_snippet()["reactor"]


@pytest.mark.bad_input
def test_snippet_command_refuses_a_wheel_directory_without_the_wheel(tmp_path):
    done = run_snippet("--wheel-dir", str(tmp_path))
    assert done.returncode != 0
    assert "must hold exactly one murder_salt-*.whl" in done.stderr and not done.stdout
