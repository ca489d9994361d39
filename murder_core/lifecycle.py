"""One deploy's life in the engine: publish, serve, follow, activate, record.

A :class:`Deploy` holds what the master knows about one deploy and makes
every decision (who failed, who is silent, when distribution is over,
whether to activate, the summary); the engine does the I/O it asks for.
It reads a clock it is given and never sleeps, so a test drives it with a
fake clock and fake events, without a master.
"""
import dataclasses
import logging
import time

from murder_core import fleet, policy

log = logging.getLogger(__name__)

PUBLISHING, DISTRIBUTING, ACTIVATING = "publishing", "distributing", "activating"
SUCCEEDED, FAILED, REFUSED = "succeeded", "failed", "refused"
FINAL = (SUCCEEDED, FAILED, REFUSED)
# Seconds between two progress lines of one deploy on the bus (and so on the salt-run console).
PROGRESS_SECONDS = 2.0
# Failed hosts said by name between two progress lines; the others of that while go in one line per
# reason with the next progress line (the summary names them all). Each line is an event the engine
# sends, taking it from the bus: 10,000 hosts falling silent at once were 10,000 lines and 16 s
# (bench/engine_events.py), in which the bus may drop an engine that is not reading.
FAILURES_NAMED = 5
REASONS_NAMED = 3


def _hosts(count):
    return f"{count} host" if count == 1 else f"{count} hosts"


@dataclasses.dataclass
class Deploy:
    """One deploy of ``request`` (a ``request.DeployRequest``) to ``expected`` minions."""

    deploy_id: str
    request: object
    expected: list
    silence_timeout: float
    progress_interval: float
    clock: object = time.monotonic
    wall: object = time.time

    def __post_init__(self):
        self.hosts = fleet.Fleet(self.expected)
        self.state = PUBLISHING
        self.started = self.clock()
        self.started_at = self.wall()
        self.deadline = self.started + float(self.request.timeout)
        self.published = None  # the store.Published record, once packed
        self.distribution_seconds = None
        # Payload the release's seeder sent while this deploy distributed, by the seeder's own count: the peers'
        # counts miss what was still on its way when one left the seeder.
        self.seeder_bytes_sent = None
        self._seeder_sent = None  # reads the seeder's counter (see distributing)
        self._seeder_sent_before = None
        self._distributing_since = None  # clock readings: the start event went out; every minion finished
        self._distributed_at = None
        self._activated_any = False  # an activation wave was started
        self._ended = None
        self.error = None
        self._last_line = None
        self._said = []
        self._failures_named = 0
        self._failures_unsaid = []

    # What the peers are told.

    @property
    def needed(self):
        return min(self.request.min_success or len(self.expected), len(self.expected))

    def peer_progress_interval(self):
        """The floor of every peer's progress interval for this fleet (``policy.fleet_progress_interval``)."""
        return policy.fleet_progress_interval(len(self.expected))

    def distributing(self, published, seeder_sent=None):
        """The release is packed and seeded; the start event is going out now.

        ``seeder_sent`` reads the payload bytes the release's seeder has sent
        so far; the summary's ``seeder_bytes_sent`` is what it sent from now
        until the distribution ends (or the deploy does).
        """
        if seeder_sent is not None:
            self._seeder_sent, self._seeder_sent_before = seeder_sent, self._read_seeder(seeder_sent)
        self.published = published
        self.state = DISTRIBUTING
        self._distributing_since = self.clock()
        self.hosts.expect_word(self._distributing_since, published.size if published is not None else 0)

    # Following.

    def record(self, minion, kind, payload):
        """Apply one peer event; a failure is said on the console."""
        if self.state != DISTRIBUTING:
            return
        if self.hosts.record(minion, kind, payload, now=self.clock()) and kind == "failed":
            self._say_failed([minion])

    def tick(self):
        """Advance the clock-driven verdicts; True once distribution is over (every minion finished)."""
        if self.state != DISTRIBUTING:
            return False
        now = self.clock()
        if now >= self.deadline:
            late = self.hosts.time_out("did not finish before the deploy's timeout (is the minion up?)")
            if late:
                self.say(f"timed out waiting for {', '.join(late)}")
        slowest = max(self.peer_progress_interval(), float(self.progress_interval))
        self._say_failed(self.hosts.fail_silent(now, policy.silence_limit(self.silence_timeout, slowest)))
        finished = self.hosts.all_finished()
        if finished or self._last_line is None or now - self._last_line >= PROGRESS_SECONDS:
            self._last_line = now
            self._say_unsaid_failures()
            self.say(self.hosts.progress_line())  # once at the end, not twice
        if finished:
            self._distributed_at = self.clock()
            self.distribution_seconds = round(self._distributed_at - self.started, 3)
            self._count_seeder()
        return finished

    def _read_seeder(self, read):
        try:
            return read()
        except Exception:  # a figure must never fail a deploy
            log.exception("deploy %s: could not read what the seeder sent", self.deploy_id)
            return None

    def _count_seeder(self):
        read, self._seeder_sent = self._seeder_sent, None  # the end of the distribution, or of the deploy: once
        if read is None or self._seeder_sent_before is None:
            return
        sent = self._read_seeder(read)
        # None: the seeder is gone. Less than before: libtorrent restarted its counter (a paused torrent).
        if sent is not None and sent >= self._seeder_sent_before:
            self.seeder_bytes_sent = sent - self._seeder_sent_before

    def _say_failed(self, minions):
        """Say each failed minion and why, the first ``FAILURES_NAMED`` of each while by name."""
        for minion in minions:
            if self._failures_named < FAILURES_NAMED:
                self._failures_named += 1
                self.say(f"{minion} failed: {self.hosts.minions[minion].comment}")
            else:
                self._failures_unsaid.append(minion)

    def _say_unsaid_failures(self):
        """With the progress line: the failures not said by name since the last one, a line per reason."""
        by_reason = {}
        for minion in self._failures_unsaid:
            by_reason.setdefault(self.hosts.minions[minion].comment, []).append(minion)
        reasons = sorted(by_reason.items(), key=lambda item: -len(item[1]))
        for reason, minions in reasons[:REASONS_NAMED]:
            self.say(f"{fleet.names(sorted(minions))} failed: {reason}")
        others = sum(len(minions) for _, minions in reasons[REASONS_NAMED:])
        if others:
            self.say(f"{others} more failed for {len(reasons) - REASONS_NAMED} other reasons (see the summary)")
        self._failures_unsaid, self._failures_named = [], 0

    def to_activate(self):
        """The first wave of minions to activate, or None (then every finished host is told why not)."""
        succeeded = self.hosts.succeeded()
        if not self.request.activate:
            return None
        if len(succeeded) >= self.needed:
            self.state = ACTIVATING
            self._activated_any = True
            self.waves = policy.waves(succeeded, self.request.batch, self.request.canary)
            self.wave_count, self.failures = len(self.waves), 0
            return self._next_wave()
        reason = (f"not activated: {len(succeeded)} of {len(self.expected)} minions have the release, "
                  f"{self.needed} needed")
        self.say(reason)
        for state in self.hosts.minions.values():
            if state.state == fleet.DONE:
                state.comment = reason
        return None

    def _next_wave(self):
        self.wave = self.waves.pop(0)
        number = self.wave_count - len(self.waves)
        canary = " (canary)" if self.request.canary and number == 1 else ""
        self.say(f"wave {number}/{self.wave_count}{canary}: activating {', '.join(self.wave)}")
        return self.wave

    def activated(self, returns):
        """Record the current wave's answers: ``{minion: {"ret": ..., "retcode": ...}}`` (missing: no answer)."""
        release = self.request.release
        failed = []
        for minion in self.wave:
            state = self.hosts.minions[minion]
            answer = returns.get(minion)
            if answer is None:
                state.comment = "did not answer the activation"
                failed.append(minion)
                continue
            ret = answer.get("ret")
            if answer.get("retcode", 0) == 0 and isinstance(ret, dict) and ret.get("result", True):
                state.activated = True
                state.previous = ret.get("old")
                state.changed = state.changed or ret.get("old") != ret.get("new")
                state.comment = ret.get("comment") or f"activated {release}"
            else:
                state.comment = f"activation failed: {ret.get('comment') if isinstance(ret, dict) else ret}"
                failed.append(minion)
        self.failures += len(failed)
        self._wave_ended = self.clock()
        number = self.wave_count - len(self.waves)
        for minion in failed:
            self.say(f"{minion}: {self.hosts.minions[minion].comment}")
        self.say(f"wave {number}/{self.wave_count} done: {len(self.wave) - len(failed)} activated, "
                 f"{len(failed)} failed")

    def next_step(self):
        """After a wave: ``("wave", minions)``, ``("wait", None)``, ``("rollback", {minion: release})`` or None (done)."""
        if self.failures > self.request.max_failures:
            stopped = (f"never switched: the deploy stopped after wave {self.wave_count - len(self.waves)} "
                       f"({_hosts(self.failures)} failed, max_failures {self.request.max_failures})")
            for wave in self.waves:
                for minion in wave:
                    self.hosts.minions[minion].comment = stopped
            self.waves = []
            if self.request.on_failure == "rollback":
                switched = {m: s.previous for m, s in self.hosts.minions.items() if s.activated}
                if switched:
                    self.say(f"rolling back {', '.join(sorted(switched))} ({self.failures} failed)")
                    return "rollback", switched
            return None
        if self.waves:
            if self.clock() < self._wave_ended + float(self.request.batch_wait):
                return "wait", None
            return "wave", self._next_wave()
        return None

    def rolled_back(self, returns, targets):
        """Record the fleet rollback's answers (``targets``: minion -> the release it went back to)."""
        why = f"{_hosts(self.failures)} failed, max_failures {self.request.max_failures}"
        for minion, previous in targets.items():
            state = self.hosts.minions[minion]
            answer = returns.get(minion) or {}
            if previous is None:
                state.comment = f"left on {self.request.release}: it had no release before this deploy ({why})"
            elif answer.get("retcode", 1) == 0:
                state.rolled_back, state.activated = True, False
                state.comment = f"rolled back to {previous}: {why}"
            else:
                state.comment = f"rolling back to {previous} failed: {answer.get('ret') or 'no answer'}"
            self.say(f"{minion}: {state.comment}")

    def fail(self, error):
        """The deploy failed on the master (packing, the seeder, the engine stopping)."""
        self.error = str(error)
        if self._distributing_since is None:  # no host was asked for anything: none failed
            self.hosts.fail_unfinished(f"not started: the deploy failed on the master first: {self.error}",
                                       fleet.NOT_STARTED)
        else:
            self.hosts.fail_unfinished(f"the deploy failed on the master: {self.error}")
        self.say(f"deploy {self.deploy_id} failed on the master: {self.error}")

    def finish(self):
        """The deploy is over: settle its state and return the summary."""
        self._ended = self.clock()
        self._count_seeder()  # a deploy that ended while distributing
        summary = self.summary(final=True)
        self.state = summary["state"]
        return summary

    # Reporting.

    def _steps(self):
        """Seconds the deploy spent in each state it reached: ``publishing``, ``distributing``, ``activating``.

        ``publishing`` ends with the start event; ``distributing`` when every
        minion finished (``distribution_seconds`` is the two together);
        ``activating``, once a wave started, from there to the end (to now
        while it lasts). The three add up to ``seconds``.
        """
        now = self._ended if self._ended is not None else self.clock()
        if self._distributing_since is None:
            return {PUBLISHING: round(now - self.started, 3)}
        until = self._distributed_at if self._distributed_at is not None else now
        steps = {PUBLISHING: round(self._distributing_since - self.started, 3),
                 DISTRIBUTING: round(until - self._distributing_since, 3)}
        if self._activated_any:
            steps[ACTIVATING] = round(now - until, 3)
        return steps

    def say(self, message):
        """Add a line for the operator's console."""
        self._said.append(message)

    def said(self):
        """The console lines said since the last call."""
        lines, self._said = self._said, []
        return lines

    def summary(self, final=False):
        """The deploy as recorded and returned; ``result`` and the final ``state`` once ``final``."""
        activate = self.request.activate
        minions = self.hosts.report(activate, since=self.started)
        found = {"deploy_id": self.deploy_id, "app": self.request.app, "release": self.request.release,
                 "tgt": self.request.tgt, "tgt_type": self.request.tgt_type, "started": self.started_at,
                 "state": self.state, "minions": minions,
                 "seconds": round((self._ended if self._ended is not None else self.clock()) - self.started, 3)}
        if self.request.request_id is not None:
            found["request_id"] = self.request.request_id
        if self.published is not None:
            found.update(info_hash=self.published.info_hash, size=self.published.size)
        if self.distribution_seconds is not None:
            found["distribution_seconds"] = self.distribution_seconds
        if self.seeder_bytes_sent is not None:
            found["seeder_bytes_sent"] = self.seeder_bytes_sent
        found["steps"] = self._steps()
        if self.error:
            found["error"] = self.error
        if not final:
            return found
        result = (not self.error and bool(minions) and all(m["result"] for m in minions.values()))
        found.update(result=result, changed=any(m["changed"] for m in minions.values()),
                     state=SUCCEEDED if result else FAILED)
        return found


def refused(deploy_id, app, release, error, request_id=None, wall=time.time):
    """The record of a deploy that could not start (``murder.wait`` finds it by ``request_id``)."""
    found = {"deploy_id": deploy_id, "app": app, "release": release, "state": REFUSED, "result": False,
             "changed": False, "started": wall(), "seconds": 0.0, "minions": {}, "error": str(error)}
    if request_id is not None:
        found["request_id"] = request_id
    return found


def interrupted(record, why):
    """A deploy record left unfinished by an engine that stopped: failed, with the reason."""
    record = dict(record)
    record["state"], record["result"], record["changed"] = FAILED, False, False
    record["error"] = why
    for minion in record.get("minions", {}).values():
        if minion.get("state") not in (fleet.FAILED, fleet.TIMED_OUT, fleet.NOT_STARTED):
            minion["result"] = False
            if not minion.get("activated"):
                minion["comment"] = why
    return record
