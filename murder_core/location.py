"""Where a host is (its datacenter and rack), and how the tracker comes to trust it.

A minion's place comes from its ``murder:`` config (``rack``, ``datacenter``),
else from its grains of the same names. It travels with the peer's announce
to our tracker, signed with the swarm's location key: a key the engine makes
for each swarm and hands to minions inside the ``PeerRequest``, which
reaches them through Salt's authenticated, encrypted channel (so any
accepted minion can learn it, and nothing else can). A claim that
is missing, or that does not carry a valid signature, is not believed: the
tracker places that peer by its source address instead (the same /24, or
/64 for IPv6, is the same rack), which a client cannot choose.

The signature binds the place to the swarm, not to the host: a client that
saw a minion's announce on the wire could repeat its claim. What it would
gain is peers of that rack, which every minion of the deploy may fetch from
anyway; the bytes themselves are checked against the torrent's hashes.
"""
import functools
import hashlib
import hmac
import ipaddress
import re
import secrets
import urllib.parse

from murder_core.errors import InvalidInput

# Query parameters of the announce that carry a peer's place and its signature.
PARAM = "location"
PARAM_SIG = "location_sig"
# Settings naming a minion's place; the same names are looked up in its grains.
KEYS = ("datacenter", "rack")
# The grain (``_grains/murder.py``) holding the KEYS a minion's ``murder:`` config sets: what the
# master's minion data cache knows of them (``rack_split``'s plan).
GRAIN = "murder_location"
# A place is "<datacenter>/<rack>"; one placed by address has no datacenter and
# a rack "net:<network>", which no configured name can equal.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SEPARATOR = "/"


def new_secret():
    """The engine's secret, made at start: a swarm's key is derived from it (:func:`swarm_key`)."""
    return secrets.token_bytes(32)


def swarm_key(secret, info_hash):
    """The location key of one swarm (hex): what its minions sign their place with."""
    return hmac.new(secret, bytes.fromhex(info_hash), hashlib.sha256).hexdigest()


def check_name(kind, value):
    """Return ``value`` as a place name ("" for unset), else raise InvalidInput naming ``kind``."""
    if value is None or value == "":
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # rack: 12 in YAML
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidInput(
            f"murder {kind} {value!r} is not a valid name: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def of_minion(settings, grains):
    """A minion's place, ``"<datacenter>/<rack>"``, or None when neither its config nor its grains set a rack.

    Each of ``rack`` and ``datacenter`` comes from ``settings`` (the minion's
    ``murder:`` config) when set there, else from the grain of the same name.
    Without a rack the place is left to the tracker (by address).
    """
    found = {}
    for key in KEYS:
        value = settings.get(key) or (grains or {}).get(key)
        found[key] = check_name(key, value)
    if not found["rack"]:
        return None
    return f"{found['datacenter']}{SEPARATOR}{found['rack']}"


@functools.lru_cache(maxsize=65536)
def network(ip):
    """The /24 (IPv4) or /64 (IPv6) of an address, as text: what a rack is when nothing else says."""
    address = ipaddress.ip_address(ip)
    return str(ipaddress.ip_network(f"{address}/{24 if address.version == 4 else 64}", strict=False))


def by_address(ip):
    """The place of a peer that did not sign one: its /24 (IPv4) or /64 (IPv6) as its rack."""
    return f"{SEPARATOR}net:{network(ip)}"


def is_by_address(place):
    """Whether ``place`` is one :func:`by_address` made (no signature stands behind it)."""
    return place.startswith(f"{SEPARATOR}net:")


def datacenter(place):
    """The datacenter part of a place ("" when unknown)."""
    return place.partition(SEPARATOR)[0]


def sign(key, place):
    """The signature of ``place`` under a swarm's location key (both text)."""
    return hmac.new(bytes.fromhex(key), place.encode(), hashlib.sha256).hexdigest()


def verified(key, place, signature):
    """``place`` if ``signature`` is its signature under ``key`` (bytes, as the tracker parses them), else None."""
    if key is None or not place or not signature:
        return None
    try:
        text = place.decode("ascii")
        given = signature.decode("ascii")
    except UnicodeDecodeError:
        return None
    dc, sep, rack = text.partition(SEPARATOR)
    if not sep or not _NAME.match(rack) or (dc and not _NAME.match(dc)):
        return None
    return text if hmac.compare_digest(sign(key, text), given) else None


def announce_url(url, key, place):
    """``url`` with this peer's place and its signature added to the query."""
    query = urllib.parse.urlencode({PARAM: place, PARAM_SIG: sign(key, place)})
    return f"{url}{'&' if '?' in url else '?'}{query}"
