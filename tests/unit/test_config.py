"""Names and paths a deploy accepts, checked before any work."""
import pytest

import pathlib

from murder_core import config, distribution
from murder_core.errors import InvalidInput
from murder_core.request import DEPLOY_ARGUMENTS, DeployRequest

REPO = pathlib.Path(__file__).resolve().parents[2]


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


SETTINGS = dict(config.DEFAULTS)


def request(**changes):
    arguments = dict(source="/srv/builds/shop", app="shop", tgt="web*", release="r1")
    arguments.update(changes)
    return DeployRequest.from_arguments(arguments, SETTINGS, lambda: "20261126T101500Z")


@pytest.mark.parametrize(
    "changes,message",
    [({"keep": 0}, "keep"), ({"timeout": -1}, "timeout"), ({"min_success": 0}, "min_success"),
     ({"base_dir": "relative"}, "base_dir"), ({"release": "a b"}, "release"), ({"activate": "yes"}, "activate"),
     ({"check_cmd": True}, "check_cmd must be a shell command as a string.*quote"),
     ({"check_cmd": 3}, "check_cmd"), ({"shared": "log"}, "shared"), ({"app": None}, "needs app")],
)
@pytest.mark.bad_input
def test_deploy_arguments_are_checked(changes, message):
    with pytest.raises(InvalidInput, match=message):
        request(**changes)


@pytest.mark.bad_input
def test_a_bad_silence_timeout_setting_is_refused():
    with pytest.raises(InvalidInput, match="silence_timeout"):
        DeployRequest.from_arguments(dict(source="/s", app="a", tgt="*", release="r1"),
                                     dict(SETTINGS, silence_timeout=0), str)


def test_deploy_defaults_leave_base_dir_to_each_minion():
    asked = request(release=None)
    assert asked.release == "20261126T101500Z"
    assert asked.base_dir is None and asked.keep == SETTINGS["keep"] and asked.tgt_type == "glob"
    assert "base_dir" not in asked.activation()
    assert request(base_dir="/srv/{app}").activation()["base_dir"] == "/srv/{app}"
    assert request(release=20261126101500).release == "20261126101500"


@pytest.mark.bad_input
@pytest.mark.parametrize("typo,hint", [("relase", "did you mean release?"), ("bogus", "bogus:")])
def test_unknown_deploy_arguments_are_named_with_a_hint(typo, hint):
    with pytest.raises(InvalidInput) as raised:
        request(**{typo: "r2"})
    assert hint in str(raised.value)
    assert "It takes: " + ", ".join(DEPLOY_ARGUMENTS) in str(raised.value)


def test_salt_and_event_keys_pass_the_name_check():
    assert request(__pub_jid="1", __user__="Reactor", _stamp="now").release == "r1"


def test_the_readme_lists_the_deploy_arguments_in_their_order():
    readme = (REPO / "README.md").read_text()
    assert "by name or in this order: " + ", ".join(f"`{name}`" for name in DEPLOY_ARGUMENTS) in " ".join(
        readme.split())


def test_the_runner_docstring_lists_every_deploy_argument():
    text = (REPO / "_runners" / "murder.py").read_text()
    docs = text[text.index("def deploy("):text.index("CLI Example:", text.index("def deploy("))]
    for name in DEPLOY_ARGUMENTS:
        assert f"\n    {name}" in docs or f", {name}" in docs, name


@pytest.mark.bad_input
@pytest.mark.parametrize("value", [True, False, 7, "", "  ", ["ls"]])
def test_check_cmd_must_be_a_string(value):
    with pytest.raises(InvalidInput, match="check_cmd must be a shell command as a string"):
        config.check_command(value)


def test_release_ids_sort_by_time():
    import datetime

    early = distribution.new_release_id(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    late = distribution.new_release_id(datetime.datetime(2026, 11, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    assert early == "20260102T030405Z" and early < late
    config.check_release_name(early)


def test_the_readme_settings_table_has_every_setting():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Settings"):readme.index("### Which BitTorrent clients can join")]
    from murder_core.config import DEFAULTS

    missing = [key for key in DEFAULTS if f"`{key}`" not in table]
    assert not missing, missing
