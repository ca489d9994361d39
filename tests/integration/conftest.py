"""A real salt-master and salt-minions, started once per session, listening on 127.0.0.1.

Fixtures, for tests and for later additions (more minions, a reactor):

``state_tree`` / ``pillar_tree``
    Temporary directories the master serves as the ``base`` ``file_roots``
    and ``pillar_roots``. Tests write their SLS and top files there (with
    :func:`saltfactories.utils.tempfiles.temp_file`, so they go away again).

``salt_master_config_overrides``
    The master config on top of salt-factories' defaults. Extend it (override
    this fixture in a nested ``conftest.py``) to add, for example,
    ``reactor`` entries.

``salt_master``
    The started master. Salt finds ``_runners`` through the package's
    ``salt.loader`` entry point (an editable install of the checkout).

``start_salt_minion``
    A function ``start_salt_minion(minion_id=None, overrides=None)`` that
    starts one more minion attached to ``salt_master`` and returns its
    factory; every minion it started is stopped at the end of the session.
    ``_modules`` and ``_states`` load through the same entry point.

``salt_minion``
    One started minion, for tests that need only one.

``salt_cli`` / ``salt_run_cli``
    ``salt`` and ``salt-run`` on the master.
"""

import pytest
from saltfactories.utils import random_string

# Seconds a CLI call may take: a highstate on two cores takes a few.
CLI_TIMEOUT = 120


@pytest.fixture(scope="package")
def state_tree(tmp_path_factory):
    return tmp_path_factory.mktemp("state-tree")


@pytest.fixture(scope="package")
def pillar_tree(tmp_path_factory):
    return tmp_path_factory.mktemp("pillar-tree")


@pytest.fixture(scope="package")
def salt_master_config_overrides(state_tree, pillar_tree):
    return {
        "interface": "127.0.0.1",
        "file_roots": {"base": [str(state_tree)]},
        "pillar_roots": {"base": [str(pillar_tree)]},
    }


@pytest.fixture(scope="package")
def salt_master(salt_factories, salt_master_config_overrides):
    factory = salt_factories.salt_master_daemon(
        random_string("murder-master-"), overrides=salt_master_config_overrides
    )
    factory.slow_stop = False  # stopped with SIGKILL at the end: nothing of it needs a clean shutdown
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def start_salt_minion(salt_master):
    started = []

    def start(minion_id=None, overrides=None):
        config = dict(overrides or {})
        factory = salt_master.salt_minion_daemon(
            minion_id or random_string("murder-minion-"), overrides=config
        )
        factory.slow_stop = False
        factory.start()
        started.append(factory)
        return factory

    yield start
    for factory in reversed(started):
        factory.terminate()


@pytest.fixture(scope="package")
def salt_minion(start_salt_minion):
    return start_salt_minion()


@pytest.fixture(scope="package")
def salt_cli(salt_master):
    return salt_master.salt_cli(timeout=CLI_TIMEOUT)


@pytest.fixture(scope="package")
def salt_run_cli(salt_master):
    return salt_master.salt_run_cli(timeout=CLI_TIMEOUT)
