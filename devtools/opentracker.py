"""Debian's opentracker, started on loopback for the tests and ``make bench-tracker``."""
import os
import signal
import socket
import subprocess
import time


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OpenTracker:
    """opentracker on 127.0.0.1 with an (empty) whitelist file in ``directory``; ``start()`` waits until it listens.

    Debian runs opentracker as nobody, so ``directory`` must be readable by
    nobody for the whitelist to be read again on SIGHUP.
    """

    def __init__(self, directory, port=None):
        self.directory = directory
        self.whitelist = os.path.join(directory, "whitelist.txt")
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}/announce"
        self.process = None

    def start(self, whitelisted=(), wrap=()):
        """Start with ``whitelisted`` (hex info-hashes) in the whitelist; ``wrap`` prefixes the command (taskset)."""
        with open(self.whitelist, "w") as handle:
            handle.writelines(f"{key}\n" for key in whitelisted)
        os.chmod(self.whitelist, 0o644)
        config = os.path.join(self.directory, "opentracker.conf")
        with open(config, "w") as handle:
            handle.write(f"listen.tcp 127.0.0.1:{self.port}\nlisten.udp 127.0.0.1:{self.port}\n"
                         f"access.whitelist {self.whitelist}\n")
        self.log = open(os.path.join(self.directory, "opentracker.log"), "w")
        self.process = subprocess.Popen([*wrap, "opentracker", "-f", config], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"opentracker exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("opentracker did not listen within 10 s")

    def reload(self):
        self.process.send_signal(signal.SIGHUP)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()
