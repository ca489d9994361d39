"""A deploy request: the one description of what ``murder.deploy`` accepts.

The runner (``salt-run murder.deploy``), the ``murder/deploy/request``
reaction (which hands over every key of the event) and the README's table
take their list of arguments from :data:`DEPLOY_ARGUMENTS`, the fields of
:class:`DeployRequest`. A name outside the list is refused before anything is
packed or sent, with the closest accepted name suggested: a misspelled
``relase=`` must fail a CI job, not deploy under a default.
"""
import dataclasses
import difflib
import re

from murder_core import config, policy, rack_split
from murder_core.errors import InvalidInput

ON_FAILURE = ("rollback", "stop")

_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_names(function, given, accepted):
    """Raise InvalidInput naming every key of ``given`` that ``function`` does not accept.

    Keys starting with ``__`` are Salt's own (``__pub_jid``, ``__user__``, …)
    and keys starting with ``_`` are an event's (``_stamp``); both pass.
    """
    unknown = sorted(str(key) for key in given if not str(key).startswith("_") and key not in accepted)
    if not unknown:
        return
    named = []
    for key in unknown:
        close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
        named.append(f"{key} (did you mean {close[0]}?)" if close else key)
    raise InvalidInput(
        f"{function} does not take {', '.join(named)}: nothing was done. "
        f"It takes: {', '.join(accepted)}"
    )


def check_request_id(request_id):
    """Return ``request_id`` if it is a plain name (as a release name is), else raise InvalidInput."""
    request_id = config.release_name(request_id)
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise InvalidInput(f"invalid request_id {request_id!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
    return request_id


def _whole(name, value, least):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidInput(f"{name} must be a whole number >= {least}, got {value!r}")
    return value


def _seconds(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidInput(f"{name} must be a number of seconds > 0, got {value!r}")
    return value


def _text(name, value, required=False):
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{name} must be a non-empty string, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class DeployRequest:
    """One deploy, as asked for on the CLI or in a ``murder/deploy/request`` event.

    ``base_dir`` stays None unless given: each minion then uses its own
    ``murder: base_dir`` setting (then the default), never the master's.
    """

    source: str
    app: str
    tgt: str
    tgt_type: str = "glob"
    release: str = None
    base_dir: str = None
    activate: bool = True
    keep: int = None
    timeout: float = None
    min_success: int = None
    shared: list = None
    check_cmd: str = None
    check_timeout: float = None
    # Activation in waves: hosts per wave (n or "n%"), the first wave's size, seconds between waves.
    batch: object = None
    canary: object = None
    batch_wait: float = 0
    # Hosts that may fail their health check (or not answer) before no further wave starts;
    # then "rollback" puts every host this deploy switched back on its previous release, "stop" leaves them.
    max_failures: int = 0
    on_failure: str = "rollback"
    # A CI job's name for its request: ``salt-run murder.wait request_id=<id>`` finds the deploy by it.
    request_id: str = None

    @classmethod
    def from_arguments(cls, arguments, settings, new_release_id):
        """Check ``arguments`` (a call's keywords or an event's data) and resolve their defaults.

        ``settings`` are the master's ``murder`` settings; ``new_release_id``
        makes the release id when none is given. Raises InvalidInput.
        """
        check_names("murder.deploy", arguments, DEPLOY_ARGUMENTS)
        given = {key: value for key, value in arguments.items() if key in DEPLOY_ARGUMENTS and value is not None}
        missing = [name for name in ("source", "app", "tgt") if not given.get(name)]
        if missing:
            raise InvalidInput(f"murder.deploy needs {', '.join(missing)} (it takes source, app and tgt at least)")
        given["release"] = config.release_name(given.get("release")) or new_release_id()
        given.setdefault("keep", settings["keep"])
        given.setdefault("timeout", settings["timeout"])
        request = cls(**given)
        request.check(settings)
        return request

    def check(self, settings):
        """Raise InvalidInput for the first unacceptable field; nothing has been written yet."""
        _text("source", self.source, required=True)
        config.check_app_name(self.app)
        _text("tgt", self.tgt if isinstance(self.tgt, str) else ",".join(map(str, self.tgt or ())), required=True)
        _text("tgt_type", self.tgt_type, required=True)
        config.check_release_name(self.release)
        if self.base_dir is not None:
            config.expand_base_dir(self.base_dir, self.app, "minion-id")
        if not isinstance(self.activate, bool):
            raise InvalidInput(f"activate must be true or false, got {self.activate!r}")
        _whole("keep", self.keep, 1)
        _seconds("timeout", self.timeout)
        _whole("min_success", self.min_success, 1)
        if self.shared is not None and (isinstance(self.shared, str) or not isinstance(self.shared, (list, tuple))):
            raise InvalidInput(f"shared must be a list of paths relative to shared/, got {self.shared!r}")
        config.check_command(self.check_cmd)
        if self.request_id is not None:
            check_request_id(self.request_id)
        for name in ("batch", "canary"):
            try:
                policy.wave_size(getattr(self, name), 100, name)
            except ValueError as exc:
                raise InvalidInput(str(exc)) from exc
        if isinstance(self.batch_wait, bool) or not isinstance(self.batch_wait, (int, float)) or self.batch_wait < 0:
            raise InvalidInput(f"batch_wait must be a number of seconds >= 0, got {self.batch_wait!r}")
        _whole("max_failures", self.max_failures, 0)
        if self.on_failure not in ON_FAILURE:
            raise InvalidInput(f"on_failure must be one of {', '.join(ON_FAILURE)}, got {self.on_failure!r}")
        if self.check_timeout is not None:
            _seconds("check_timeout", self.check_timeout)
        _seconds("silence_timeout", settings["silence_timeout"])

    def activation(self):
        """The keywords of ``murder.activate`` on each minion (its own base_dir unless one was given)."""
        found = {"app": self.app, "release": self.release, "keep": self.keep, "base_dir": self.base_dir,
                 "shared": self.shared, "check_cmd": self.check_cmd, "check_timeout": self.check_timeout}
        return {key: value for key, value in found.items() if value is not None}

    def as_dict(self):
        return dataclasses.asdict(self)


DEPLOY_ARGUMENTS = tuple(field.name for field in dataclasses.fields(DeployRequest))


@dataclasses.dataclass(frozen=True)
class PeerRequest:
    """What a minion needs to fetch one published release through the swarm.

    The deploy's start event carries it to ``murder.peer`` (with
    ``deploy_id``, ``timeout`` and ``progress_interval``); ``murder.fetch`` and
    the ``murder.release`` state read it from the master's file server. Both
    reach the minion only through Salt's authenticated, encrypted channel,
    which is why the torrent and ``sha256`` in it can be trusted; a peer or
    the tracker never supplies either.
    """

    app: str
    release: str
    torrent: str  # the .torrent, base64
    sha256: str  # of the whole artifact, checked before unpacking
    size: int
    info_hash: str
    seeders: tuple = ()  # "host:port" of the master's seeders, connected to at once
    location_key: str = None  # what the peer signs its place with (murder_core.location); None: not asked
    # {place: [minion, ...]}: the deploy's racks, from which each peer finds its stripes (murder_core.rack_split).
    racks: dict = None
    deploy_id: str = None
    base_dir: str = None  # None: the minion's own murder: base_dir
    timeout: float = None
    progress_interval: float = None

    @classmethod
    def from_dict(cls, data, function="murder.peer"):
        """Check an event's or a file's data (unknown keys refused) and return the request."""
        check_names(function, data, PEER_ARGUMENTS)
        given = {key: value for key, value in data.items() if key in PEER_ARGUMENTS and value is not None}
        missing = [name for name in ("app", "release", "torrent", "sha256") if not given.get(name)]
        if missing:
            raise InvalidInput(f"{function} needs {', '.join(missing)} (the data of a published release)")
        given["release"] = config.release_name(given["release"])
        given["seeders"] = tuple(str(item) for item in given.get("seeders") or ())
        request = cls(**given)
        config.check_app_name(request.app)
        config.check_release_name(request.release)
        if not isinstance(request.sha256, str) or len(request.sha256) != 64:
            raise InvalidInput(f"sha256 must be 64 hex digits, got {request.sha256!r}")
        if request.location_key is not None and not _is_hex(request.location_key, 64):
            raise InvalidInput(f"location_key must be 64 hex digits, got {request.location_key!r}")
        if request.base_dir is not None:
            config.expand_base_dir(request.base_dir, request.app, "minion-id")
        if request.racks is not None:
            rack_split.check_plan(request.racks)
        return request

    def as_dict(self):
        found = dataclasses.asdict(self)
        found["seeders"] = list(self.seeders)
        return {key: value for key, value in found.items() if value is not None}

    def for_deploy(self, **fields):
        """The same release, as one deploy hands it to ``murder.peer``."""
        return dataclasses.replace(self, **fields)


def _is_hex(value, length):
    return isinstance(value, str) and len(value) == length and all(c in "0123456789abcdef" for c in value)


PEER_ARGUMENTS = tuple(field.name for field in dataclasses.fields(PeerRequest))
