"""Deploy a release to many minions through a BitTorrent swarm.

The master packs the release, starts the tracker and seeder, and fires
``murder/deploy/<deploy_id>/start``; the reactor turns that event into
``murder.peer`` on the target; this runner follows the peers' events, and
only when every host has the release does it activate it everywhere.

Configuration: the ``murder:`` section of the master config (see the README's
table, defined in ``murder_core/config.py``).
"""
import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import time

import salt.client
import salt.utils.event
import salt.utils.minions
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    from murder_core import config, distribution, fleet, policy, request
    from murder_core.errors import InvalidInput, MurderError

    HAS_CORE = True
    CORE_ERROR = ""
except ImportError as exc:  # libtorrent or the core is not installed on this master
    HAS_CORE = False
    CORE_ERROR = str(exc)

log = logging.getLogger(__name__)

__virtualname__ = "murder"

ROLLBACK_ARGUMENTS = ("app", "tgt", "tgt_type", "base_dir", "release", "timeout")
STATUS_ARGUMENTS = ("deploy_id",)

# Keep at most this many finished deploys for murder.status.
STATUS_KEEP = 50
PROGRESS_SECONDS = 2.0
# Seconds a busy minion gets to say its job is still running (Salt's default, 10, is short
# for a host that is unpacking a large release or lingering as a seeder).
GATHER_JOB_TIMEOUT = 30


def __virtual__():
    if not HAS_CORE:
        return (False, f"the murder runner needs libtorrent and murder_core: {CORE_ERROR}")
    return __virtualname__


def _reported(function):
    """Turn an error into a failed return with ``retcode`` 1.

    ``salt-run`` takes its exit code from the return's ``retcode``; a raised
    ``SaltInvocationError`` would be printed as a usage hint and exit 0.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (SaltInvocationError, CommandExecutionError) as exc:
            log.error("murder.%s: %s", function.__name__, exc)
            return {"result": False, "error": str(exc), "retcode": 1}

    return wrapper


def _settings():
    settings = dict(config.DEFAULTS)
    settings.update(__opts__.get("murder") or {})
    return settings


def _state_dir(*parts):
    path = os.path.join(__opts__["cachedir"], "murder", *parts)
    os.makedirs(path, exist_ok=True)
    return path


def _progress(message):
    log.info("%s", message)
    jid_event = globals().get("__jid_event__")
    if jid_event is not None:
        jid_event.fire_event({"message": message}, "progress")


@contextlib.contextmanager
def _app_lock(app):
    """One deploy of an app at a time: a second one is refused, never interleaved."""
    path = os.path.join(_state_dir("locks"), f"{app}.lock")
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another deploy"
            raise CommandExecutionError(f"a deploy of app {app!r} is already running ({holder}); try again when it ends")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _save_status(deploy_id, status):
    directory = _state_dir("deploys")
    path = os.path.join(directory, f"{deploy_id}.json")
    partial = path + ".tmp"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(status, handle, sort_keys=True)
    os.replace(partial, path)
    finished = sorted(
        (os.path.getmtime(os.path.join(directory, name)), name)
        for name in os.listdir(directory)
        if name.endswith(".json")
    )
    for _, name in finished[:-STATUS_KEEP]:
        os.unlink(os.path.join(directory, name))


def _expected_minions(tgt, tgt_type):
    found = salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type)
    minions = found.get("minions", []) if isinstance(found, dict) else list(found)
    if not minions:
        raise SaltInvocationError(f"target {tgt!r} ({tgt_type}) matches no minion: nothing deployed")
    return sorted(minions)


def _peer_event(event, deploy_id):
    """Return ``(minion, kind, payload)`` of the next peer event of this deploy, or None.

    Besides the peers' own events, the return of a ``murder.peer`` job of this
    deploy that failed counts as ``failed``: a minion that cannot run it at all
    (no libtorrent, module not synced) sends no peer event, only that return.
    """
    pattern = rf"(?:murder/peer/{re.escape(deploy_id)}/|salt/job/[0-9]+/ret/)"
    found = event.get_event(wait=0.5, tag=pattern, match_type="regex", full=True)
    if not found:
        return None
    if found["tag"].startswith("salt/job/"):
        return _failed_peer_job(found.get("data") or {}, deploy_id)
    kind = found["tag"].rsplit("/", 1)[-1]
    outer = found.get("data") or {}
    # Minion events carry the sender's authenticated id; the tag is only a hint.
    minion = outer.get("id")
    payload = outer.get("data") if isinstance(outer.get("data"), dict) else outer
    return minion, kind, payload


def _failed_peer_job(ret, deploy_id):
    """``(minion, "failed", payload)`` for a failed ``murder.peer`` return of this deploy, else None."""
    if ret.get("fun") != "murder.peer" or (ret.get("success") and not ret.get("retcode")):
        return None
    if not any(isinstance(arg, dict) and arg.get("deploy_id") == deploy_id for arg in ret.get("fun_args") or []):
        return None
    why = str(ret.get("return"))[:500]
    return ret.get("id"), "failed", {"error": f"murder.peer failed: {why}"}


def _follow(event, deploy_id, hosts, deadline, silence):
    last_line = 0.0
    while not hosts.all_finished():
        now = time.monotonic()
        if now >= deadline:
            late = hosts.time_out("did not finish before the deploy's timeout (is the minion up?)")
            _progress(f"timed out waiting for {', '.join(late)}")
            return
        found = _peer_event(event, deploy_id)
        if found:
            minion, kind, payload = found
            if hosts.record(minion, kind, payload, now=time.monotonic()) and kind == "failed":
                _progress(f"{minion} failed: {hosts.minions[minion].comment}")
        for minion in hosts.fail_silent(time.monotonic(), silence):
            _progress(f"{minion} failed: {hosts.minions[minion].comment}")
        if time.monotonic() - last_line >= PROGRESS_SECONDS:
            _progress(hosts.progress_line())
            last_line = time.monotonic()
    _progress(hosts.progress_line())


def _activate(hosts, minions, kwargs, timeout):
    client = salt.client.get_local_client(mopts=__opts__)
    returns = client.cmd(minions, "murder.activate", kwarg=kwargs, tgt_type="list", timeout=timeout,
                         full_return=True, gather_job_timeout=GATHER_JOB_TIMEOUT)
    for minion in minions:
        state = hosts.minions[minion]
        answer = returns.get(minion)
        if answer is None:
            state.comment = "did not answer the activation"
            _progress(f"{minion}: {state.comment}")
            continue
        ret = answer.get("ret")
        if answer.get("retcode", 0) == 0 and isinstance(ret, dict) and ret.get("result", True):
            state.activated = True
            state.changed = state.changed or ret.get("old") != ret.get("new")
            state.comment = ret.get("comment") or f"activated {kwargs['release']}"
        else:
            state.comment = f"activation failed: {ret.get('comment') if isinstance(ret, dict) else ret}"
            _progress(f"{minion}: {state.comment}")


@_reported
def deploy(*args, **kwargs):
    """
    Deploy a release to every targeted minion through the swarm.

    Packs ``source``, starts the tracker and seeder, fires
    ``murder/deploy/<deploy_id>/start`` (the reactor runs ``murder.peer`` on
    the target), follows the peers' events with a deadline and, once enough
    minions hold the release, activates it on them. ``salt-run`` exits
    non-zero unless every targeted minion succeeded. An argument this
    function does not take fails the call before anything is packed; a
    deploy that cannot start is recorded (``murder.status``) with its error.
    The arguments, by name or in this order by position, are
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

    CLI Example:

    .. code-block:: bash

        salt-run murder.deploy source=/srv/builds/myapp app=myapp tgt='web*'
        salt-run murder.deploy source=/srv/builds/myapp.tar.gz app=myapp tgt=G@role:web tgt_type=compound release=v42
    """
    settings = _settings()
    arguments = dict(zip(request.DEPLOY_ARGUMENTS, args), **kwargs)
    with contextlib.ExitStack() as held:
        try:
            try:
                if len(args) > len(request.DEPLOY_ARGUMENTS):
                    raise InvalidInput(f"murder.deploy takes at most {len(request.DEPLOY_ARGUMENTS)} positional "
                                       f"arguments ({', '.join(request.DEPLOY_ARGUMENTS)}), got {len(args)}")
                asked = request.DeployRequest.from_arguments(arguments, settings, distribution.new_release_id)
                if not os.path.exists(asked.source):
                    raise InvalidInput(f"release source {asked.source} does not exist on the master")
            except InvalidInput as exc:
                raise SaltInvocationError(str(exc)) from exc
            expected = _expected_minions(asked.tgt, asked.tgt_type)
            held.enter_context(_app_lock(asked.app))
        except (SaltInvocationError, CommandExecutionError) as exc:
            _record_refused(arguments, exc)
            raise
        return _deploy(settings, asked, expected)


def _record_refused(arguments, exc):
    """Record a deploy that could not start, so ``murder.status`` (and a CI job) sees why."""
    app, release = arguments.get("app"), config.release_name(arguments.get("release"))
    try:
        config.check_app_name(app)
    except InvalidInput:
        app = "unknown"
    try:
        config.check_release_name(release)
    except InvalidInput:
        release = distribution.new_release_id()
    deploy_id = distribution.new_deploy_id(app, release)
    summary = {"deploy_id": deploy_id, "app": app, "release": release, "state": "refused", "result": False,
               "changed": False, "started": time.time(), "seconds": 0.0, "minions": {}, "error": str(exc)}
    _save_status(deploy_id, summary)
    with salt.utils.event.get_event("master", sock_dir=__opts__["sock_dir"], opts=__opts__, listen=False) as event:
        event.fire_event(summary, config.TAG_DEPLOY_COMPLETE.format(deploy_id=deploy_id))


def _deploy(settings, asked, expected):
    app, release, timeout, activate = asked.app, asked.release, asked.timeout, asked.activate
    needed = min(asked.min_success or len(expected), len(expected))
    deploy_id = distribution.new_deploy_id(app, release)
    started = time.monotonic()
    hosts = fleet.Fleet(expected)
    summary = {"deploy_id": deploy_id, "app": app, "release": release, "tgt": asked.tgt, "tgt_type": asked.tgt_type,
               "started": time.time(), "state": "distributing", "minions": {}}
    _save_status(deploy_id, summary)
    address = settings.get("seeder_address") or distribution.default_address(__opts__.get("interface"))
    with salt.utils.event.get_event("master", sock_dir=__opts__["sock_dir"], opts=__opts__, listen=True) as event:
        try:
            with distribution.Distribution(
                source=asked.source, app=app, release=release,
                workdir=os.path.join(_state_dir("work"), deploy_id), address=address, settings=settings,
            ) as dist:
                summary["info_hash"] = dist.info.info_hash
                summary["size"] = dist.artifact.size
                interval = policy.fleet_progress_interval(len(expected))
                peer = dict(dist.peer_arguments(), deploy_id=deploy_id, app=app, release=release,
                            timeout=timeout, progress_interval=interval)
                if asked.base_dir is not None:
                    peer["base_dir"] = asked.base_dir
                _progress(f"deploy {deploy_id}: {app} {release} ({dist.artifact.size} bytes) to "
                          f"{len(expected)} minions, seeder {dist.seeder_endpoint}")
                event.fire_event({"deploy_id": deploy_id, "app": app, "release": release, "tgt": asked.tgt,
                                  "tgt_type": asked.tgt_type, "minions": expected, "peer": peer},
                                 config.TAG_DEPLOY_START.format(deploy_id=deploy_id))
                hosts.expect_word(time.monotonic())
                slowest = max(interval, float(settings["progress_interval"]))
                _follow(event, deploy_id, hosts, started + timeout,
                        policy.silence_limit(settings["silence_timeout"], slowest))
                summary["distribution_seconds"] = round(time.monotonic() - started, 3)
                succeeded = hosts.succeeded()
                if activate and len(succeeded) >= needed:
                    summary["state"] = "activating"
                    _save_status(deploy_id, dict(summary, minions=hosts.report(activate)))
                    _activate(hosts, succeeded, asked.activation(), timeout)
                elif activate:
                    reason = (f"not activated: {len(succeeded)} of {len(expected)} minions have the release, "
                              f"{needed} needed")
                    _progress(reason)
                    for state in hosts.minions.values():
                        if state.state == fleet.DONE:
                            state.comment = reason
        except InvalidInput as exc:
            raise SaltInvocationError(str(exc)) from exc
        except MurderError as exc:
            raise CommandExecutionError(f"deploy {deploy_id} failed on the master: {exc}") from exc
        finally:
            summary["seconds"] = round(time.monotonic() - started, 3)
            summary["minions"] = hosts.report(activate)
            summary["result"] = bool(summary["minions"]) and all(m["result"] for m in summary["minions"].values())
            summary["changed"] = any(m["changed"] for m in summary["minions"].values())
            summary["state"] = "succeeded" if summary["result"] else "failed"
            _save_status(deploy_id, summary)
            event.fire_event(summary, config.TAG_DEPLOY_COMPLETE.format(deploy_id=deploy_id))
    summary["retcode"] = 0 if summary["result"] else 1
    return summary


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
        The release to go back to; default: the one before ``current``.
    timeout
        Seconds to wait for the minions' answers (default 60).

    CLI Example:

    .. code-block:: bash

        salt-run murder.rollback app=myapp tgt='web*'
        salt-run murder.rollback app=myapp tgt='web*' release=20261126T101500Z
    """
    release = config.release_name(release)
    try:
        request.check_names("murder.rollback", kwargs, ROLLBACK_ARGUMENTS)
        if not app or not tgt:
            raise InvalidInput("murder.rollback needs app and tgt")
        config.check_app_name(app)
        if base_dir is not None:
            config.expand_base_dir(base_dir, app, "minion-id")
        if release is not None:
            config.check_release_name(release)
    except InvalidInput as exc:
        raise SaltInvocationError(str(exc)) from exc
    expected = _expected_minions(tgt, tgt_type)
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
    result = all(m["result"] for m in minions.values())
    return {"app": app, "result": result, "minions": minions, "retcode": 0 if result else 1}


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
    try:
        request.check_names("murder.status", kwargs, STATUS_ARGUMENTS)
    except InvalidInput as exc:
        raise SaltInvocationError(str(exc)) from exc
    directory = _state_dir("deploys")
    if deploy_id is not None:
        path = os.path.join(directory, f"{os.path.basename(str(deploy_id))}.json")
        if not os.path.isfile(path):
            raise SaltInvocationError(f"no deploy {deploy_id!r} is known to this master")
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    deploys = []
    for name in os.listdir(directory):
        if name.endswith(".json"):
            with open(os.path.join(directory, name), encoding="utf-8") as handle:
                item = json.load(handle)
            minions = item.get("minions", {})
            deploys.append({
                "deploy_id": item["deploy_id"], "app": item["app"], "release": item["release"],
                "state": item["state"], "started": item["started"],
                "minions": {m: s.get("state") for m, s in minions.items()},
            })
    deploys.sort(key=lambda d: d["started"], reverse=True)
    return {"deploys": deploys}
