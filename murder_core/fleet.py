"""The master's view of one deploy's minions, built from their events.

Pure bookkeeping: the runner feeds it ``progress``, ``done`` and ``failed``
events and asks who is finished, who is late, and for the summary.

The engine asks after every event whether the deploy is over and who fell
silent, so both answers cost the same at 10 hosts as at 10,000: the
unfinished minions are kept apart, in the order they were last heard from
(``bench/engine_events.py``: scanning every minion on each event made
30,000 events of 10,000 hosts quadratic, 1.5-2 ms an event, and the bus
dropped the engine).
"""
from dataclasses import dataclass

PENDING, DOWNLOADING, DONE, FAILED, TIMED_OUT = "pending", "downloading", "done", "failed", "timed out"
# The deploy failed on the master before it asked any host for anything (a name published with other content).
NOT_STARTED = "not started"


@dataclass
class MinionState:
    state: str = PENDING
    bytes_done: int = 0
    size: int = 0
    rate: float = 0.0  # bytes/s, as its last progress event said
    seconds: float = 0.0
    bytes_from_peers: int = 0
    bytes_from_seeder: int = 0
    hash_failures: int = 0
    changed: bool = False
    comment: str = ""
    activated: bool = False
    rolled_back: bool = False  # switched by this deploy, then put back on its previous release
    previous: str = None  # what was current before this deploy switched it
    stripe: list = None  # [index, count] of the pieces this peer fetched first
    steps: dict = None  # seconds of each step of its deploy (job_start, then its peer's own: download, ...)
    heard: float = None  # clock reading of its last event (or of the deploy's start event)
    done_at: float = None  # clock reading of its done event
    place: str = None  # where its peer told the tracker it is (murder_core.location), None: by address
    left_seeder: bool = False  # its peer left the seeder once its stripe was in (policy.SeederLeave)
    back_to_seeder: bool = False  # and went back to it, as nothing else came
    split: bool = False  # its peer ran two sessions, outward and inward (murder_core.rack_split)
    rescued: bool = False  # ... and its rack gave it nothing for a while: it fetched the rest from outside
    bytes_from_outside: int = None  # a split peer: what its outward session took (crossed its rack's uplink)

    @property
    def finished(self):
        return self.state in (DONE, FAILED, TIMED_OUT, NOT_STARTED)


class Fleet:
    """Expected minions and what each has reported."""

    def __init__(self, expected):
        self.minions = {minion: MinionState() for minion in sorted(expected)}
        # The unfinished minions, sorted by name; and those of them heard from, least recently first.
        self._waiting = dict.fromkeys(self.minions)
        self._heard = {}
        self._start_event_at = None  # clock reading of the start event

    def _finished(self, minion):
        self._waiting.pop(minion, None)
        self._heard.pop(minion, None)

    def _heard_from(self, minion, now):
        """``now`` is a reading of the clock every call passes; it never goes back."""
        self.minions[minion].heard = now
        self._heard.pop(minion, None)
        self._heard[minion] = None

    def expect_word(self, now, size=0):
        """Start the silence clock of every minion: the deploy's start event went out at ``now``.

        ``size`` is the release's: the byte total of the progress line is all
        hosts' from the first line on, not only of those that reported.
        """
        for state in self.minions.values():
            state.heard = now
            state.size = state.size or int(size)
        self._heard = dict.fromkeys(self._waiting)
        self._start_event_at = now

    def record(self, minion, kind, data, now=None):
        """Apply one peer event (``kind`` is progress, done or failed); unknown minions are ignored."""
        state = self.minions.get(minion)
        if state is None or state.finished:
            return False
        if now is not None:
            self._heard_from(minion, now)
        for key in ("bytes_done", "size", "bytes_from_peers", "bytes_from_seeder", "hash_failures"):
            if isinstance(data.get(key), int):
                setattr(state, key, data[key])
        if kind == "progress":
            state.state = DOWNLOADING
            state.rate = float(data.get("rate") or 0.0)
        elif kind == "done":
            state.state, state.rate, state.done_at = DONE, 0.0, now
            state.seconds = float(data.get("seconds", 0.0))
            state.changed = bool(data.get("changed", True))
            state.bytes_done = state.size = int(data.get("size", state.size))
            state.comment = data.get("comment") or "release unpacked"
            stripe = data.get("stripe")
            state.stripe = list(stripe) if isinstance(stripe, (list, tuple)) else None
            state.place = data.get("place") if isinstance(data.get("place"), str) else None
            state.left_seeder, state.back_to_seeder = data.get("left_seeder") is True, data.get("back_to_seeder") is True
            state.split, state.rescued = data.get("split") is True, data.get("rescued") is True
            outside = data.get("bytes_from_outside")
            state.bytes_from_outside = outside if isinstance(outside, int) and not isinstance(outside, bool) else None
            state.steps = self._steps(state.seconds, data.get("steps"), now)
        elif kind == "failed":
            state.state = FAILED
            state.seconds = float(data.get("seconds", 0.0))
            state.comment = data.get("error") or "failed without a reason"
        else:
            return False
        if state.finished:
            self._finished(minion)
        return True

    def _steps(self, seconds, reported, now):
        """A done minion's steps: ``job_start`` reckoned here, then the ones its peer timed itself.

        ``job_start`` runs from the start event until its ``murder.peer`` job
        began: Salt's reactor publishing the job and the minion starting it.
        It is when its ``done`` arrived, less the peer's own ``seconds``, so
        it holds the ``done`` event's way to the master too, and needs no
        clock shared with the minion.
        """
        steps = {}
        if now is not None and self._start_event_at is not None:
            steps["job_start"] = round(max(now - self._start_event_at - seconds, 0.0), 3)
        if isinstance(reported, dict):
            steps.update((name, value) for name, value in reported.items()
                         if isinstance(name, str) and isinstance(value, (int, float)) and not isinstance(value, bool))
        return steps or None

    def time_out(self, reason):
        """Mark every unfinished minion as timed out; return their names."""
        return self.fail_unfinished(reason, TIMED_OUT)

    def fail_unfinished(self, reason, state=FAILED):
        """Mark every unfinished minion as ``state`` (failed) for ``reason``; return their names."""
        late = self.unfinished()
        for minion in late:
            self.minions[minion].state = state
            self.minions[minion].comment = reason
            self._finished(minion)
        return late

    def fail_silent(self, now, limit):
        """Fail every unfinished minion not heard from for ``limit`` seconds; return their names.

        A live peer reports at least every ``progress_interval`` seconds, also
        while it verifies and unpacks, so a long silence means the minion is
        down or its job died, and waiting for the deadline would only delay
        the verdict.
        """
        silent = []
        for minion in self._heard:  # least recently heard first: stop at the first one not silent
            if now - self.minions[minion].heard < limit:
                break
            silent.append(minion)
        for minion in silent:
            state = self.minions[minion]
            state.state = FAILED
            state.comment = (f"no word from the minion for {limit:g} s: it is down, "
                             "or its murder.peer job did not start or died")
            self._finished(minion)
        return sorted(silent)

    def unfinished(self):
        return list(self._waiting)

    def succeeded(self):
        return [m for m, s in self.minions.items() if s.state == DONE]

    def failed(self):
        return [m for m, s in self.minions.items() if s.state in (FAILED, TIMED_OUT)]

    def all_finished(self):
        return not self._waiting

    def progress_line(self, limit=5):
        """One line for the operator's console: hosts done, bytes, stragglers."""
        total = len(self.minions)
        done = len(self.succeeded())
        failed = len(self.failed())
        moved = sum(s.bytes_done for s in self.minions.values())
        size = sum(s.size for s in self.minions.values())
        line = f"{done}/{total} hosts done"
        if failed:
            line += f", {failed} failed"
        if size:
            unit, scale = _unit(size)
            line += f", {_amount(moved, scale)} of {_amount(size, scale)} {unit}"
        rate = sum(s.rate for s in self.minions.values() if not s.finished)
        if rate:
            unit, scale = _unit(rate)
            line += f" at {_amount(rate, scale)} {unit}/s"
        waiting = self.unfinished()
        if waiting:
            line += f"; waiting for {names(waiting, limit)}"
        return line

    def report(self, activate, since=None):
        """Per-minion results for the deploy's return; with ``activate`` a host succeeds only once activated.

        ``done_seconds`` is from ``since`` (the deploy's start, a clock
        reading) to the minion's done event: the deploy's
        ``distribution_seconds`` is the largest.
        """
        return {
            minion: {
                "done_seconds": (round(state.done_at - since, 3)
                                 if since is not None and state.done_at is not None else None),
                "result": state.state == DONE and (state.activated or not activate) and not state.rolled_back,
                "state": state.state,
                "seconds": round(state.seconds, 3),
                "bytes_from_peers": state.bytes_from_peers,
                "bytes_from_seeder": state.bytes_from_seeder,
                "hash_failures": state.hash_failures,
                "stripe": state.stripe,
                "left_seeder": state.left_seeder,
                "back_to_seeder": state.back_to_seeder,
                "place": state.place,
                "split": state.split,
                "rescued": state.rescued,
                "bytes_from_outside": state.bytes_from_outside,
                "steps": state.steps,
                "changed": state.changed,
                "activated": state.activated,
                "rolled_back": state.rolled_back,
                "comment": state.comment,
            }
            for minion, state in self.minions.items()
        }


def rollback_outcome(app, minions, named=None):
    """The return of a fleet rollback, from each minion's answer (``result``, ``old``, ``new``).

    Without a ``named`` release every host goes back to the release current
    there before; if those differ (a host that joined later, a release
    rolled back on some hosts only) the fleet now runs several releases,
    which the operator must hear: the rollback fails, naming them, and says
    how to put every host on one.
    """
    result = all(answer["result"] for answer in minions.values())
    found = {"app": app, "result": result, "minions": minions}
    if named is None:
        landed = {}
        for minion, answer in sorted(minions.items()):
            if answer["result"]:
                landed.setdefault(answer.get("new"), []).append(minion)
        if len(landed) > 1:
            found["result"] = False
            found["comment"] = ("the hosts went back to different releases: "
                                + "; ".join(f"{release} on {names(hosts)}" for release, hosts in
                                            sorted(landed.items(), key=lambda item: str(item[0])))
                                + "; put them on one with release=<id>")
    found["retcode"] = 0 if found["result"] else 1
    return found


def names(minions, limit=5):
    """``m1, m2, m3 and 9997 more``: a line for the console, short whatever the fleet's size."""
    return ", ".join(minions[:limit]) + (f" and {len(minions) - limit} more" if len(minions) > limit else "")


def _amount(value, scale):
    """``value`` in units of ``scale``: whole bytes, tenths of the larger units."""
    return f"{value / scale:.1f}" if scale > 1 else f"{int(value)}"


def _unit(amount):
    """The binary unit a byte count reads best in: a tiny release is not "0.0 of 0.0 MiB"."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if amount >= scale:
            return unit, scale
    return "bytes", 1
