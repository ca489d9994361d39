"""Names and paths a deploy accepts, checked before any work."""
import pytest

from murder_core import config, distribution
from murder_core.errors import InvalidInput


@pytest.mark.parametrize("name", ["r1", "20261126T101500Z", "v1.2.3", "a_b-c"])
def test_plain_release_names_pass(name):
    assert config.check_release_name(name) == name


@pytest.mark.bad_input
@pytest.mark.parametrize("name", ["", "../x", "a/b", "with space", "x" * 300, ".hidden", "a..b", None, 7])
def test_other_release_names_are_refused(name):
    with pytest.raises(InvalidInput, match="invalid release name"):
        config.check_release_name(name)


@pytest.mark.bad_input
@pytest.mark.parametrize("app", ["../etc", "a/b", "/abs"])
def test_app_names_with_paths_are_refused(app):
    with pytest.raises(InvalidInput, match="invalid app name"):
        config.check_app_name(app)


def test_base_dir_placeholders_are_expanded():
    assert config.expand_base_dir("/srv/{minion}/{app}", "shop", "web1") == "/srv/web1/shop"


@pytest.mark.bad_input
@pytest.mark.parametrize("base_dir", ["srv/app", "/", "//", "/srv/../etc", "/srv/{host}", ""])
def test_bad_base_dirs_are_refused(base_dir):
    with pytest.raises(InvalidInput, match="base_dir"):
        config.expand_base_dir(base_dir, "shop", "web1")


def test_option_prefers_call_then_config_then_default():
    opts = {"murder": {"keep": 3}}
    assert config.option("keep", 9, opts) == 9
    assert config.option("keep", None, opts) == 3
    assert config.option("linger", None, opts) == config.DEFAULTS["linger"]


@pytest.mark.parametrize(
    "changes,message",
    [({"keep": 0}, "keep"), ({"timeout": -1}, "timeout"), ({"min_success": 0}, "min_success"),
     ({"base_dir": "relative"}, "base_dir"), ({"release": "a b"}, "release"),
     ({"silence_timeout": 0}, "silence_timeout"), ({"silence_timeout": "soon"}, "silence_timeout")],
)
@pytest.mark.bad_input
def test_deploy_arguments_are_checked(changes, message):
    arguments = dict(app="shop", release="r1", base_dir="/srv/{app}", keep=5, timeout=60, min_success=None)
    arguments.update(changes)
    with pytest.raises(InvalidInput, match=message):
        distribution.check_deploy_arguments(**arguments)


def test_release_ids_sort_by_time():
    import datetime

    early = distribution.new_release_id(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    late = distribution.new_release_id(datetime.datetime(2026, 11, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    assert early == "20260102T030405Z" and early < late
    config.check_release_name(early)
