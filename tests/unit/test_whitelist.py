"""The external tracker's whitelist: written whole, rewritten only on change, a failed reload never raised."""
import os

from murder_core import whitelist

KEYS = ["a" * 40, "b" * 40]


def test_whitelist_is_written_whole_and_only_when_it_changes(tmp_path):
    path = tmp_path / "whitelist.txt"
    assert whitelist.write(str(path), KEYS) is True
    assert path.read_text() == "a" * 40 + "\n" + "b" * 40 + "\n"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"  # opentracker reads it as nobody
    assert whitelist.write(str(path), KEYS) is False
    assert whitelist.write(str(path), KEYS[:1]) is True and whitelist.read(str(path)) == KEYS[:1]
    assert [name for name in os.listdir(tmp_path)] == ["whitelist.txt"]  # no partial file left


def test_reload_runs_the_command_and_a_failure_is_logged_not_raised(tmp_path, caplog):
    marker = tmp_path / "reloaded"
    assert whitelist.reload(f"touch {marker}") is True and marker.exists()
    assert whitelist.reload("echo nope >&2; exit 3") is False
    assert "exit 3" in caplog.text and "nope" in caplog.text
    assert whitelist.reload("") is True
