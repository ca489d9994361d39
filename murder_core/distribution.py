"""The master's names and addresses for a deploy: release and deploy ids, the seeder's address, the tracker.

The engine (``murder_core.engine``) owns the tracker and seeders for as
long as releases are published; this module only names things and starts
the tracker on the right port.
"""
import datetime
import logging
import secrets
import socket

from murder_core import config
from murder_core.errors import MurderError
from murder_core.tracker import Tracker

log = logging.getLogger(__name__)

# Ports tried above the configured tracker port when it is taken (another deploy).
TRACKER_PORT_RETRIES = 20


def new_release_id(now=None):
    """A sortable release id: the UTC time, e.g. ``20261126T101500Z``."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ")


def new_deploy_id(app, release):
    return f"{app}-{release}-{secrets.token_hex(3)}"


def default_address(interface):
    """The address minions reach the master's seeder on.

    The master's configured ``interface`` when it is a specific address,
    else the local address of the route to the outside (no packet is sent:
    a UDP socket only picks its source address), else loopback.
    """
    if interface and interface not in ("0.0.0.0", "::"):
        return interface
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing decision only, nothing is sent
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def start_tracker(address, settings):
    """Start our tracker on ``address`` at ``tracker_port``, or the next free port above it."""
    first = int(config.setting(settings, "tracker_port"))
    last_error = None
    for port in range(first, first + TRACKER_PORT_RETRIES + 1) if first else [0]:
        candidate = Tracker(
            host=address, port=port,
            interval=int(config.setting(settings, "announce_interval")),
            max_peers=int(config.setting(settings, "max_peers_per_announce")),
            max_announce_rate=int(config.setting(settings, "max_announce_rate")),
            peer_choice=config.setting(settings, "peer_choice"),
            outside_rack=config.setting(settings, "peers_outside_rack"),
            outside_datacenter=config.setting(settings, "peers_outside_datacenter"),
        )
        try:
            return candidate.start()
        except MurderError as exc:
            last_error = exc
    raise MurderError(f"no free tracker port from {first}: {last_error}")
