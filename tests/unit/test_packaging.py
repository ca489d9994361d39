"""A pip-installed copy is found by Salt through the salt.loader entry point."""
import importlib.metadata
import os

from murder_core.saltext import loader_dirs, master_snippet


def test_salt_loader_entry_point_points_at_the_loader_modules():
    points = [p for p in importlib.metadata.entry_points(group="salt.loader") if p.name == "murder"]
    assert points, "setup.cfg registers no salt.loader entry point named murder"
    dirs = points[0].load()()
    assert dirs == loader_dirs()
    for kind in ("modules", "states", "runners"):
        assert os.path.isfile(os.path.join(dirs[kind][0], "murder.py")), kind


def test_master_snippet_points_at_the_checkout(tmp_path):
    snippet = master_snippet(tmp_path)
    assert snippet["module_dirs"] == [str(tmp_path)]
    assert snippet["file_roots"]["base"] == [str(tmp_path / "salt"), str(tmp_path)]
    reactions = {tag: sls for entry in snippet["reactor"] for tag, sls in entry.items()}
    assert reactions == {
        "murder/deploy/*/start": ["salt://reactor/deploy_start.sls"],
        "murder/deploy/request": ["salt://reactor/deploy_request.sls"],
    }
