"""A master without the murder engine: salt-run murder.deploy fails at once and says how to enable it."""
import pytest


@pytest.mark.bad_input
def test_deploy_without_the_engine_fails_at_once_with_how_to_enable_it(salt_run_cli, salt_minion, tmp_path):
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "app.txt").write_text("1\n")
    ret = salt_run_cli.run("murder.deploy", f"source={tmp_path / 'build'}", "app=shop", f"tgt={salt_minion.id}")
    assert ret.returncode != 0
    assert "the murder engine is not running on this master" in ret.stdout
    assert "engines: [{murder: {}}]" in ret.stdout
    # Known at once from the engine's pid file, not by waiting for an answer that cannot come.
    assert "did not answer" not in ret.stdout
