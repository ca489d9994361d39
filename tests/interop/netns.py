"""A network namespace for a third-party client, joined to this one by a veth pair and nothing else.

The client runs inside (``ip netns exec``) and reaches the murder tracker,
seeder and peer that listen on the pair's own address here. It has no
default route, so whatever else it tries (DHT bootstrap nodes, NAT-PMP or
UPnP to a gateway, a DNS lookup) cannot leave the machine. Needs root; the
namespace and the pair are removed on exit, also after a failure.
"""
import os
import subprocess

# A private /30 of its own, unlikely to collide with the benchmark's 10.77.0.0/24.
SUBNET = "10.201.{index}.{host}"


def _ip(*argv, check=True):
    done = subprocess.run(["ip", *argv], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)} failed: {done.stderr.strip()}")
    return done


class ClientNamespace:
    def __init__(self, index=0):
        tag = f"{os.getpid() % 100000}{index}"
        self.name = f"murder-io-{tag}"
        self._outer = f"mio{tag}h"
        self._inner = f"mio{tag}c"
        self.here = SUBNET.format(index=index % 250, host=1)  # our side: tracker, seeder, peer
        self.there = SUBNET.format(index=index % 250, host=2)  # the client's side

    def __enter__(self):
        try:
            _ip("netns", "add", self.name)
            _ip("link", "add", self._outer, "type", "veth", "peer", "name", self._inner)
            _ip("link", "set", self._inner, "netns", self.name)
            _ip("addr", "add", f"{self.here}/30", "dev", self._outer)
            _ip("link", "set", self._outer, "up")
            _ip("-n", self.name, "addr", "add", f"{self.there}/30", "dev", self._inner)
            _ip("-n", self.name, "link", "set", self._inner, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def command(self, *argv):
        """``argv`` run inside the namespace (``ip netns exec`` execs it: the PID is the client's)."""
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def close(self):
        _ip("link", "del", self._outer, check=False)
        _ip("netns", "del", self.name, check=False)

    def __exit__(self, *exc):
        self.close()
