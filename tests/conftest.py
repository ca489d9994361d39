"""The suite's figures on faults and bad input, printed at its end.

Tests marked ``fault`` inject a fault (a minion killed, a disk full, ...) and
pass when the deploy survives it as it must; tests marked ``bad_input`` try
one bad input and pass when it is rejected cleanly. Only tests that ran
count: a skipped or deselected one does not; an error in its set-up counts
as tried and not passed.
"""
import contextlib
import os
import pathlib
import shutil
import socket
import tempfile

import pytest

from murder_core.saltext import master_snippet

KINDS = ("fault", "bad_input")
# nodeid -> (kind, passed) of the marked tests that ran
_outcomes = {}
_kinds = {}


def pytest_collection_modifyitems(items):
    for item in items:
        for kind in KINDS:
            if item.get_closest_marker(kind):
                _kinds[item.nodeid] = kind


def pytest_runtest_logreport(report):
    kind = _kinds.get(report.nodeid)
    if kind is None:
        return
    if report.when == "call" or (report.when == "setup" and report.failed):
        _outcomes[report.nodeid] = (kind, report.passed)
    elif report.failed and report.nodeid in _outcomes:  # a failed teardown spoils a pass
        _outcomes[report.nodeid] = (kind, False)


def figures():
    counts = {kind: [0, 0] for kind in KINDS}
    for kind, passed in _outcomes.values():
        counts[kind][0] += 1
        counts[kind][1] += passed
    (faults, survived), (tried, rejected) = counts["fault"], counts["bad_input"]
    return f"faults: {faults} injected, {survived} survived; bad inputs: {tried} tried, {rejected} rejected cleanly"


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(figures())


def pytest_unconfigure():
    """Drop the log records Salt holds back for a logging set-up that never comes.

    Importing Salt installs a deferred handler that queues every record until
    Salt's own logging is configured, which a test process never does. At exit
    it writes them to the stderr that pytest has closed by then, as pages of
    "Logging error" after the summary. pytest's own handler has seen them all.
    """
    try:
        from salt._logging import impl
    except ImportError:
        return
    handler = impl.get_temp_handler()
    if handler is not None:
        handler.sync_with_handlers(())
        impl.shutdown_temp_handler()


def needs_netns(what):
    """A skip mark for a test that builds network namespaces: ``what`` needs root, ``ip`` and ``tc``."""
    return pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"),
        reason=f"{what} needs root, ip and tc (network namespaces); CI runs as root",
    )


@pytest.fixture(scope="session")
def salt_factories_default_root_dir():
    """A root of this session's own for salt-factories.

    Its default root is the system temp dir, where the launch scripts it
    writes once (``/tmp/scripts``) name the site-packages of whichever
    checkout wrote them first: a second checkout's tests would then run the
    first one's Salt. A short path keeps unix socket names within limits.
    """
    root = pathlib.Path(tempfile.mkdtemp(prefix="murder-sf-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


# Shared by the test directories that start a master of their own (their
# conftest defines ``salt_master``).


@pytest.fixture
def salt_run_cli(salt_master):
    return salt_master.salt_run_cli(timeout=300)


@pytest.fixture
def salt_cli(salt_master):
    return salt_master.salt_cli(timeout=120)


@pytest.fixture
def app_root(tmp_path_factory):
    """A base_dir template under a fresh temporary directory, one tree per minion."""
    root = tmp_path_factory.mktemp("fleet")
    yield str(root / "{minion}" / "{app}")
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def started_murder_master(salt_factories, master_id, store_dir, murder=None, **overrides):
    """A salt-master with the shipped snippet (its store in ``store_dir``), on 127.0.0.1, keys accepted.

    ``murder`` is laid over the snippet's ``murder:`` settings, ``overrides``
    over the rest of the master config.
    """
    config = master_snippet(store_dir=store_dir)
    config["murder"] = dict(config["murder"], **(murder or {}))
    config.update({"interface": "127.0.0.1", "open_mode": False, "auto_accept": True}, **overrides)
    factory = salt_factories.salt_master_daemon(master_id, overrides=config)
    factory.slow_stop = False  # stopped with SIGKILL at the end: nothing of it needs a clean shutdown
    with factory.started(start_timeout=120):
        yield factory


def free_port():
    """A TCP port free on 127.0.0.1 now (for a server a test starts next)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def started_minions(salt_master, minion_ids, overrides):
    """Start one minion per id with ``overrides(minion_id)``; stop every one started, also on failure."""
    started = []
    try:
        for minion_id in minion_ids:
            factory = salt_master.salt_minion_daemon(minion_id, overrides=overrides(minion_id))
            factory.slow_stop = False  # stopped with SIGKILL: nothing of a test minion needs a clean stop
            factory.start(start_timeout=120)
            started.append(factory)
        yield started
    finally:
        for factory in started:
            factory.terminate()
