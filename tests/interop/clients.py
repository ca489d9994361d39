"""The BitTorrent clients Debian ships, driven from their command lines.

Each client knows how to download a torrent into a directory and how to
seed a torrent whose file is already in a directory, with everything that
could reach beyond the test's own link turned off (DHT, local peer
discovery, peer exchange, port mapping); the namespace it runs in
(``netns.ClientNamespace``) stops the rest. ``formats`` are the torrent
formats the client can read, as measured by these tests.
"""
import json
import os
import shutil
from dataclasses import dataclass

# Where the client listens inside its namespace: the namespace is new, so the port is free.
CLIENT_PORT = 51413


@dataclass(frozen=True)
class Client:
    name: str
    binary: str
    package: str
    formats: tuple
    why: str  # which formats, and why

    def missing(self):
        """Why this client cannot run here, or ''."""
        if shutil.which(self.binary) is None:
            return f"{self.binary} is not installed (apt-get install {self.package})"
        return ""

    def download(self, torrent, directory, work):
        raise NotImplementedError

    def seed(self, torrent, directory, work):
        raise NotImplementedError


class Aria2(Client):
    def _argv(self, torrent, directory, *extra):
        return [self.binary, f"--dir={directory}", "--enable-dht=false", "--enable-dht6=false",
                "--bt-enable-lpd=false", "--enable-peer-exchange=false", f"--listen-port={CLIENT_PORT}",
                "--summary-interval=0", "--console-log-level=notice", "--file-allocation=none", *extra, torrent]

    def download(self, torrent, directory, work):
        return self._argv(torrent, directory, "--seed-time=0")

    def seed(self, torrent, directory, work):
        # Verify what is there, then seed whatever the share ratio.
        return self._argv(torrent, directory, "--check-integrity=true", "--seed-ratio=0.0")


class Transmission(Client):
    def _argv(self, torrent, directory, work):
        config = os.path.join(work, "transmission")
        os.makedirs(config, exist_ok=True)
        with open(os.path.join(config, "settings.json"), "w") as handle:
            json.dump({"dht-enabled": False, "lpd-enabled": False, "pex-enabled": False,
                       "port-forwarding-enabled": False, "utp-enabled": False, "blocklist-enabled": False,
                       "rpc-enabled": False, "encryption": 0, "message-level": 2}, handle)
        # transmission-cli seeds once it has the whole file, whether it downloaded it or found it.
        return [self.binary, "-w", directory, "-g", config, "-p", str(CLIENT_PORT), "-M", "-et", torrent]

    download = seed = _argv


class QBittorrent(Client):
    def _argv(self, torrent, directory, work):
        profile = os.path.join(work, "qbittorrent")
        config = os.path.join(profile, "qBittorrent", "config")
        os.makedirs(config, exist_ok=True)
        with open(os.path.join(config, "qBittorrent.conf"), "w") as handle:
            handle.write(
                "[LegalNotice]\nAccepted=true\n\n"
                "[BitTorrent]\n"
                "Session\\DHTEnabled=false\nSession\\LSDEnabled=false\nSession\\PeXEnabled=false\n"
                f"Session\\Port={CLIENT_PORT}\nSession\\QueueingSystemEnabled=false\n"
                f"Session\\DefaultSavePath={directory}\n\n"
                "[Network]\nPortForwardingEnabled=false\n\n"
                "[Preferences]\nConnection\\UPnP=false\nWebUI\\Address=127.0.0.1\nWebUI\\Port=18080\n"
            )
        # A torrent added whose file is already complete is checked, then seeded.
        return [self.binary, f"--profile={profile}", f"--save-path={directory}", torrent]

    download = seed = _argv


CLIENTS = {
    client.name: client
    for client in (
        Aria2("aria2", "aria2c", "aria2", ("v1",),
              "v1 only: it drops the empty key of a hybrid's or v2's file tree and computes another info-hash"),
        Transmission("transmission", "transmission-cli", "transmission-cli", ("v1",),
                     "v1 only: Transmission 3 cannot parse a v2 file tree ('Failed opening torrent file')"),
        QBittorrent("qbittorrent", "qbittorrent-nox", "qbittorrent-nox", ("hybrid", "v2", "v1"),
                    "every format: it runs on libtorrent 2"),
    )
}
