"""An operator's install: the project's wheel pip-installed into a Python of its own.

``operator_python`` is a copy of the test virtualenv with murder removed and
the wheel (built from this checkout) installed, so the daemons started on it
load murder from its site-packages only, as on a master installed with pip.
``bare_python`` is the same without murder: a minion before ``murder.minion``.
"""
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run(*argv, timeout=600):
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="package")
def wheel_dir(tmp_path_factory):
    """A directory holding the one wheel of this checkout, as an operator builds it."""
    directory = tmp_path_factory.mktemp("wheels")
    # A copy of the tracked files, so the build leaves nothing in the checkout.
    source = tmp_path_factory.mktemp("source") / "murder"
    files = _run("git", "-C", REPO, "ls-files", "-co", "--exclude-standard").split()
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", directory, source)
    assert len(list(directory.glob("murder_salt-*.whl"))) == 1
    return directory


def _python_without_murder(top):
    """A copy of this virtualenv (Salt, libtorrent, …) with the editable murder uninstalled."""
    assert sys.prefix != sys.base_prefix, "the suite runs in the project's virtualenv (make test)"
    target = top / "venv"
    shutil.copytree(sys.prefix, target, symlinks=True)
    python = target / "bin" / "python"
    _run(python, "-m", "pip", "uninstall", "--quiet", "--yes", "murder-salt")
    return python


@pytest.fixture(scope="package")
def operator_python(tmp_path_factory, wheel_dir):
    top = tmp_path_factory.mktemp("operator")
    python = _python_without_murder(top)
    wheel = next(wheel_dir.glob("murder_salt-*.whl"))
    _run(python, "-m", "pip", "install", "--quiet", wheel)
    yield python
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="package")
def bare_python(tmp_path_factory):
    top = tmp_path_factory.mktemp("bare")
    yield _python_without_murder(top)
    shutil.rmtree(top, ignore_errors=True)
