"""Publish releases and deploy them to many minions through a BitTorrent swarm.

The murder engine (``_engines/murder.py``, enabled by the master snippet)
holds the tracker, seeds every published release and runs the deploys;
these functions ask it over the master's event bus and show what it says.
``salt-run murder.deploy`` follows its deploy until the end and exits
non-zero unless every minion succeeded; interrupted, it leaves the deploy to
the engine (``salt-run murder.status deploy_id=<id>``).

Configuration: the ``murder:`` section of the master config (see the README's
table, defined in ``murder_core/config.py``).
"""
import functools
import logging
import os
import secrets
import signal
import sys
import threading
import time

import salt.client
import salt.utils.event
import salt.utils.minions
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    from murder_core import config, fleet, lifecycle, pack, request
    from murder_core.engine import check_settings
    from murder_core.errors import InvalidInput
    from murder_core.store import ENGINE_PID, Store

    HAS_CORE, CORE_ERROR = True, ""
except ImportError as exc:  # the package is not installed in Salt's Python
    HAS_CORE, CORE_ERROR = False, str(exc)

log = logging.getLogger(__name__)

__virtualname__ = "murder"

PUBLISH_ARGUMENTS = ("source", "app", "release", "timeout")
PUBLISHED_ARGUMENTS = ("app",)
ROLLBACK_ARGUMENTS = ("app", "tgt", "tgt_type", "base_dir", "release", "timeout")
STATUS_ARGUMENTS = ("deploy_id",)
WAIT_ARGUMENTS = ("request_id", "timeout")
# Seconds the engine has to take a request before the runner gives up on it.
ENGINE_ANSWER_SECONDS = 30
# Seconds past a deploy's own timeout that the runner waits for its end.
FOLLOW_GRACE_SECONDS = 120
# Seconds a busy minion gets to say its job is still running.
GATHER_JOB_TIMEOUT = 30
NO_ENGINE = ("the murder engine is not running on this master: enable it with `engines: [{murder: {}}]` in the "
             "master config (`python -m murder_core.saltext snippet` writes it) and restart salt-master")


def __virtual__():
    if not HAS_CORE:
        return (False, f"the murder runner needs the murder-salt package in Salt's Python: {CORE_ERROR}")
    return __virtualname__


def _reported(function):
    """Turn an error into a failed return with ``retcode`` 1.

    ``salt-run`` takes its exit code from the return's ``retcode``; a raised
    ``SaltInvocationError`` would be printed as a usage hint and exit 0.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            ret = function(*args, **kwargs)
        except (SaltInvocationError, CommandExecutionError) as exc:
            log.error("murder.%s: %s", function.__name__, exc)
            ret = {"result": False, "error": str(exc), "retcode": 1}
        # salt-run reads the return's retcode; an orchestration's salt.runner state reads __context__'s.
        shown = ret.get("data", ret) if isinstance(ret, dict) else {}
        if isinstance(shown, dict) and shown.get("retcode"):
            __context__["retcode"] = shown["retcode"]
        return ret

    return wrapper


def _shown(ret, function):
    """``ret`` for the salt-run console: through the murder outputter (``_output/murder.py``) when salt-run
    runs ``function`` itself and no ``--out`` was asked for; as it is for --out=json, orchestrate and reactors.
    """
    if __opts__.get("fun") == f"murder.{function}" and not __opts__.get("output"):
        return {"data": ret, "outputter": "murder"}  # salt-run still exits with data's retcode
    return ret


def _checked(function, kwargs, accepted):
    try:
        request.check_names(function, kwargs, accepted)
    except InvalidInput as exc:
        raise SaltInvocationError(str(exc)) from exc


def _settings():
    settings = dict(config.DEFAULTS)
    settings.update(__opts__.get("murder") or {})
    return settings


def _store():
    return Store(_settings()["store_dir"] or os.path.join(__opts__["cachedir"], "murder"))


def _progress(message):
    """One line for the operator on stderr: stdout stays the summary alone (one JSON document with --out=json).

    Salt's own progress events would print as a block each, on stdout.
    """
    log.info("%s", message)
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


def _check_source(source, settings):
    """The operator must be able to read what they deploy: checked here, with salt-run's own rights."""
    if not isinstance(source, str) or not os.path.exists(source):
        return  # the engine names a missing source or argument, and records the refusal
    try:
        pack.check_source(source, settings["excludes"])
    except InvalidInput as exc:
        raise SaltInvocationError(str(exc)) from exc


def _engine_running(store):
    try:
        with open(os.path.join(store.root, ENGINE_PID), encoding="ascii") as handle:
            os.kill(int(handle.read().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _bus():
    return salt.utils.event.get_event("master", sock_dir=__opts__["sock_dir"], opts=__opts__, listen=True)


class _Interrupt:
    """SIGINT (Ctrl-C) and SIGTERM while salt-run follows a deploy, noted instead of raised.

    Salt's own handler raises SystemExit wherever salt-run's main thread is,
    and inside Salt's event reading that can be lost (``salt.utils.event``
    turns a KeyboardInterrupt into an event): the follower then read on to
    the deploy's end and exited 0. A flag read between two reads of the bus
    cannot be lost. Outside the main thread Salt's handler stays.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def _note(self, signum, frame):  # pylint: disable=unused-argument
        self.signum = signum

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False


def _next(bus, prefix, deadline, interrupt=None):
    """The next event under ``prefix`` before ``deadline`` (``(tag, data)``), else None (also once interrupted)."""
    while time.monotonic() < deadline and (interrupt is None or interrupt.signum is None):
        found = bus.get_event(wait=min(1.0, max(deadline - time.monotonic(), 0.05)), tag=prefix, full=True)
        if found:
            data = dict(found.get("data") or {})
            data.pop("_stamp", None)  # the bus's, not the deploy's
            return found["tag"], data
    return None


def _ask(bus, action, arguments, wait):
    """Hand the engine a request on ``bus`` (already listening); return its answer."""
    if not _engine_running(_store()):
        try:
            check_settings(_settings())
        except InvalidInput as exc:
            raise CommandExecutionError(
                f"the murder engine cannot start: {exc}. Fix `murder:` in the master config and restart "
                "salt-master (the master log has the engine's error)") from exc
        raise CommandExecutionError(NO_ENGINE)
    request_id = secrets.token_hex(8)
    bus.fire_event({"request_id": request_id, "action": action, "arguments": arguments}, config.TAG_ENGINE_REQUEST)
    answer = _next(bus, config.TAG_ENGINE_REPLY.format(request_id=request_id), time.monotonic() + wait)
    if answer is None:
        raise CommandExecutionError(f"the murder engine did not answer within {wait:g} s ({NO_ENGINE}?)")
    return answer[1]


@_reported
def publish(source=None, app=None, release=None, timeout=None, **kwargs):
    """
    Pack a release and hand it to the murder engine, which seeds it from now on.

    Minions fetch it at any time (``murder.fetch``, the ``murder.release``
    state with ``fetch: True``). The master keeps the newest
    ``keep_published`` releases of each app (default 3). A name published
    again with the same content changes nothing; with other content it is
    refused.

    source
        Directory, file, or ``.tar``/``.tar.gz``/``.tar.zst`` on the master.
    app
        Application name.
    release
        Release id; default: the UTC time.
    timeout
        Seconds to wait for the engine to pack and seed it (default: the ``timeout`` setting).

    Returns ``app``, ``release``, ``info_hash``, ``size``, ``sha256``, ``result``, ``changed``.

    CLI Example:

    .. code-block:: bash

        salt-run murder.publish source=/srv/builds/myapp app=myapp release=v42
    """
    _checked("murder.publish", kwargs, PUBLISH_ARGUMENTS)
    _check_source(source, _settings())
    arguments = {key: value for key, value in (("source", source), ("app", app), ("release", release))
                 if value is not None}
    with _bus() as bus:
        answer = _ask(bus, "publish", arguments, float(timeout or _settings()["timeout"]))
    if not answer.get("result"):
        raise CommandExecutionError(answer.get("error") or "the murder engine did not publish the release")
    return answer


@_reported
def published(app=None, **kwargs):
    """
    List the published releases (of ``app``, or of every app), newest first.

    CLI Example:

    .. code-block:: bash

        salt-run murder.published
        salt-run murder.published app=myapp
    """
    _checked("murder.published", kwargs, PUBLISHED_ARGUMENTS)
    try:
        return {"published": [record.summary() for record in _store().published(app)]}
    except InvalidInput as exc:
        raise SaltInvocationError(str(exc)) from exc


@_reported
def deploy(*args, **kwargs):
    """
    Deploy a release to every targeted minion through the swarm.

    The murder engine publishes ``source`` (packs it and seeds it), fires
    ``murder/deploy/<deploy_id>/start`` (the reactor runs ``murder.peer`` on
    the target), follows the peers with a deadline and, once enough minions
    hold the release, activates it on them. This function shows its progress
    and returns its summary; ``salt-run`` exits non-zero unless every
    targeted minion succeeded. Interrupted, it leaves the deploy running in
    the engine. An argument it does not take fails the call before anything
    is packed; a deploy that cannot start is recorded (``murder.status``)
    with its error. The arguments, by name or in this order by position, are
    ``murder_core.request.DEPLOY_ARGUMENTS``:

    source
        Directory, file, or ``.tar``/``.tar.gz``/``.tar.zst`` on the master.
    app
        Application name (letters, digits, ``.``, ``_``, ``-``).
    tgt, tgt_type
        Minions to deploy to, as for ``salt``.
    release
        Release id; default: the UTC time, ``20261126T101500Z``. One name
        means one content: a minion that holds this release with other
        content fails.
    base_dir
        Where the app lives on each minion; ``{app}`` and ``{minion}`` are
        expanded there. Default: each minion's own ``murder: base_dir``
        setting, else ``/srv/{app}``.
    activate
        Switch ``current`` once distribution succeeded (default True).
    keep
        Releases to keep on each minion (default 5).
    timeout
        Seconds to wait for every minion (default 600).
    min_success
        Minions that must succeed before anything is activated (default: all).
    shared, check_cmd, check_timeout
        Passed to ``murder.activate`` (shared entries, health check; the
        check is a shell command, as a string).
    batch, canary, batch_wait
        Activate in waves of ``batch`` hosts (``n`` or ``n%``), in the order of
        sorted minion ids, the first wave ``canary`` hosts; each wave switches
        ``current``, runs ``check_cmd`` and is answered before the next
        starts, ``batch_wait`` seconds later (default 0). Default: one wave.
    max_failures, on_failure
        When more than ``max_failures`` hosts (default 0) fail their health
        check or do not answer, no further wave starts and, with
        ``on_failure=rollback`` (the default), every host this deploy switched
        goes back to its previous release; ``on_failure=stop`` leaves them.
    request_id
        A name for this request, for ``salt-run murder.wait request_id=<id>``.

    CLI Example:

    .. code-block:: bash

        salt-run murder.deploy source=/srv/builds/myapp app=myapp tgt='web*'
        salt-run murder.deploy source=/srv/builds/myapp.tar.gz app=myapp tgt=G@role:web tgt_type=compound release=v42
    """
    if len(args) > len(request.DEPLOY_ARGUMENTS):
        raise SaltInvocationError(f"murder.deploy takes at most {len(request.DEPLOY_ARGUMENTS)} positional "
                                  f"arguments ({', '.join(request.DEPLOY_ARGUMENTS)}), got {len(args)}")
    arguments = dict(zip(request.DEPLOY_ARGUMENTS, args))
    arguments.update((key, value) for key, value in kwargs.items() if not key.startswith("__"))
    settings = _settings()
    _check_source(arguments.get("source"), settings)
    with _bus() as bus:
        answer = _ask(bus, "deploy", arguments, ENGINE_ANSWER_SECONDS)
        deploy_id = answer.get("deploy_id")
        if not answer.get("result"):
            raise CommandExecutionError(answer.get("error") or f"the murder engine refused the deploy {deploy_id}")
        timeout = float(arguments.get("timeout") or settings["timeout"])
        # Distribution, then the waves of activation, each bounded by the deploy's timeout.
        try:
            summary = _follow(bus, deploy_id, time.monotonic() + 3 * timeout + FOLLOW_GRACE_SECONDS)
        except (KeyboardInterrupt, SystemExit):  # Salt's own handler, when not followed from the main thread
            summary = None
        if summary is None:
            return _interrupted(deploy_id)
    summary["retcode"] = 0 if summary.get("result") else 1
    return _shown(summary, "deploy")


def _follow(bus, deploy_id, deadline):
    """Print the deploy's progress lines until its complete event; return its summary, or None if interrupted."""
    prefix = f"murder/deploy/{deploy_id}/"
    with _Interrupt() as interrupt:
        while True:
            found = _next(bus, prefix, deadline, interrupt)
            if interrupt.signum is not None:
                return None
            if found is None:
                raise CommandExecutionError(f"no word from the murder engine about deploy {deploy_id} before the "
                                            f"deadline: salt-run murder.status deploy_id={deploy_id}")
            tag, data = found
            if tag.endswith("/progress") and data.get("message"):
                _progress(data["message"])
            elif tag.endswith("/complete"):
                return dict(data)


def _interrupted(deploy_id):
    """What salt-run returns when it stops following: the deploy itself goes on in the engine."""
    message = (f"salt-run was interrupted; deploy {deploy_id} goes on in the murder engine: "
               f"salt-run murder.status deploy_id={deploy_id}")
    _progress(message)
    return {"deploy_id": deploy_id, "result": False, "state": "following interrupted", "comment": message,
            "retcode": 1}


@_reported
def wait(request_id=None, timeout=None, **kwargs):
    """
    Wait for the deploy of a request (``murder/deploy/request`` with a ``request_id``) and return its summary.

    ``salt-run`` exits 0 only when that deploy succeeded: non-zero when it
    failed, was refused (a missing source, a bad name, an unknown argument:
    reported at once), did not end within ``timeout``, or no request of
    that id reached the engine within ``timeout`` (at most 30 s for that).

    request_id
        The ``request_id`` the request carried.
    timeout
        Seconds to wait (default: the ``timeout`` setting plus two minutes).

    CLI Example:

    .. code-block:: bash

        salt-run event.send murder/deploy/request '{"source": "/srv/builds/myapp", "app": "myapp", "tgt": "web*", "request_id": "ci-1234"}'
        salt-run murder.wait request_id=ci-1234
    """
    _checked("murder.wait", kwargs, WAIT_ARGUMENTS)
    try:
        request_id = request.check_request_id(request_id)
    except InvalidInput as exc:
        raise SaltInvocationError(f"murder.wait needs the request_id of a deploy request: {exc}") from exc
    wait_for = float(timeout) if timeout is not None else float(_settings()["timeout"]) + FOLLOW_GRACE_SECONDS
    deadline = time.monotonic() + wait_for
    store = _store()
    with _bus() as bus:  # listening before the record is read: its end cannot slip between
        record = store.deploy_by_request(request_id)
        known_by = min(deadline, time.monotonic() + ENGINE_ANSWER_SECONDS)
        while record is None and time.monotonic() < known_by:
            _next(bus, "murder/deploy/", min(known_by, time.monotonic() + 0.5))
            record = store.deploy_by_request(request_id)
        if record is None:
            raise CommandExecutionError(f"no deploy request {request_id!r} is known to this master "
                                        f"(salt-run murder.status lists the recent ones)")
        if record.get("state") not in lifecycle.FINAL:
            followed = _follow(bus, record["deploy_id"], deadline)
            if followed is None:
                return _interrupted(record["deploy_id"])
            record = followed
    record = dict(record, retcode=0 if record.get("result") else 1)
    return _shown(record, "wait")


@_reported
def rollback(app=None, tgt=None, tgt_type="glob", base_dir=None, release=None, timeout=60, **kwargs):
    """
    Point ``current`` back to the previous (or the named) release on every targeted minion.

    app, tgt, tgt_type
        The application, and the minions to roll back, as for ``salt``.
    base_dir
        Where the app lives on each minion; default: each minion's own
        ``murder: base_dir`` setting, else ``/srv/{app}``.
    release
        The release to go back to; default: on each host, the one current
        there before ``current``. Hosts that go back to different releases
        fail the rollback, naming them: give ``release`` to put them on one.
    timeout
        Seconds to wait for the minions' answers (default 60).

    CLI Example:

    .. code-block:: bash

        salt-run murder.rollback app=myapp tgt='web*'
        salt-run murder.rollback app=myapp tgt='web*' release=20261126T101500Z
    """
    _checked("murder.rollback", kwargs, ROLLBACK_ARGUMENTS)
    release = config.release_name(release)
    try:
        if not app or not tgt:
            raise InvalidInput("murder.rollback needs app and tgt")
        config.check_app_name(app)
        if base_dir is not None:
            config.expand_base_dir(base_dir, app, "minion-id")
        if release is not None:
            config.check_release_name(release)
    except InvalidInput as exc:
        raise SaltInvocationError(str(exc)) from exc
    found = salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type)
    expected = sorted(found.get("minions", []) if isinstance(found, dict) else found)
    if not expected:
        raise SaltInvocationError(f"target {tgt!r} ({tgt_type}) matches no minion: nothing rolled back")
    kwarg = {"app": app}
    if base_dir is not None:
        kwarg["base_dir"] = base_dir
    if release:
        kwarg["release"] = release
    client = salt.client.get_local_client(mopts=__opts__)
    returns = client.cmd(expected, "murder.rollback", kwarg=kwarg, tgt_type="list", timeout=timeout,
                         full_return=True, gather_job_timeout=GATHER_JOB_TIMEOUT)
    minions = {}
    for minion in expected:
        answer = returns.get(minion)
        if answer is None:
            minions[minion] = {"result": False, "comment": "did not answer"}
            continue
        ret = answer.get("ret")
        ok = answer.get("retcode", 0) == 0 and isinstance(ret, dict)
        minions[minion] = dict(ret, result=True) if ok else {"result": False, "comment": str(ret)}
    return fleet.rollback_outcome(app, minions, named=release)


@_reported
def status(deploy_id=None, **kwargs):
    """
    Show deploys in progress and recent ones, with each minion's state.

    deploy_id
        One deploy, in full; without it, a line for each recent deploy.

    CLI Example:

    .. code-block:: bash

        salt-run murder.status
        salt-run murder.status deploy_id=myapp-20261126T101500Z-3f9a1c
    """
    _checked("murder.status", kwargs, STATUS_ARGUMENTS)
    store = _store()
    if deploy_id is not None:
        found = store.deploy(deploy_id)
        if found is None:
            raise SaltInvocationError(f"no deploy {deploy_id!r} is known to this master")
        return _shown(found, "status")
    deploys = []
    for item in store.deploys():
        line = {"deploy_id": item["deploy_id"], "app": item["app"], "release": item["release"],
                "state": item["state"], "started": item["started"],
                "minions": {m: s.get("state") for m, s in item.get("minions", {}).items()}}
        if item.get("error"):
            line["error"] = item["error"]
        deploys.append(line)
    return _shown({"deploys": deploys}, "status")
