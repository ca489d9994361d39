"""A master and minions of their own for the fault tests, all on 127.0.0.1.

The same set-up as ``tests/deploy`` (the shipped master config snippet, the
minions' ``murder`` settings pinned to loopback), on a separate master so
that stopping it (fault 5) or killing a minion (fault 1) cannot disturb the
other tests. Minions:

``fault-a``, ``fault-b``
    Ordinary minions.
``fault-slow1``, ``fault-slow2``
    Download capped at ``SLOW_RATE`` bytes/s, so a deploy to them lasts long
    enough to break something in its middle; a short ``stall_timeout``.

Destructive cases start minions of their own with :func:`start_minion`
(killed or broken on purpose, never targeted by other tests), and every
deploy names its minions as an explicit list.
"""
import concurrent.futures
import hashlib
import contextlib
import os
import pathlib
import subprocess
import time

import psutil
import pytest

from murder_core.release import ACTIVATED
from tests.conftest import started_murder_master
from tests.deploy.conftest import LOOPBACK

REPO = pathlib.Path(__file__).resolve().parents[2]
MiB = 1024 * 1024

ORDINARY = ("fault-a", "fault-b")
SLOW = ("fault-slow1", "fault-slow2")
# 6 MiB of random bytes take a slow minion about 6 s.
SLOW_RATE = 1 * MiB
SLOW_SETTINGS = dict(LOOPBACK, download_rate_limit=SLOW_RATE, stall_timeout=5)
# A restarted master (fault 5) is found again in seconds, not after Salt's back-off.
RECONNECT_FAST = {"recon_default": 200, "recon_max": 1000, "recon_randomize": False, "acceptance_wait_time": 1,
                  "random_reauth_delay": 0}


def minion_overrides(settings=None):
    return {"murder": dict(settings or LOOPBACK), "master": "127.0.0.1",
            **RECONNECT_FAST}


@pytest.fixture(scope="package")
def salt_master(salt_factories, tmp_path_factory):
    with started_murder_master(salt_factories, "fault-master", tmp_path_factory.mktemp("store"), LOOPBACK) as master:
        yield master


@pytest.fixture(scope="package")
def salt_minions(salt_master):
    factories = {minion: salt_master.salt_minion_daemon(minion, overrides=minion_overrides()) for minion in ORDINARY}
    factories.update({
        minion: salt_master.salt_minion_daemon(minion, overrides=minion_overrides(SLOW_SETTINGS)) for minion in SLOW
    })
    for factory in factories.values():
        factory.slow_stop = False
    # Started and stopped side by side: each waits mostly for its own process.
    with concurrent.futures.ThreadPoolExecutor(len(factories)) as pool:
        try:
            for started in [pool.submit(factory.start, start_timeout=120) for factory in factories.values()]:
                started.result()
            yield factories
        finally:
            for stopped in [pool.submit(factory.terminate) for factory in factories.values()]:
                stopped.result()


@pytest.fixture
def start_minion(salt_master):
    """``start_minion(minion_id, settings=None, environ=None)``: one more minion, stopped after the test."""
    started = []

    def start(minion_id, settings=None, environ=None):
        factory = salt_master.salt_minion_daemon(minion_id, overrides=minion_overrides(settings))
        factory.slow_stop = False
        if environ:
            factory.environ = dict(factory.environ, **environ)
        started.append(factory)
        factory.start(start_timeout=120)
        return factory

    yield start
    for factory in started:
        factory.terminate()


def deploy(salt_run_cli, source, app, minions, release, app_root, *extra, timeout=60):
    """``salt-run murder.deploy`` to exactly ``minions``."""
    return salt_run_cli.run(
        "murder.deploy", f"source={source}", f"app={app}", f"tgt={','.join(minions)}", "tgt_type=list",
        f"release={release}", f"base_dir={app_root}", f"timeout={timeout}", *extra,
    )


def kill_tree(pid):
    """SIGKILL a process this test run started, and all its children: a host dying."""
    try:
        parent = psutil.Process(pid)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=10)


def base(app_root, minion, app):
    return app_root.format(minion=minion, app=app)


def current(app_root, minion, app):
    """The release ``current`` points at on that minion, or None."""
    link = os.path.join(base(app_root, minion, app), "current")
    return os.readlink(link).rsplit("/", 1)[-1] if os.path.islink(link) else None


def finished_releases(app_root, minion, app):
    """The releases on disk under their final name (what a tool may activate)."""
    releases = os.path.join(base(app_root, minion, app), "releases")
    return sorted(name for name in os.listdir(releases) if not name.startswith(".")) if os.path.isdir(releases) else []


def leftovers(app_root, minion, app):
    """Staging directories and downloads under ``.murder`` that belong to no finished release."""
    root = base(app_root, minion, app)
    found = []
    releases = os.path.join(root, "releases")
    if os.path.isdir(releases):
        found += [f"releases/{name}" for name in os.listdir(releases) if name.startswith(".")]
    cache = os.path.join(root, ".murder")
    if os.path.isdir(cache):
        found += [f".murder/{name}" for name in os.listdir(cache)
                  if name != ACTIVATED and not os.path.isdir(os.path.join(releases, name))]
    return sorted(found)


def make_random_source(path, size, version):
    """A release whose artifact is about ``size`` bytes (random data does not compress)."""
    path = pathlib.Path(path)
    path.mkdir(parents=True)
    (path / "VERSION").write_text(f"{version}\n")
    (path / "blob.bin").write_bytes(os.urandom(size))
    return str(path)


def make_small_source(path, version):
    """A release of a few hundred bytes."""
    path = pathlib.Path(path)
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "app").write_text(f"#!/bin/sh\necho version {version}\n")
    (path / "bin" / "app").chmod(0o755)
    (path / "VERSION").write_text(f"{version}\n")
    return str(path)


def wait_for_event(event_listener, daemon_id, pattern, after, timeout, where=None, what="event"):
    """Poll the event listener until an event matches (and ``where(data)`` holds); fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        for event in sorted(event_listener.get_events([(daemon_id, pattern)], after_time=after),
                            key=lambda e: e.stamp):
            if where is None or where(event.data):
                return event
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} ({pattern}) within {timeout} s")
        time.sleep(0.1)


def wait_until(condition, timeout, what):
    """Poll ``condition`` until it returns something true; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.2)


@contextlib.contextmanager
def tmpfs(path, size):
    """Mount a tmpfs of ``size`` at ``path`` for the block; always unmounted. Fails (not skips) if it cannot."""
    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {path} (the disk-full test needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        unmounted = subprocess.run(["umount", path], capture_output=True, text=True, check=False)
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", path], check=False)


@pytest.fixture
def app(request):
    """An app name of this test's own: the master's engine keeps each published release name for one content."""
    return "shop-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
