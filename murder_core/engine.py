"""The long-lived side of murder on the master: the tracker, the seeders, the deploys.

``_engines/murder.py`` runs an :class:`Engine` in the process Salt starts
(and restarts) for the ``murder`` engine. It hands the engine every event of
the master's bus (:meth:`Engine.handle`) and calls :meth:`Engine.tick`
between them. The engine:

* serves every published release (``store.Store``): one seeder each, its
  info-hashes on the tracker, and the ``PeerRequest`` a minion fetches it with
  on the master's file server, so a highstate or a late joiner can fetch it
  at any time;
* answers ``murder/engine/request`` (``publish`` and ``deploy``, from the
  runner) on ``murder/engine/reply/<request_id>``, and takes a
  ``murder/deploy/request`` from a CI job as a deploy;
* runs each deploy (``lifecycle.Deploy``): publish, fire
  ``murder/deploy/<deploy_id>/start``, follow the peers' events, activate,
  record (``deploys/<deploy_id>.json``) and fire ``…/complete``; its console
  lines go out as ``…/progress`` for ``salt-run`` to print.

Blocking work (packing, the activation job) runs on a small thread pool;
the loop itself only dispatches. A deploy that was running when the engine
stopped is recorded as failed when it starts again.
"""
import collections
import concurrent.futures
import logging
import os
import re
import time

from murder_core import config, distribution, lifecycle, location, rack_split, swarm, torrent as torrent_mod, whitelist
from murder_core.errors import InvalidInput, MurderError
from murder_core import request
from murder_core.request import DeployRequest, check_names
from murder_core.store import Store
from murder_core.tracker import check_peer_choice

log = logging.getLogger(__name__)

ACTIONS = ("publish", "deploy")
PUBLISH_ARGUMENTS = ("source", "app", "release")
WORKERS = 4
_PEER_TAG = re.compile(r"^murder/peer/([^/]+)/[^/]+/(progress|done|failed)$")


def check_settings(settings):
    """Raise InvalidInput for a master setting the engine cannot start with, naming the key."""
    torrent_mod.check_format(settings.get("torrent_format", config.DEFAULTS["torrent_format"]))
    torrent_mod.check_piece_size(config.setting(settings, "piece_size"))
    rate = settings.get("max_announce_rate", config.DEFAULTS["max_announce_rate"])
    if not isinstance(rate, int) or isinstance(rate, bool) or rate < 1:
        raise InvalidInput(f"max_announce_rate must be a whole number of announces a second >= 1, got {rate!r}")
    check_peer_choice(config.setting(settings, "peer_choice"), config.setting(settings, "peers_outside_rack"),
                      config.setting(settings, "peers_outside_datacenter"))
    if not isinstance(config.setting(settings, "rack_split"), bool):
        raise InvalidInput(f"rack_split must be true or false, got {settings['rack_split']!r}")


class Engine:
    """Tracker, seeders and deploys of one master.

    ``fire(tag, data)`` sends an event on the master's bus;
    ``expected_minions(tgt, tgt_type)`` resolves a target (a sorted list,
    raising InvalidInput when it matches nothing); ``activate(minions,
    kwargs, timeout)`` runs ``murder.activate`` on them and returns
    ``{minion: {"ret": …, "retcode": …}}``.
    """

    def __init__(self, *, settings, store, address, fire, expected_minions, activate, places=None,
                 clock=time.monotonic):
        self.settings = settings
        self.store = store if isinstance(store, Store) else Store(store)
        self.address = address
        self._fire = fire
        self._expected_minions = expected_minions
        self._activate = activate
        # places(minions) -> {minion: place or None}, what the master knows of where they are (rack_split).
        self._places = places
        self.clock = clock
        self.tracker = None
        # Each swarm's location key derives from it (location.swarm_key): a new one at each start.
        self._location_secret = location.new_secret()
        self.seeders = {}  # (app, release) -> swarm.Seeder
        self.deploys = {}  # deploy_id -> _Running
        self._publishing = {}  # request_id -> the future of its publish
        self.outcomes = collections.Counter()  # deploys ended, by state (metrics)
        self._pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="murder-engine")

    # Life.

    def start(self):
        check_settings(self.settings)
        os.makedirs(self.store.root, exist_ok=True)
        self.store.clean_work()
        self._recover()
        if not self.settings.get("tracker_url"):
            self.tracker = distribution.start_tracker(self.address, self.settings)
        for record in reversed(self.store.published()):
            try:
                self._serve(record)
            except MurderError as exc:
                log.error("cannot seed published release %s %s: %s", record.app, record.release, exc)
        self._sync_whitelist()
        log.info("murder engine started: tracker %s, %d published releases seeded",
                 self.trackers[0], len(self.seeders))
        return self

    def stop(self):
        self._pool.shutdown(wait=False, cancel_futures=True)
        for seeder in self.seeders.values():
            seeder.close(announce_stop=self.tracker is None)
        self.seeders = {}
        if self.tracker is not None:
            self.tracker.stop()
            self.tracker = None

    def _recover(self):
        """Deploys recorded as running belong to an engine that stopped: they failed."""
        for record in self.store.deploys():
            if record.get("state") not in lifecycle.FINAL:
                why = ("the murder engine stopped during this deploy (Salt restarts it); "
                       "no host was activated by it after that")
                done = lifecycle.interrupted(record, why)
                self.store.save_deploy(done)
                self._fire(config.TAG_DEPLOY_COMPLETE.format(deploy_id=done["deploy_id"]), done)
                log.warning("deploy %s was interrupted: recorded as failed", done["deploy_id"])

    @property
    def trackers(self):
        return [self.settings["tracker_url"]] if self.settings.get("tracker_url") else [self.tracker.url]

    # Serving published releases.

    def _serve(self, record):
        key = (record.app, record.release)
        if key in self.seeders:
            return
        made = torrent_mod.with_trackers(torrent_mod.decode(record.torrent), self.trackers)
        first, last = int(self.settings["peer_port_first"]), int(self.settings["peer_port_last"])
        seeder = swarm.Seeder(
            made, self.store.artifact_path(record), listen=f"{self.address}:{first}",
            port_retries=max(last - first, 0), upload_rate_limit=int(self.settings["upload_rate_limit"]),
            super_seeding=bool(self.settings["super_seeding"]), libtorrent=self.settings["libtorrent"],
        )
        if self.tracker is not None:
            self.tracker.serve(*torrent_mod.describe(made).tracker_keys, location_key=self.location_key(record),
                               seeders=[(self.address, seeder.listen_port)])
        self.seeders[key] = seeder
        self.store.offer(record, [self.seeder_endpoint(seeder)], self.trackers, self.location_key(record))

    def location_key(self, record):
        """The key ``record``'s peers sign their place with; None where no place is believed.

        Only our own tracker, choosing by rack, reads places: an external
        tracker never sees the key.
        """
        if self.tracker is None or self.tracker.peer_choice != "rack":
            return None
        return location.swarm_key(self._location_secret, record.info_hash)

    def _racks(self, record, minions):
        """The deploy's racks for a split (``rack_split.plan``), or None: no place, one rack, or not wanted."""
        if self._places is None or self.location_key(record) is None or not config.setting(self.settings, "rack_split"):
            return None
        try:
            racks = rack_split.plan(self._places(minions))
        except Exception:  # the cache failing must not fail the deploy: it goes on with one session a peer
            log.warning("could not read where the minions are: no rack split", exc_info=True)
            return None
        if racks:
            log.info("rack split: %d minions in %d racks", sum(len(m) for m in racks.values()), len(racks))
        return racks

    def seeder_endpoint(self, seeder):
        return f"{self.address}:{seeder.listen_port}"

    def _unserve(self, app, release):
        seeder = self.seeders.pop((app, release), None)
        if seeder is None:
            return
        if self.tracker is not None:
            self.tracker.forget(*seeder.info.tracker_keys)
        seeder.close(announce_stop=self.tracker is None)

    def _publish(self, source, app, release):
        """Pack and record (on a worker thread); the loop serves the result."""
        return self.store.publish(
            source, app, release, trackers=self.trackers, keep=int(self.settings["keep_published"]),
            excludes=self.settings["excludes"], piece_size=self.settings["piece_size"],
            torrent_format=self.settings["torrent_format"],
        )

    def _published(self, record, removed):
        """Back on the loop: seed a fresh release, stop seeding the ones pruned."""
        for release in removed:
            self._unserve(record.app, release)
        self._serve(record)
        self._sync_whitelist()

    def _sync_whitelist(self):
        """Keep an external tracker's whitelist listing exactly the releases seeded here."""
        path = self.settings.get("tracker_whitelist")
        if not path:
            return
        keys = sorted({key.hex() for seeder in self.seeders.values() for key in seeder.info.tracker_keys})
        try:
            changed = whitelist.write(path, keys)
        except OSError as exc:
            log.error("cannot write the tracker whitelist %s: %s", path, exc)
            return
        if changed:
            whitelist.reload(self.settings.get("tracker_whitelist_reload"))

    # Events.

    def handle(self, tag, data):
        """One event of the master's bus."""
        data = data if isinstance(data, dict) else {}
        # Requests fired by a minion arrive with its "id": only the master may publish or deploy.
        if tag == config.TAG_ENGINE_REQUEST and "id" not in data:
            self._request(data)
        elif tag == config.TAG_DEPLOY_REQUEST and "id" not in data:
            self._accept_deploy(data, request_id=None)
        elif tag.startswith("murder/peer/"):
            self._peer_event(tag, data)
        elif tag.startswith("salt/job/") and "/ret/" in tag:
            self._job_return(data)

    def _reply(self, request_id, data):
        if request_id:
            self._fire(config.TAG_ENGINE_REPLY.format(request_id=request_id), data)

    def _request(self, data):
        request_id = data.get("request_id")
        action, arguments = data.get("action"), data.get("arguments") or {}
        if not isinstance(request_id, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", request_id):
            log.warning("murder engine ignored a request without a usable request_id: %r", request_id)
            return
        if action not in ACTIONS or not isinstance(arguments, dict):
            self._reply(request_id, {"result": False, "error": f"unknown engine action {action!r}"})
        elif action == "publish":
            self._accept_publish(request_id, arguments)
        else:
            self._accept_deploy(arguments, request_id=request_id)

    def _accept_publish(self, request_id, arguments):
        try:
            check_names("murder.publish", arguments, PUBLISH_ARGUMENTS)
            source, app = arguments.get("source"), arguments.get("app")
            release = config.release_name(arguments.get("release")) or distribution.new_release_id()
            if not source or not app:
                raise InvalidInput("murder.publish needs source and app")
            config.check_app_name(app)
            config.check_release_name(release)
            if not os.path.exists(str(source)):
                raise InvalidInput(f"release source {source} does not exist on the master")
        except InvalidInput as exc:
            self._reply(request_id, {"result": False, "error": str(exc)})
            return
        self._publishing[request_id] = self._pool.submit(self._publish, source, app, release)

    def _peer_event(self, tag, data):
        match = _PEER_TAG.match(tag)
        running = self.deploys.get(match.group(1)) if match else None
        if running is None:
            return
        # Minion events carry the sender's authenticated id; the tag is only a hint.
        payload = data.get("data") if isinstance(data.get("data"), dict) else data
        running.deploy.record(data.get("id"), match.group(2), payload)

    def _job_return(self, ret):
        """A failed ``murder.peer`` job counts as a failed peer: it may never have sent an event."""
        if ret.get("fun") != "murder.peer" or (ret.get("success") and not ret.get("retcode")):
            return
        for arg in ret.get("fun_args") or []:
            running = self.deploys.get(arg.get("deploy_id")) if isinstance(arg, dict) else None
            if running is not None:
                # An exception on the minion comes back as its traceback: its last line says why.
                lines = [line for line in str(ret.get("return")).splitlines() if line.strip()]
                why = (lines[-1] if lines else "no return")[:500]
                running.deploy.record(ret.get("id"), "failed", {"error": f"murder.peer failed: {why}"})

    # Deploys.

    def _accept_deploy(self, arguments, request_id):
        """Check a deploy request and start it, or record it as refused; answer ``request_id``."""
        try:
            asked = DeployRequest.from_arguments(arguments, self.settings, distribution.new_release_id)
            if not os.path.exists(asked.source):
                raise InvalidInput(f"release source {asked.source} does not exist on the master")
            busy = [r.deploy.deploy_id for r in self.deploys.values() if r.deploy.request.app == asked.app]
            if busy:
                raise InvalidInput(f"a deploy of app {asked.app!r} is already running ({busy[0]}); "
                                   "try again when it ends")
            expected = self._expected_minions(asked.tgt, asked.tgt_type)
        except InvalidInput as exc:
            self._refuse(arguments, exc, request_id)
            return
        deploy = lifecycle.Deploy(
            distribution.new_deploy_id(asked.app, asked.release), asked, expected,
            silence_timeout=float(self.settings["silence_timeout"]),
            progress_interval=float(self.settings["progress_interval"]), clock=self.clock,
        )
        running = _Running(deploy, request_id, self._pool.submit(self._publish, asked.source, asked.app, asked.release))
        self.deploys[deploy.deploy_id] = running
        self.store.save_deploy(deploy.summary())
        self._reply(request_id, {"result": True, "deploy_id": deploy.deploy_id})
        log.info("deploy %s: %s %s to %d minions", deploy.deploy_id, asked.app, asked.release, len(expected))

    def _refuse(self, arguments, exc, request_id):
        app, release = arguments.get("app"), config.release_name(arguments.get("release"))
        try:
            config.check_app_name(app)
        except InvalidInput:
            app = "unknown"
        try:
            config.check_release_name(release)
        except InvalidInput:
            release = None  # none was given (or none that is a name): a default name would be one nobody asked for
        try:
            asked_id = request.check_request_id(arguments.get("request_id"))
        except InvalidInput:
            asked_id = None  # a request_id that is not a plain name cannot be waited for
        record = lifecycle.refused(distribution.new_deploy_id(app, release or "refused"), app, release, exc,
                                   request_id=asked_id)
        self.store.save_deploy(record)
        self.outcomes[record["state"]] += 1
        self._fire(config.TAG_DEPLOY_COMPLETE.format(deploy_id=record["deploy_id"]), record)
        self._reply(request_id, dict(record, retcode=1))
        log.info("deploy refused: %s", exc)

    def tick(self):
        """Move every deploy and publish on; call often (the loop does, between events)."""
        for request_id, future in list(self._publishing.items()):
            if future.done():
                del self._publishing[request_id]
                self._reply(request_id, self._publish_outcome(future))
        for running in list(self.deploys.values()):
            try:
                self._advance(running)
            except Exception as exc:  # one broken deploy must not stop the engine
                log.exception("deploy %s failed in the engine", running.deploy.deploy_id)
                running.deploy.fail(exc)
                self._finish(running)
            self._speak(running.deploy)

    def _publish_outcome(self, future):
        try:
            record, changed, removed = future.result()
            self._published(record, removed)
        except (MurderError, OSError) as exc:
            return {"result": False, "error": str(exc), "retcode": 1}
        return dict(record.summary(), result=True, changed=changed, removed=removed, retcode=0)

    def _advance(self, running):
        deploy = running.deploy
        if deploy.state == lifecycle.PUBLISHING and running.work.done():
            try:
                record, _, removed = running.work.result()
                self._published(record, removed)
            except (MurderError, OSError) as exc:
                deploy.fail(exc)
                self._finish(running)
                return
            self._start(deploy, record)
        elif deploy.state == lifecycle.DISTRIBUTING and deploy.tick():
            minions = deploy.to_activate()
            if minions is None:
                self._finish(running)
                return
            self.store.save_deploy(deploy.summary())
            running.work = self._pool.submit(self._activate, minions, deploy.request.activation(),
                                             float(deploy.request.timeout))
        elif deploy.state == lifecycle.ACTIVATING:
            self._next_wave(running)

    def _next_wave(self, running):
        """Activation in waves: record a finished wave, then start the next, wait, roll back or finish."""
        deploy = running.deploy
        if running.work is not None:
            if not running.work.done():
                return
            if running.rollback is not None:
                deploy.rolled_back(running.work.result(), running.rollback)
                self._finish(running)
                return
            deploy.activated(running.work.result())
            running.work = None
            self.store.save_deploy(deploy.summary())
        step = deploy.next_step()
        if step is None:
            self._finish(running)
        elif step[0] == "wave":
            running.work = self._pool.submit(self._activate, step[1], deploy.request.activation(),
                                             float(deploy.request.timeout))
        elif step[0] == "rollback":
            running.rollback = step[1]
            running.work = self._pool.submit(self._roll_back, step[1], deploy.request)

    def _roll_back(self, targets, asked):
        """Put each switched host back on its previous release (one activation per release); their answers."""
        returns = {}
        by_release = {}
        for minion, previous in targets.items():
            if previous is not None:
                by_release.setdefault(previous, []).append(minion)
        for previous, minions in sorted(by_release.items()):
            kwargs = {"app": asked.app, "release": previous}
            if asked.base_dir is not None:
                kwargs["base_dir"] = asked.base_dir
            returns.update(self._activate(sorted(minions), kwargs, float(asked.timeout)))
        return returns

    def _start(self, deploy, record):
        seeder = self.seeders[(record.app, record.release)]
        # None once the seeder is gone (its release unpublished meanwhile): the deploy then reports no figure.
        deploy.distributing(record, seeder_sent=lambda: None if seeder.closed else seeder.uploaded())
        peer = self.store.offer(record, [self.seeder_endpoint(seeder)], self.trackers,
                                self.location_key(record)).for_deploy(
            deploy_id=deploy.deploy_id, timeout=deploy.request.timeout, base_dir=deploy.request.base_dir,
            progress_interval=deploy.peer_progress_interval(), racks=self._racks(record, deploy.expected),
        )
        self.store.save_deploy(deploy.summary())
        deploy.say(f"deploy {deploy.deploy_id}: {record.app} {record.release} ({record.size} bytes) to "
                    f"{len(deploy.expected)} minions, seeder {self.seeder_endpoint(seeder)}")
        self._fire(config.TAG_DEPLOY_START.format(deploy_id=deploy.deploy_id),
                   {"deploy_id": deploy.deploy_id, "app": record.app, "release": record.release,
                    "tgt": deploy.request.tgt, "tgt_type": deploy.request.tgt_type, "minions": deploy.expected,
                    "peer": peer.as_dict()})

    def _finish(self, running):
        deploy = running.deploy
        summary = deploy.finish()
        self.store.save_deploy(summary)
        self.outcomes[summary["state"]] += 1
        self.deploys.pop(deploy.deploy_id, None)
        self._speak(deploy)
        self._fire(config.TAG_DEPLOY_COMPLETE.format(deploy_id=deploy.deploy_id), summary)
        log.info("deploy %s %s", deploy.deploy_id, summary["state"])
        packing = self._publishing or any(r.deploy.state == lifecycle.PUBLISHING for r in self.deploys.values())
        if not packing:  # whatever a crashed or interrupted pack left behind
            self.store.clean_work()

    def _speak(self, deploy):
        for line in deploy.said():
            log.info("deploy %s: %s", deploy.deploy_id, line)
            self._fire(config.TAG_DEPLOY_PROGRESS.format(deploy_id=deploy.deploy_id), {"message": line})


class _Running:
    """A deploy in the engine and the blocking work it waits for (packing, then the activation)."""

    def __init__(self, deploy, request_id, work):
        self.deploy = deploy
        self.request_id = request_id
        self.work = work
        self.rollback = None  # minion -> release, once the fleet is being rolled back
