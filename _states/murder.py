"""Put a release in service on a minion, from a highstate.

The release directory logic (layout, atomic switch, shared links, keep,
rollback target) lives in :mod:`murder_core.release`; these functions check
the arguments, ask the core what would change, and turn its answers and
errors into state returns.

``murder.release`` makes a release current under a base directory: one
already on disk under ``<base_dir>/releases/<release>``, or, with
``fetch: True``, one the master published, fetched through the swarm first.
A state's name is either that base directory (an absolute path) or the app,
whose base directory is then the minion's ``murder: base_dir``, as a
``salt-run murder.deploy`` without ``base_dir`` uses it.
"""
import logging
import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    from murder_core import config
    from murder_core.errors import InvalidInput, MurderError
    from murder_core.release import DEFAULT_CHECK_TIMEOUT, ReleaseTree, command_check

    HAS_CORE, CORE_ERROR = True, ""
except ImportError as exc:  # the package is not installed in Salt's Python
    HAS_CORE, CORE_ERROR = False, str(exc)
    DEFAULT_CHECK_TIMEOUT = 30

log = logging.getLogger(__name__)

__virtualname__ = "murder"


def __virtual__():
    if not HAS_CORE:
        return (False, f"the murder states need the murder-salt package in Salt's Python: {CORE_ERROR}")
    return __virtualname__


# What a fetch reports in the state's changes.
FETCH_FIGURES = ("seconds", "bytes_from_seeder", "bytes_from_peers", "hash_failures")


def _changes_after_error(tree, plan):
    """What changed when a step failed half way: only ``current`` can be known for sure."""
    try:
        now = tree.current()
    except MurderError:
        return {}
    return {"current": {"old": plan.old, "new": now}} if now != plan.old else {}


def _failed(ret, exc, changed=False):
    """Fill ``ret`` for a failure raised by the core."""
    ret["result"] = False
    ret["comment"] = f"{exc}" + ("" if changed else "; nothing was changed")
    return ret


def mod_run_check_cmd(check_cmd, cwd, check_timeout=None):
    """Run a release's health check as ``cmd.run`` would; return None when it passed, else why not.

    ``check_cmd`` is also one of Salt's global state arguments: because this
    module defines ``mod_run_check_cmd`` and ``release`` takes ``check_cmd``,
    Salt leaves the check to ``release`` (as it does for ``file.managed``)
    instead of running it a second time in its own way.
    """
    return _check(check_cmd, check_timeout)(cwd)


def _tree(name, app):
    """The release tree a state's ``name`` means: a base directory, or an app under ``murder: base_dir``."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("the state's name must be a base directory (an absolute path) or an app name")
    if os.path.isabs(name):
        return ReleaseTree(config.expand_base_dir(name, app, __opts__["id"]) if app else name), app
    try:
        config.check_app_name(name)
    except InvalidInput:
        raise InvalidInput(f"the state's name {name!r} is neither a base directory (an absolute path) "
                           "nor an app name (letters, digits, '.', '_', '-')") from None
    if app is not None and app != name:
        raise InvalidInput(f"the state's name {name!r} is an app, and app is {app!r}: give one of them, "
                           "or make the name the base directory (an absolute path)")
    template = config.option("base_dir", None, __opts__)
    return ReleaseTree(config.expand_base_dir(template, name, __opts__["id"])), name


def _check(check_cmd, check_timeout):
    return command_check(__salt__["cmd.run_all"], check_cmd, check_timeout, errors=(CommandExecutionError,))


def release(name, release, keep=None, shared=None, check_cmd=None, check_timeout=DEFAULT_CHECK_TIMEOUT,
            fetch=False, app=None):
    """Make ``release`` the current release under ``name``, check it, and keep a few.

    .. code-block:: yaml

        /srv/myapp:
          murder.release:
            - release: '20261126T101500Z'
            - keep: 5
            - shared: [log, tmp, config/app.yaml]
            - check_cmd: 'curl -fsS http://127.0.0.1:8080/health'
            - check_timeout: 30

    With the release id from pillar, a highstate switches releases when the
    pillar changes and reports no changes otherwise:

    .. code-block:: yaml

        /srv/myapp:
          murder.release:
            - release: {{ pillar['myapp']['release'] | yaml_encode }}

    With ``fetch: True`` a release that is not on disk yet is fetched through
    the swarm from the master's published releases (``salt-run
    murder.publish``), then made current; minions running the highstate at
    the same time form one swarm:

    .. code-block:: yaml

        myapp:
          murder.release:
            - release: {{ pillar['myapp']['release'] | yaml_encode }}
            - fetch: True

    name
        The base directory (an absolute path): ``releases/``, ``shared/``
        and the ``current`` symlink live under it; with ``app``, ``{app}``
        and ``{minion}`` in it are expanded. Or the app: then the base
        directory is this minion's ``murder: base_dir`` for it (default
        ``/srv/{app}``), the one a deploy without ``base_dir`` uses.

    release
        The release id, a directory under ``releases/``. Without ``fetch``
        the state fails when it is not there.

    fetch
        Fetch a release that is not on disk (as ``murder.fetch`` does); it
        must be published on the master. Needs ``app``.

    app
        The application, for ``fetch`` and the placeholders in ``name``;
        when ``name`` is the app, the same name or nothing.

    keep
        How many finished releases to keep (current included); older ones are
        removed after a successful switch, never the current release nor the
        one a rollback would go to. Default: ``murder: keep`` in the minion
        config, else 5.

    shared
        Paths relative to ``shared/`` linked into the release before the
        switch. A missing shared entry is made as an empty directory, unless
        the release ships a file there.

    check_cmd
        A health check run after the switch, as ``cmd.run`` runs it (through
        the shell, in the release directory). When it fails or times out,
        ``current`` goes back to the release that was current before (or is
        removed again if there was none) and the state fails.

    check_timeout
        Seconds the health check may run. Default: 30.

    Changes are ``{"current": {"old": ..., "new": ...}}``, plus ``shared`` (the
    entries linked), ``removed`` (the releases removed) and ``fetched`` (the
    release fetched through the swarm, with its ``bytes_from_seeder`` and
    ``bytes_from_peers``) when there are any. The check runs
    only when ``current`` switched.
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    release = config.release_name(release)
    try:
        config.check_command(check_cmd)
        tree, app = _tree(name, app)
        if fetch and not app:
            raise InvalidInput("fetch: True needs app (the application the release was published for)")
        keep = config.option("keep", keep, __opts__)
        tree.current()  # a current that is not a symlink to a release fails first
        wanted = None
        if not tree.has(release):
            if not fetch:
                ret["comment"] = (
                    f"Release {release} is not on disk at {tree.release_dir(release)}: deploy it to this "
                    "minion first, or set fetch: True (with app) to fetch it through the swarm; "
                    "nothing was changed"
                )
                return ret
            wanted = __salt__["murder.published"](app=app, release=release)
        plan = tree.plan_activation(release, shared=shared, keep=keep, arriving=wanted is not None)
    except (MurderError, SaltInvocationError, CommandExecutionError) as exc:
        return _failed(ret, exc)

    fetched = {"fetched": {"release": release}} if wanted is not None else {}
    ret["changes"] = dict(fetched, **plan.changes())
    if not plan.changes_anything and not fetched:
        ret["result"] = True
        ret["comment"] = plan.summary(tree.base_dir)
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = (f"Release {release} would be fetched through the swarm ({wanted['size']} bytes); "
                          if fetched else "") + plan.summary(tree.base_dir, would=True)
        return ret
    if fetched:
        try:
            report = __salt__["murder.fetch"](app=app, release=release, base_dir=tree.base_dir)
            fetched["fetched"].update({key: report[key] for key in FETCH_FIGURES})
            plan = tree.plan_activation(release, shared=shared, keep=keep)
        except (MurderError, SaltInvocationError, CommandExecutionError) as exc:
            ret["changes"] = fetched if tree.has(release) else {}
            return _failed(ret, exc, changed=bool(ret["changes"]))

    check = None
    if check_cmd:
        # Called with the release directory, once current points at it.
        check = _check(check_cmd, check_timeout)
    try:
        done = tree.carry_out(plan, check=check)
    except MurderError as exc:
        ret["changes"] = _changes_after_error(tree, plan)
        return _failed(ret, exc, changed=bool(ret["changes"]))
    ret["changes"] = dict(fetched, **done.changes())
    ret["comment"] = ("Fetched through the swarm; " if fetched else "") + done.summary(
        tree.base_dir, checked=check is not None)
    ret["result"] = not done.check_failed
    return ret


def rolled_back(name, release=None, app=None):
    """Make the release before the current one (or ``release``) current under ``name``.

    .. code-block:: yaml

        /srv/myapp:
          murder.rolled_back:
            - release: '20261125T090000Z'

    Without ``release`` every run goes one release further back, so an SLS
    applied more than once should name the release it rolls back to; named,
    the state reports no changes once that release is current.

    name
        The base directory or the app, as for ``murder.release``.

    app
        The application, to expand ``{app}`` and ``{minion}`` in ``name``.

    release
        The release to make current. Default: the newest finished release
        older than the current one. The state fails when there is none.

    Changes are ``{"current": {"old": ..., "new": ...}}``.
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    release = config.release_name(release)
    try:
        tree, app = _tree(name, app)
        if release is not None:
            tree.release_dir(release)  # checks the name
        old = tree.current()
        if old is None:
            ret["comment"] = f"No release is current in {tree.base_dir}: nothing to roll back"
            return ret
        target = release if release is not None else tree.previous(old)
        if target is None:
            ret["comment"] = (
                f"No release before {old} in {tree.releases_dir}: nothing to roll back to; "
                "nothing was changed"
            )
            return ret
        if target == old:
            ret["result"] = True
            ret["comment"] = f"Release {old} is already current in {tree.base_dir}"
            return ret
        if not tree.has(target):
            ret["comment"] = (
                f"Release {target} is not on disk at {tree.release_dir(target)}: fetch it first "
                "(murder.fetch, or murder.release with fetch: True); nothing was changed"
            )
            return ret
    except MurderError as exc:
        return _failed(ret, exc)

    ret["changes"] = {"current": {"old": old, "new": target}}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"{tree.base_dir} would be rolled back from {old} to {target}"
        return ret
    try:
        tree.activate(target)
    except MurderError as exc:
        ret["changes"] = {}
        return _failed(ret, exc)
    ret["result"] = True
    ret["comment"] = f"Rolled back {tree.base_dir} from {old} to {target}"
    return ret
