"""Murder on a minion: the swarm peer and the release layout (activate, rollback, list).

Each function is a thin layer over :mod:`murder_core`: it resolves its
arguments with :func:`_tree` and :func:`murder_core.config.release_name`, calls the core inside
:func:`_salt_errors`, which turns the core's
:class:`~murder_core.errors.InvalidInput` into ``SaltInvocationError`` and any
other :class:`~murder_core.errors.MurderError` into ``CommandExecutionError``
(the cause chained), and returns plain data.

``base_dir`` is either an absolute path or, with ``app``, a template in which
``{app}`` and ``{minion}`` are expanded (default: ``murder: base_dir`` in the
minion config, else ``/srv/{app}``), the way the ``murder`` runner calls these
functions on its targets.
"""
import contextlib
import importlib.util
import json
import logging
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    from murder_core import config, location, rack_split, request
    from murder_core.errors import InvalidInput, MurderError
    from murder_core.release import DEFAULT_CHECK_TIMEOUT, ReleaseTree, command_check

    HAS_CORE, CORE_ERROR = True, ""
except ImportError as exc:  # the package is not installed in Salt's Python
    HAS_CORE, CORE_ERROR = False, str(exc)
    DEFAULT_CHECK_TIMEOUT = 30

# Found, not imported: the swarm side of the core (libtorrent, zstandard, the packer) cost each job 0.045 CPU-s
# to import, and only murder.peer and murder.fetch use it (_swarm_fetch imports it). murder.activate runs on
# every minion of a deploy right after murder.peer, each in a job process of its own.
HAS_LIBTORRENT = importlib.util.find_spec("libtorrent") is not None

log = logging.getLogger(__name__)

__virtualname__ = "murder"


def __virtual__():
    if not HAS_CORE:
        return (
            False,
            "The murder execution module cannot be loaded: the murder-salt package is not "
            f"installed in Salt's Python (salt '*' state.apply murder.minion): {CORE_ERROR}",
        )
    if not HAS_LIBTORRENT:
        return (
            False,
            "The murder execution module cannot be loaded: the libtorrent Python "
            "bindings are not installed (pip install libtorrent)",
        )
    return __virtualname__


# Helpers: from Salt's arguments to the core's, from the core's errors to Salt's.


@contextlib.contextmanager
def _salt_errors():
    """Raise the core's errors as Salt's, with the core's message and the cause chained."""
    try:
        yield
    except InvalidInput as exc:
        raise SaltInvocationError(str(exc)) from exc
    except MurderError as exc:
        raise CommandExecutionError(str(exc)) from exc


def _tree(base_dir=None, app=None):
    """The release tree of ``base_dir``, expanded for ``app`` and this minion when ``app`` is given."""
    if app is None:
        if isinstance(base_dir, str) and "{" in base_dir:
            raise InvalidInput(f"base_dir {base_dir!r} has placeholders: give app too")
        return ReleaseTree(base_dir)
    config.check_app_name(app)
    template = config.option("base_dir", base_dir, __opts__)
    return ReleaseTree(config.expand_base_dir(template, app, __opts__["id"]))


# The release layout.


def activate(
    base_dir=None,
    release=None,
    shared=None,
    keep=None,
    check_cmd=None,
    check_timeout=DEFAULT_CHECK_TIMEOUT,
    app=None,
):
    """Make ``release`` the current release under ``base_dir``.

    CLI Example:

    .. code-block:: bash

        salt '*' murder.activate /srv/myapp 20261126T101500Z
        salt '*' murder.activate /srv/myapp 20261126T101500Z shared='[log, tmp]' keep=5
        salt '*' murder.activate release=20261126T101500Z app=myapp check_cmd='curl -fsS 127.0.0.1:8080/up'

    base_dir
        The base directory (absolute) holding ``releases/``, ``shared/`` and
        ``current``; with ``app``, a template (see the module's docs).

    release
        The release id; ``<base_dir>/releases/<release>`` must be on disk.

    shared
        Paths relative to ``shared/`` to link into the release before the switch.

    keep
        When given, remove the releases beyond the newest ``keep`` after the
        switch (never the current one nor its rollback target). Without it
        nothing is removed.

    check_cmd
        A health check run after the switch, through the shell, in the
        release directory. When it fails ``current`` goes back to the release
        that was current before and the call fails.

    check_timeout
        Seconds the health check may run. Default: 30.

    app
        The application, to expand ``{app}`` and ``{minion}`` in ``base_dir``.

    Returns ``{"old": ..., "new": ..., "shared": [linked], "removed": [removed], "comment": ...}``;
    ``old`` equals ``new`` when the release already was current.
    """
    release = config.release_name(release)
    with _salt_errors():
        if release is None:
            raise InvalidInput("murder.activate needs a release")
        config.check_command(check_cmd)
        tree = _tree(base_dir, app)
        plan = tree.plan_activation(release, shared=shared, keep=keep)
        check = None
        if check_cmd:
            check = command_check(__salt__["cmd.run_all"], check_cmd, check_timeout, errors=(CommandExecutionError,))
        done = tree.carry_out(plan, check=check)
    comment = done.summary(tree.base_dir, checked=check is not None)
    if done.check_failed:
        raise CommandExecutionError(comment)
    return {
        "old": done.old,
        "new": done.current,
        "shared": done.shared,
        "removed": done.removed,
        "comment": comment,
    }


def rollback(base_dir=None, release=None, app=None):
    """Make the release before the current one (or ``release``) current under ``base_dir``.

    CLI Example:

    .. code-block:: bash

        salt '*' murder.rollback /srv/myapp
        salt '*' murder.rollback /srv/myapp release=20261125T090000Z
        salt '*' murder.rollback app=myapp

    base_dir
        The base directory (absolute) holding ``releases/`` and ``current``;
        with ``app``, a template (see the module's docs).

    release
        The release to make current. Default: the release that was current
        here before the current one and is still on disk (a release undone by
        a failed check or a rollback never is); it is an error when there is
        none.

    app
        The application, to expand ``{app}`` and ``{minion}`` in ``base_dir``.

    Returns ``{"old": ..., "new": ...}``.
    """
    with _salt_errors():
        old, new = _tree(base_dir, app).rollback(to=config.release_name(release))
    return {"old": old, "new": new}


def releases(base_dir=None, app=None):
    """List the finished releases under ``base_dir``, oldest first.

    Releases still being written (``releases/.staging-*``) are not listed.

    CLI Example:

    .. code-block:: bash

        salt '*' murder.releases /srv/myapp
        salt '*' murder.releases app=myapp
    """
    with _salt_errors():
        return _tree(base_dir, app).releases()


def current(base_dir=None, app=None):
    """Return the release ``<base_dir>/current`` points at, or None when there is none.

    CLI Example:

    .. code-block:: bash

        salt '*' murder.current /srv/myapp
        salt '*' murder.current app=myapp
    """
    with _salt_errors():
        return _tree(base_dir, app).current()


# The swarm peer: what the reactor runs on every targeted minion.


def _fire(tag, data):
    try:
        __salt__["event.fire_master"](data, tag)
    except Exception:  # pylint: disable=broad-except
        # The master being away must not fail the download; it only misses a report.
        log.warning("could not send %s to the master", tag, exc_info=True)


def _settings():
    settings = dict(config.DEFAULTS)
    settings.update(__opts__.get("murder") or {})
    return settings


def _stripe_members(kwargs, settings):
    # The reactor targets the deploy's exact minion list, which Salt hands to
    # the job as __pub_tgt: each peer finds its stripe without a longer event.
    # Called any other way (a glob, salt-call), the peer has no stripe.
    if not settings["piece_stripes"] or kwargs.get("__pub_tgt_type") != "list":
        return ()
    members = kwargs.get("__pub_tgt")
    return [str(m) for m in members] if isinstance(members, (list, tuple)) else ()


def _swarm_fetch(peer_request, on_progress, stripe_members=()):
    """Fetch ``peer_request``'s release into the minion's tree; return ``(member, report)`` (the core's)."""
    try:
        from murder_core import minion as minion_core  # pylint: disable=import-outside-toplevel
    except ImportError as exc:  # libtorrent is there but does not load (a library it needs is missing)
        raise CommandExecutionError(f"the swarm side of murder cannot be loaded: {exc}") from exc
    settings = _settings()
    minion = __opts__["id"]
    base = config.expand_base_dir(peer_request.base_dir or settings["base_dir"], peer_request.app, minion)
    minion_core.forget_artifacts(base)
    timeout = float(peer_request.timeout or settings["timeout"])
    place = _place(settings) if peer_request.location_key else None
    first, last = int(settings["peer_port_first"]), int(settings["peer_port_last"])
    return minion_core.fetch(
        torrent=peer_request.torrent, sha256=peer_request.sha256, base_dir=base, release=peer_request.release,
        seeders=minion_core.parse_endpoints(peer_request.seeders),
        listen=f"{settings['peer_address']}:{first}", port_retries=max(last - first, 0),
        stall_timeout=float(settings["stall_timeout"]),
        # The deploy's floor for its fleet size (policy.fleet_progress_interval), or this minion's own.
        progress_interval=max(float(peer_request.progress_interval or 0), float(settings["progress_interval"])),
        on_progress=on_progress,
        upload_rate_limit=int(settings["upload_rate_limit"]),
        download_rate_limit=int(settings["download_rate_limit"]),
        deadline=time.monotonic() + timeout,
        libtorrent=settings["libtorrent"],
        minion=minion, minions=stripe_members, place=place, location_key=peer_request.location_key,
        leave_seeder=bool(settings["leave_seeder"]), seeder_fallback=float(settings["seeder_fallback"]),
        split=_split(peer_request, minion, place),
    )


def _split(peer_request, minion, place):
    """This minion's share under the deploy's rack split (``murder_core.rack_split``), or None."""
    if not peer_request.racks or not place:
        return None
    found = rack_split.assign(peer_request.racks, minion, place)
    if found is None:
        known = [name for name, members in peer_request.racks.items() if minion in members]
        log.warning("murder: the master places this minion in %s, it says %s: one session, no rack split "
                    "(refresh its grains: saltutil.refresh_grains)", known[0] if known else "no rack", place)
    return found


def _place(settings):
    """This minion's place for the tracker: its ``murder:`` config, else its grains, else None (by address).

    A bad name in the config fails the peer, naming it; a bad grain (an
    inventory's ``rack`` may be anything) only places the minion by address.
    """
    try:
        return location.of_minion(settings, __grains__)
    except InvalidInput as exc:
        configured = location.of_minion(settings, {})  # a bad name in the config raises here, naming it
        log.warning("%s (a grain): this minion's rack and datacenter come from its config only%s", exc,
                    "" if configured else "; it is placed by its address")
        return configured


def _linger(member, report):
    if member is not None:
        try:
            report["linger"] = member.linger(float(_settings()["linger"]))
        finally:
            member.close()
    return report


def peer(**kwargs):
    """
    Fetch a release through the swarm into ``<base_dir>/releases/<release>``, for one deploy.

    This is what the ``murder/deploy/<deploy_id>/start`` reaction runs on
    every targeted minion, with the event's ``peer`` data (a
    ``murder_core.request.PeerRequest``): download the artifact from the
    seeder and the other peers, check its SHA-256, unpack it, fire
    ``murder/peer/<deploy_id>/<minion>/done`` (or ``…/failed``), then keep
    seeding until the swarm is complete or ``linger`` seconds pass. Progress
    goes to the master as ``…/progress`` events, at most one every
    ``progress_interval`` seconds: the larger of this minion's setting and
    the deploy's floor for its fleet size. Nothing is activated here.

    deploy_id, app, release
        Names of the deploy; ``release`` is the directory under ``releases/``.
    torrent, sha256, size, info_hash
        The release's .torrent (base64), the SHA-256 of the whole artifact
        (checked before unpacking), its size and info-hash.
    seeders
        ``host:port`` of the master's seeder, connected to at once.
    location_key
        Set by the engine when its tracker chooses peers by rack: the peer
        announces this minion's place (``murder: rack`` and ``datacenter``,
        else the grains of those names) signed with it.
    racks
        Set by the engine when the master knows where the deploy's minions
        are (``{place: [minion, ...]}``, ``murder_core.rack_split``): a
        minion listed at its own place runs two sessions, one fetching its
        rack's stripes from outside, one trading with its rack-mates.
    base_dir
        Where the app lives (default: this minion's ``murder: base_dir``).
    timeout, progress_interval
        The deploy's deadline and the floor of the progress interval.

    CLI Example:

    .. code-block:: bash

        salt '*' murder.peer deploy_id=myapp-20261126T101500Z-3f9a1c app=myapp \\
            release=20261126T101500Z torrent=<base64> sha256=<hex> size=<bytes> info_hash=<hex> \\
            seeders='[10.0.0.1:6881]'
    """
    minion = __opts__["id"]
    started = time.monotonic()
    deploy_id = kwargs.get("deploy_id")
    tags = {kind: getattr(config, f"TAG_PEER_{kind.upper()}").format(deploy_id=deploy_id, minion=minion)
            for kind in ("progress", "done", "failed")}
    report = {"deploy_id": deploy_id, "minion": minion, "release": kwargs.get("release")}
    settings = _settings()
    try:
        with _salt_errors():
            wanted = request.PeerRequest.from_dict(
                {key: value for key, value in kwargs.items() if not key.startswith("__")}, "murder.peer")
            if not wanted.deploy_id:
                raise InvalidInput("murder.peer needs deploy_id (the deploy event's data); "
                                   "to fetch a published release use murder.fetch")
            member, result = _swarm_fetch(
                wanted, lambda p: _fire(tags["progress"], dict(report, **p.as_dict())),
                _stripe_members(kwargs, settings))
    except (SaltInvocationError, CommandExecutionError) as exc:
        _fire(tags["failed"], dict(report, error=str(exc), seconds=round(time.monotonic() - started, 3)))
        raise
    done = dict(report, **result, size=int(wanted.size or 0))
    if not result["changed"]:
        done["comment"] = f"release {wanted.release} was already on disk"
    _fire(tags["done"], done)
    return _linger(member, done)


def fetch(app=None, release=None, base_dir=None):
    """
    Fetch a published release through the swarm into ``<base_dir>/releases/<release>``; activate nothing.

    The path of a host that joins after a deploy (autoscaling, a repaired
    machine) and of the ``murder.release`` state with ``fetch: True``. What to
    fetch (the torrent and the artifact's SHA-256) comes from the master's
    file server (``salt://murder-published/<app>/<release>.json``, written
    by the murder engine for every published release), through Salt's
    authenticated channel; the bytes come from the engine's seeder and the
    other peers, each block checked against the torrent and the whole
    artifact against the SHA-256. Then the peer keeps seeding until its
    swarm is complete or ``linger`` seconds pass.

    app
        The application.
    release
        A published release (``salt-run murder.published app=<app>``).
    base_dir
        Where the app lives (default: this minion's ``murder: base_dir``).

    Returns ``changed`` (False when the release was on disk already),
    ``path``, ``seconds``, ``bytes_from_seeder``, ``bytes_from_peers``,
    ``hash_failures``.

    CLI Example:

    .. code-block:: bash

        salt 'web7' murder.fetch app=myapp release=v42
    """
    release = config.release_name(release)
    with _salt_errors():
        wanted = _published_release(app, release)
        if base_dir is not None:
            wanted = wanted.for_deploy(base_dir=base_dir)
        member, result = _swarm_fetch(wanted, None)
    return _linger(member, result)


def published(app=None, release=None):
    """
    Say whether ``release`` of ``app`` is published on the master, and what it is.

    Reads what ``murder.fetch`` would fetch with, from the master's file
    server; fails when the release is not published.

    Returns ``app``, ``release``, ``sha256``, ``size``, ``info_hash``.

    CLI Example:

    .. code-block:: bash

        salt 'web7' murder.published app=myapp release=v42
    """
    with _salt_errors():
        wanted = _published_release(app, config.release_name(release))
    return {"app": wanted.app, "release": wanted.release, "sha256": wanted.sha256, "size": wanted.size,
            "info_hash": wanted.info_hash}


def _published_release(app, release):
    """The ``PeerRequest`` of a published release, from the master's file server; MurderError if none."""
    config.check_app_name(app)
    config.check_release_name(release)
    url = f"salt://{config.FILESERVER_PREFIX}/{app}/{release}.json"
    text = __salt__["cp.get_file_str"](url)
    if not text:
        raise MurderError(
            f"release {release} of app {app} is not published on the master ({url} not found): "
            f"publish it with salt-run murder.publish, or see salt-run murder.published app={app}"
        )
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MurderError(f"{url} is not a published release: {exc}") from exc
    return request.PeerRequest.from_dict(data, "murder.fetch")
