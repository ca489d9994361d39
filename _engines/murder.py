"""The murder engine: the master's tracker, its seeders and its deploys, in a process of their own.

Enabled by the master config the snippet writes (``python -m
murder_core.saltext snippet``)::

    engines:
      - murder: {}

Salt starts it with the master and starts it again if it dies. It serves
every published release (one seeder each, the tracker, the file that lets a
minion fetch it) and runs the deploys that ``salt-run murder.deploy`` and
``murder/deploy/request`` events ask for, so a deploy goes on when
``salt-run`` is interrupted. The work is :class:`murder_core.engine.Engine`;
this module only connects it to Salt: the master's event bus, target
resolution and the activation job. Its settings are the master's ``murder:``
section, overlaid by the engine's own config (``murder: {keep_published: 5}``
under ``engines:``).
"""
import logging
import os
import signal

import salt.cache
import salt.client
import salt.utils.event
import salt.utils.minions

try:
    from murder_core import config, distribution, engine as engine_core, location, metrics, store as store_mod
    from murder_core.errors import InvalidInput

    HAS_CORE, CORE_ERROR = True, ""
except ImportError as exc:  # the package (or libtorrent) is not installed in Salt's Python
    HAS_CORE, CORE_ERROR = False, str(exc)

log = logging.getLogger(__name__)

__virtualname__ = "murder"
# Seconds a busy minion gets to say its activation job is still running.
GATHER_JOB_TIMEOUT = 30


def __virtual__():
    if not HAS_CORE:
        return (False, f"the murder engine needs the murder-salt package and libtorrent in Salt's Python: {CORE_ERROR}")
    return __virtualname__


def _running():
    """The loop's condition; a test replaces it to run a few passes."""
    return True


def settings(opts, overrides=None):
    """The master's murder settings: defaults, then ``murder:`` in the master config, then the engine's own."""
    found = dict(config.DEFAULTS)
    found.update(opts.get("murder") or {})
    found.update(overrides or {})
    found["store_dir"] = found.get("store_dir") or os.path.join(opts["cachedir"], "murder")
    return found


def _behind_syndics(opts, tgt, tgt_type):
    """The minions matching ``tgt`` that answer through this master's syndics.

    A master of masters (``order_masters``) holds no keys of the minions
    behind its syndics, so only asking finds them: a ping, answered through
    the syndics within Salt's ``timeout`` plus ``syndic_wait``. A minion
    behind a syndic that is down cannot be expected: it is not in the deploy.
    """
    client = salt.client.get_local_client(mopts=opts)
    answers = client.cmd(tgt, "test.ping", tgt_type=tgt_type, timeout=int(opts.get("timeout") or 5),
                         gather_job_timeout=GATHER_JOB_TIMEOUT)
    return [minion for minion, answer in (answers or {}).items() if answer is True]


def _expected_minions(opts):
    def expected(tgt, tgt_type):
        found = salt.utils.minions.CkMinions(opts).check_minions(tgt, tgt_type)
        minions = found.get("minions", []) if isinstance(found, dict) else list(found)
        if opts.get("order_masters"):
            minions = set(minions) | set(_behind_syndics(opts, tgt, tgt_type))
        if not minions:
            raise InvalidInput(f"target {tgt!r} ({tgt_type}) matches no minion: nothing deployed")
        return sorted(minions)

    return expected


def _activate(opts):
    def activate(minions, kwargs, timeout):
        client = salt.client.get_local_client(mopts=opts)
        returns = client.cmd(minions, "murder.activate", kwarg=kwargs, tgt_type="list", timeout=timeout,
                             full_return=True, gather_job_timeout=GATHER_JOB_TIMEOUT)
        return returns or {}

    return activate


def _places(opts):
    """``{minion: place or None}`` from the master's minion data cache (``rack_split``'s plan).

    Each minion's grains hold ``murder_location`` (its ``murder:`` config's
    ``rack`` and ``datacenter``, from the ``murder`` grains module) and its
    own ``rack``/``datacenter`` grains: the same place its peer announces.
    A minion the cache does not know, or whose names are not valid, has none.
    """
    def places(minions):
        cache = salt.cache.factory(opts)
        found = {}
        for minion in minions:
            try:
                grains = cache.fetch("grains", minion) or {}
                found[minion] = location.of_minion(grains.get(location.GRAIN) or {}, grains)
            except Exception as exc:  # pylint: disable=broad-except
                log.info("murder: no place for %s in the minion data cache: %s", minion, exc)
                found[minion] = None
        return found

    return places


def start(**engine_config):
    """Run the engine until the master stops; Salt calls this in the engine's process."""
    opts = __opts__  # noqa: F821 pylint: disable=undefined-variable
    found = settings(opts, engine_config)
    address = found["seeder_address"] or distribution.default_address(opts.get("interface"))
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True) as bus:
        engine = engine_core.Engine(
            settings=found, store=found["store_dir"], address=address,
            fire=lambda tag, data: bus.fire_event(data, tag),
            expected_minions=_expected_minions(opts), activate=_activate(opts), places=_places(opts),
        )
        try:
            engine.start()
        except InvalidInput as exc:
            # Salt restarts a failed engine every few seconds; say once, plainly, what to fix.
            log.critical("the murder engine cannot start: %s; fix `murder:` in the master config and "
                         "restart salt-master", exc)
            raise
        # Salt ends an engine on SIGTERM with os._exit, which skips the ``finally`` below: the seeders
        # would not say "stopped" to an external tracker and the pid file would outlive the engine.
        signal.signal(signal.SIGTERM, _exit)
        exporter = metrics.serve(engine, address, int(found["metrics_port"])) if found["metrics_port"] else None
        pid_file = os.path.join(engine.store.root, store_mod.ENGINE_PID)
        # Written whole and renamed into place: salt-run never reads a half-written pid.
        with open(f"{pid_file}.{os.getpid()}", "w", encoding="ascii") as handle:
            handle.write(str(os.getpid()))
        os.replace(f"{pid_file}.{os.getpid()}", pid_file)
        stopped = False
        try:
            while _running():
                event = bus.get_event(wait=0.2, full=True)
                if event:
                    engine.handle(event.get("tag", ""), event.get("data"))
                engine.tick()
        except _Stopped:
            stopped = True
        finally:
            if exporter is not None:
                exporter.shutdown()
            engine.stop()
            _forget_pid(pid_file)
    if stopped:
        # As Salt's own handler ends: a deploy's thread still running must not hold the exit up.
        os._exit(0)


class _Stopped(BaseException):
    """SIGTERM from Salt's process manager: the master is stopping."""


def _exit(signum, frame):
    raise _Stopped()


def _forget_pid(pid_file):
    """Remove the pid file if it is still this process's: a stale one could name a process that reused the pid."""
    try:
        with open(pid_file, encoding="ascii") as handle:
            if handle.read().strip() == str(os.getpid()):
                os.unlink(pid_file)
    except OSError:
        pass
