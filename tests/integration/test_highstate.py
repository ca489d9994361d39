"""murder.release in a highstate, with the release id from pillar, on a real master and minion."""
import os
import pathlib

import pytest
from saltfactories.utils.tempfiles import temp_file

from murder_core import release as rel

OLD, NEW = "20261125T093000Z", "20261126T101500Z"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

RELEASE_SLS = """
{%- set app = pillar['murder_highstate'] %}
{{ app['base_dir'] }}:
  murder.release:
    - release: {{ app['release'] | yaml_encode }}
    - keep: 2
    - shared: [log]
    - check_cmd: test -f COMPLETE && test -d log/.
    - check_timeout: 30
"""


def top(minion_id, sls):
    return f"base:\n  {minion_id!r}:\n    - {sls}\n"


def pillar(base_dir, release):
    return f"murder_highstate:\n  base_dir: {str(base_dir)!r}\n  release: {release!r}\n"


def make_release(tree, name):
    staging = rel.staging_dir(tree, name)
    with open(os.path.join(staging, "COMPLETE"), "w", encoding="utf-8") as handle:
        handle.write(name)
    os.rename(staging, tree.release_dir(name))


def release_state(ret):
    """The one murder.release return out of a highstate's returns."""
    assert ret.returncode == 0, ret
    assert isinstance(ret.data, dict), ret
    found = [value for key, value in ret.data.items() if key.startswith("murder_|-")]
    assert len(found) == 1, ret.data
    return found[0]


@pytest.fixture
def tree(tmp_path):
    tree = rel.ReleaseTree(tmp_path / "myapp")
    make_release(tree, OLD)
    make_release(tree, NEW)
    return tree


def test_highstate_switches_the_release_when_pillar_changes(
    salt_cli, salt_minion, state_tree, pillar_tree, tree
):
    with temp_file("top.sls", top(salt_minion.id, "murder_highstate"), state_tree), temp_file(
        "murder_highstate.sls", RELEASE_SLS, state_tree
    ), temp_file("top.sls", top(salt_minion.id, "murder_highstate"), pillar_tree), temp_file(
        "murder_highstate.sls", pillar(tree.base_dir, OLD), pillar_tree
    ) as pillar_file:
        first = release_state(salt_cli.run("state.highstate", minion_tgt=salt_minion.id))
        assert first["result"] is True, first["comment"]
        assert first["changes"] == {"current": {"old": None, "new": OLD}, "shared": ["log"]}
        assert tree.current() == OLD

        pillar_file.write_text(pillar(tree.base_dir, NEW))
        second = release_state(salt_cli.run("state.highstate", minion_tgt=salt_minion.id))
        assert second["result"] is True, second["comment"]
        assert second["changes"] == {"current": {"old": OLD, "new": NEW}, "shared": ["log"]}
        assert "health check passed" in second["comment"]
        assert os.readlink(tree.current_link) == f"releases/{NEW}"

        third = release_state(salt_cli.run("state.highstate", minion_tgt=salt_minion.id))
        assert third["result"] is True
        assert third["changes"] == {}
        assert "already current" in third["comment"]
        assert tree.releases() == [OLD, NEW]


def test_the_shipped_example_runs_as_the_readme_says(salt_cli, start_salt_minion, state_tree, pillar_tree, tmp_path):
    """salt/murder/example_release.sls, with the pillar the README gives, on a minion with its own base_dir."""
    minion = start_salt_minion(overrides={"murder": {"base_dir": str(tmp_path / "{minion}" / "{app}")}})
    tree = rel.ReleaseTree(tmp_path / minion.id / "myapp")
    for name in (OLD, NEW):
        make_release(tree, name)
        check = os.path.join(tree.release_dir(name), "bin", "healthcheck")
        os.makedirs(os.path.dirname(check))
        with open(check, "w", encoding="utf-8") as handle:
            handle.write("#!/bin/sh\ntest -f COMPLETE\n")
        os.chmod(check, 0o755)
    example = (REPO_ROOT / "salt" / "murder" / "example_release.sls").read_text()
    with temp_file("top.sls", top(minion.id, "myapp"), state_tree), temp_file("myapp.sls", example, state_tree), \
            temp_file("top.sls", top(minion.id, "myapp"), pillar_tree), \
            temp_file("myapp.sls", f"myapp:\n  release: {OLD!r}\n", pillar_tree) as pillar_file:
        first = release_state(salt_cli.run("state.highstate", minion_tgt=minion.id))
        assert first["result"] is True, first["comment"]
        assert first["changes"]["current"] == {"old": None, "new": OLD}
        pillar_file.write_text(f"myapp:\n  release: {NEW!r}\n")
        second = release_state(salt_cli.run("state.highstate", minion_tgt=minion.id))
        assert second["result"] is True and "health check passed" in second["comment"], second["comment"]
        assert tree.current() == NEW
