"""Names, event tags and defaults: the one place they are defined.

Every key here can be set in the master or minion config under ``murder:``
(for example ``murder: {tracker_port: 8998}``) and most can be given to the
call itself; the call wins over the config, the config over these defaults.
The README's configuration table is this table.
"""
import os
import re

from murder_core.errors import InvalidInput

# Prefix of a directory being written beside its final place (a release being
# unpacked into releases/): ".staging-<name>-<random>". Never a finished release.
STAGING_PREFIX = ".staging-"

# A minion's own records beside an app's releases: <base_dir>/.murder/<release>/ holds the
# artifact a release came from, <base_dir>/.murder/activated the releases once current.
STATE_DIR = ".murder"

# The directory under the engine's store fileserver/ that the master's file server
# serves: salt://murder-published/<app>/<release>.json is what a minion fetches with.
FILESERVER_PREFIX = "murder-published"

# Event tags. ``{deploy_id}`` and ``{minion}`` are filled in by the sender.
TAG_DEPLOY_REQUEST = "murder/deploy/request"
TAG_DEPLOY_START = "murder/deploy/{deploy_id}/start"
TAG_DEPLOY_PROGRESS = "murder/deploy/{deploy_id}/progress"
TAG_DEPLOY_COMPLETE = "murder/deploy/{deploy_id}/complete"
# The runner asks the engine (publish, deploy) and the engine answers under the request's id.
TAG_ENGINE_REQUEST = "murder/engine/request"
TAG_ENGINE_REPLY = "murder/engine/reply/{request_id}"
TAG_PEER_PROGRESS = "murder/peer/{deploy_id}/{minion}/progress"
TAG_PEER_DONE = "murder/peer/{deploy_id}/{minion}/done"
TAG_PEER_FAILED = "murder/peer/{deploy_id}/{minion}/failed"

DEFAULTS = {
    # Where releases live on a minion; {app} and {minion} are expanded there.
    "base_dir": "/srv/{app}",
    # How many finished releases to keep on each minion (current included).
    "keep": 5,
    # Address the master's tracker and seeder bind to and announce; "" means
    # the address of the master's interface that the minions reach.
    "seeder_address": "",
    # Murder's historical tracker port.
    "tracker_port": 8998,
    # An external tracker's announce URL (opentracker, ...); "" runs our own.
    "tracker_url": "",
    # (master) A file the engine keeps listing the info-hashes of the published
    # releases, one per line (an external tracker's whitelist); "" for none.
    "tracker_whitelist": "",
    # (master) A shell command run after the whitelist changed (opentracker
    # re-reads its whitelist on SIGHUP); "" for none.
    "tracker_whitelist_reload": "",
    # Address the minions' peers listen on ("0.0.0.0": every interface).
    "peer_address": "0.0.0.0",
    # Port range the master's seeder and the minions' peers listen on.
    "peer_port_first": 6881,
    "peer_port_last": 6999,
    # Seconds a tracker tells peers to wait between announces (datacenter: short).
    "announce_interval": 5,
    # Most peers the tracker returns per announce.
    "max_peers_per_announce": 200,
    # (master) Announces a second our tracker asks for at most: past
    # announce_interval * this many peers, the interval it hands out grows
    # (half of what it sustained in `make bench-tracker`, README).
    "max_announce_rate": 1000,
    # (master) Which peers our tracker hands a peer: "rack" (its rack first,
    # always some from outside and the seeder) or "random" (uniform over the
    # swarm). An external tracker (tracker_url) chooses for itself.
    "peer_choice": "rack",
    # (master) With peer_choice rack: how many peers of other racks of the
    # same datacenter, and of another datacenter, each answer holds (README,
    # "Racks and datacenters", for the measurement).
    "peers_outside_rack": 1,
    "peers_outside_datacenter": 1,
    # (master) With peer_choice rack: when the master's minion data cache
    # knows where a deploy's minions are (their murder_location, rack or
    # datacenter grains), each peer runs two sessions, one fetching its
    # rack's share from outside and one trading with its rack only, so that
    # a release crosses each rack's uplink about once (murder_core.rack_split,
    # docs/topology.md).
    "rack_split": True,
    # (minion) Where this minion is; "" means its grain of the same name, and
    # without a rack the tracker places it by address (its /24 is its rack).
    "rack": "",
    "datacenter": "",
    # (master) Torrent piece size in bytes, a power of two of at least 16 KiB; 0 chooses it from
    # the release's size: at least 256 pieces, from 64 KiB to 1 MiB (torrent.auto_piece_size;
    # docs/datacenter.md for the measurement).
    "piece_size": 0,
    # (master) v2, hybrid or v1: which BitTorrent clients can join a swarm, and
    # what a host's CPU pays per GiB (README "Which BitTorrent clients can join").
    "torrent_format": "v2",
    # A peer fails when no byte arrives for this many seconds.
    "stall_timeout": 30,
    # A finished peer keeps seeding until the swarm is complete, at most this long.
    "linger": 60,
    # Overall deadline of a deploy, seconds.
    "timeout": 600,
    # Least seconds between two progress events from one peer.
    "progress_interval": 2.0,
    # The runner fails a minion it has not heard from for this long (its peer
    # reports every progress_interval, also while verifying and unpacking).
    "silence_timeout": 60,
    # The seeder hands each peer pieces no other peer has yet (BitTorrent
    # super-seeding), so its link carries each piece about once.
    "super_seeding": False,
    # Each peer of a deploy fetches its own share of the pieces first, so
    # fewer pieces leave the seeder twice (docs/datacenter.md).
    "piece_stripes": True,
    # (minion) A peer with a stripe leaves the master's seeder once its stripe is in, and goes back
    # to it after seeder_fallback seconds without data (policy.SeederLeave): the seeder sends about
    # one copy of a release instead of up to 1.5. Only in deploys of 4 hosts or more
    # (policy.LEAVE_MIN_STRIPES). On since session 14: with the automatic piece size it cost 4-16
    # hosts no time (in 1 MiB pieces it slowed 2-8 hosts; docs/datacenter.md).
    "leave_seeder": True,
    "seeder_fallback": 10,
    # Per-host transfer caps in bytes/s; 0 means no cap.
    "upload_rate_limit": 0,
    "download_rate_limit": 0,
    # libtorrent settings applied over the datacenter profile (murder_core/profile.py),
    # e.g. {piece_extent_affinity: true}; for tuning, with care.
    "libtorrent": {},
    # (master) Where the engine keeps published releases and deploy records;
    # "" means <cachedir>/murder. Its fileserver/ is in the snippet's file_roots.
    "store_dir": "",
    # (master) Published releases kept (and seeded) per app; older ones are removed.
    "keep_published": 3,
    # (master) Port of the engine's Prometheus metrics on seeder_address; 0: off.
    "metrics_port": 0,
    # Archive members left out of a packed directory.
    "excludes": [".git"],
}

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _check_plain(kind, name):
    if not isinstance(name, str) or not _PLAIN_NAME.match(name) or ".." in name:
        raise InvalidInput(
            f"invalid {kind} name {name!r}: use 1 to 128 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_release_name(name):
    """Return ``name`` if it is a plain release name, else raise InvalidInput."""
    return _check_plain("release", name)


def release_name(value):
    """A release id as given: ``20261126101500`` unquoted in YAML or on the CLI arrives as a number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def check_command(check_cmd):
    """Return ``check_cmd`` (None, or a shell command as a string), else raise InvalidInput.

    ``check_cmd: true`` in YAML, or ``check_cmd=true`` on the CLI, arrives as a
    boolean; run, it would be the command ``True`` (exit 127) and roll back.
    """
    if check_cmd is None or (isinstance(check_cmd, str) and check_cmd.strip()):
        return check_cmd
    raise InvalidInput(
        f"check_cmd must be a shell command as a string, got {check_cmd!r} "
        f"({type(check_cmd).__name__}): quote the command (check_cmd: 'true' in YAML, "
        "check_cmd='\"true\"' on the CLI)"
    )


def check_app_name(name):
    """Return ``name`` if it is a plain app name, else raise InvalidInput."""
    return _check_plain("app", name)


def option(key, call_value=None, opts=None):
    """Resolve one setting: the call's value, else ``opts['murder'][key]``, else the default."""
    if call_value is not None:
        return call_value
    section = (opts or {}).get("murder") or {}
    if key in section:
        return section[key]
    return DEFAULTS[key]


def setting(settings, key):
    """``settings[key]`` (a ``murder:`` section merged or not), else the default."""
    return settings.get(key, DEFAULTS[key])


def expand_base_dir(template, app, minion):
    """Expand ``{app}`` and ``{minion}`` in a base_dir and check that it is usable."""
    if not isinstance(template, str) or not template:
        raise InvalidInput("base_dir must be an absolute path")
    try:
        base_dir = template.format(app=app, minion=minion)
    except (KeyError, IndexError, ValueError) as exc:
        raise InvalidInput(f"base_dir {template!r} may only use the placeholders {{app}} and {{minion}}") from exc
    if not os.path.isabs(base_dir):
        raise InvalidInput(f"base_dir {base_dir!r} must be an absolute path")
    normal = os.path.normpath(base_dir)
    if not normal.strip("/") or ".." in base_dir.split("/"):
        raise InvalidInput(f"base_dir {base_dir!r} must be a directory below / without '..'")
    return normal
