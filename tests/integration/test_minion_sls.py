"""salt/murder/minion.sls and saltutil.sync_all, as an operator runs them, on a real master and minion."""
import filecmp
import pathlib
import shutil

import pytest
from saltfactories.utils.tempfiles import temp_file

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def served_checkout(state_tree):
    """The checkout's murder_core, _modules and _states in the master's file_roots, as the README says."""
    copied = []
    for name in ("murder_core", "_modules", "_states"):
        shutil.copytree(REPO_ROOT / name, state_tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        copied.append(state_tree / name)
    (state_tree / "murder").mkdir()
    shutil.copy(REPO_ROOT / "salt" / "murder" / "minion.sls", state_tree / "murder" / "minion.sls")
    copied.append(state_tree / "murder")
    yield state_tree
    for path in copied:
        shutil.rmtree(path, ignore_errors=True)


def test_minion_sls_installs_the_core_and_sync_all_brings_the_modules(
    salt_cli, salt_minion, served_checkout, pillar_tree, tmp_path
):
    target = tmp_path / "site-packages"
    target.mkdir()
    top = f"base:\n  {salt_minion.id!r}:\n    - murder_minion\n"
    data = f"murder:\n  site_packages: {str(target)!r}\n"
    with temp_file("top.sls", top, pillar_tree), temp_file("murder_minion.sls", data, pillar_tree):
        assert salt_cli.run("saltutil.refresh_pillar", "wait=True", minion_tgt=salt_minion.id).returncode == 0
        # Render first: applied with the wrong target, the state would overwrite this very Python's packages.
        shown = salt_cli.run("state.show_sls", "murder.minion", minion_tgt=salt_minion.id)
        names = [arg["name"] for arg in shown.data["murder-core"]["file"] if isinstance(arg, dict) and "name" in arg]
        assert names == [str(target / "murder_core")], shown.data
        ret = salt_cli.run("state.apply", "murder.minion", minion_tgt=salt_minion.id)
    assert ret.returncode == 0, ret
    states = {key.split("_|-")[1]: value for key, value in ret.data.items()}
    # libtorrent, zstandard and pyyaml are already in this Python: pip has nothing to fetch.
    assert states["murder-python-dependencies"]["result"] is True, states
    assert states["murder-core"]["result"] is True, states
    installed = target / "murder_core"
    compared = filecmp.dircmp(REPO_ROOT / "murder_core", installed, ignore=["__pycache__"])
    assert not compared.left_only and not compared.right_only and not compared.diff_files
    assert (installed / "swarm.py").read_bytes() == (REPO_ROOT / "murder_core" / "swarm.py").read_bytes()

    synced = salt_cli.run("saltutil.sync_all", minion_tgt=salt_minion.id)
    assert synced.returncode == 0, synced
    # The file server's copies land in the minion's extension modules cache.
    assert "modules.murder" in synced.data["modules"] and "states.murder" in synced.data["states"], synced.data
    loaded = salt_cli.run("sys.list_functions", "murder", minion_tgt=salt_minion.id)
    assert "murder.peer" in loaded.data and "murder.activate" in loaded.data, loaded.data
