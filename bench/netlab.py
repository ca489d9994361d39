"""A datacenter on one machine: network namespaces on a bridge, links shaped with tc.

One namespace per host, each with an ``eth0`` on a shared bridge (which
lives in a namespace of its own), every link shaped to ``rate_mbit`` in both
directions with a token bucket (``tbf``): on the host's side it caps what
the host sends, on the bridge's side what it receives. If the kernel has
``netem``, each direction also gets ``delay_ms`` of latency; where it does
not (as on the machine the figures in the README come from) the links have
the rate cap only, and the lab says so.

Everything is created under a prefix unique to this process and removed on
exit, also after an error or Ctrl-C. Needs root.
"""
import ipaddress
import json
import logging
import os
import subprocess
import sys
import threading
import time

import report

log = logging.getLogger(__name__)


def _run(*argv, check=True):
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed: {result.stderr.strip()}")
    return result


def _queue_drops(netns, device):
    """Packets every queue (qdisc) of ``device`` dropped so far."""
    shown = json.loads(_run("ip", "netns", "exec", netns, "tc", "-s", "-j", "qdisc", "show", "dev", device).stdout)
    return sum(qdisc.get("drops", 0) for qdisc in shown)


class Network:
    """Hosts on one shaped, bridged network; a context manager that always cleans up.

    With ``racks`` (host -> rack name) the hosts of a rack sit on a bridge of
    their own and in a /24 of their own, the rack joined to the core bridge
    by one uplink shaped to ``uplink_mbit`` in each direction; hosts in no
    rack sit on the core.
    :meth:`uplink_bytes` counts what crossed a rack's uplink.
    """

    def __init__(self, hosts, rate_mbit, delay_ms=0.2, subnet="10.77.0.0/24", racks=None, uplink_mbit=None,
                 mtu=1500):
        if os.geteuid() != 0:
            raise PermissionError("the simulated datacenter needs root (network namespaces and tc)")
        self.hosts = list(hosts)
        self.racks = dict(racks or {})
        self.rack_names = sorted(set(self.racks.values()))
        if self.racks and not uplink_mbit:
            raise ValueError("racks need an uplink rate")
        self.uplink_mbit = uplink_mbit
        self.rate_mbit = rate_mbit
        self.mtu = int(mtu)
        self.delay_ms = delay_ms
        self.prefix = f"mb{os.getpid() % 100000}"
        network = ipaddress.ip_network(subnet)
        self.prefixlen = network.prefixlen
        self._addresses = {host: str(network.network_address + 1 + index) for index, host in enumerate(self.hosts)}
        if self.racks:
            # Each rack a /24 of its own, as racks behind their own switch usually are; one /16 on the
            # wire, so that the bridges carry it all without a router. Hosts in no rack: the first /24.
            network = ipaddress.ip_network(subnet).supernet(new_prefix=16)
            self.prefixlen = 16
            numbers = {}
            for host in self.hosts:
                rack = self.rack_names.index(self.racks[host]) + 1 if host in self.racks else 0
                numbers[rack] = numbers.get(rack, 0) + 1
                self._addresses[host] = str(network.network_address + 256 * rack + numbers[rack])
        self._namespaces = []
        self.latency = False

    def netns(self, host):
        return f"{self.prefix}-{host}"

    def address(self, host):
        return self._addresses[host]

    def pids(self, host):
        """Every process running in the host's namespace (``ip netns pids``)."""
        return [int(pid) for pid in _run("ip", "netns", "pids", self.netns(host)).stdout.split()]

    @property
    def switch(self):
        return f"{self.prefix}-switch"

    def rack_switch(self, rack):
        return f"{self.prefix}-rack{self.rack_names.index(rack)}"

    def host_device(self, host):
        """``(namespace, device)``: the switch's end of ``host``'s link; it sends what the host receives."""
        index = self.hosts.index(host)
        switch = self.rack_switch(self.racks[host]) if host in self.racks else self.switch
        return switch, f"{self.prefix}s{index}"

    def tcp_counters(self, host):
        """``{"segments_out", "retransmitted", "timeouts"}`` of the host's namespace so far: TCP segments sent, sent
        again, and retransmission timeouts (a flow that waited for its timer)."""
        read = _run("ip", "netns", "exec", self.netns(host), "cat", "/proc/net/snmp", "/proc/net/netstat")
        counters = {}
        for prefix in ("Tcp:", "TcpExt:"):
            names, values = [line.split()[1:] for line in read.stdout.splitlines() if line.startswith(prefix)][:2]
            counters.update(zip(names, map(int, values)))
        return {"segments_out": counters["OutSegs"], "retransmitted": counters["RetransSegs"],
                "timeouts": counters["TCPTimeouts"]}

    def queue_drops(self, host):
        """``{"dropped_up", "dropped_down"}``: packets the full queue of ``host``'s link dropped so far, on their way
        out of the host and on their way in (at the switch's end)."""
        ns, device = self.host_device(host)
        return {"dropped_up": _queue_drops(self.netns(host), "eth0"), "dropped_down": _queue_drops(ns, device)}

    def uplink_bytes(self, rack):
        """``{"in": …, "out": …}``: bytes that entered and left ``rack`` through its uplink so far."""
        ns, device = self.rack_switch(rack), "uplink"
        read = {}
        for key, counter in (("in", "rx_bytes"), ("out", "tx_bytes")):
            read[key] = int(_run("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{device}/statistics/{counter}")
                            .stdout)
        return read

    def __enter__(self):
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _add_namespace(self, name):
        _run("ip", "netns", "add", name)
        self._namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def _shape(self, netns, device, rate_mbit=None):
        rate_mbit = rate_mbit or self.rate_mbit
        burst = max(64 * 1024, rate_mbit * 1_000_000 // 8 // 100)
        if self.latency:
            _run("ip", "netns", "exec", netns, "tc", "qdisc", "add", "dev", device, "root", "handle", "1:",
                 "netem", "delay", f"{self.delay_ms}ms")
            parent = ["parent", "1:1", "handle", "10:"]
        else:
            parent = ["root"]
        _run("ip", "netns", "exec", netns, "tc", "qdisc", "add", "dev", device, *parent, "tbf",
             "rate", f"{rate_mbit}mbit", "burst", str(burst), "latency", "100ms")

    def _has_netem(self):
        probe = self.netns(self.hosts[0])
        answer = _run("ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                      "delay", "0.1ms", check=False)
        if answer.returncode == 0:
            _run("ip", "netns", "exec", probe, "tc", "qdisc", "del", "dev", "lo", "root", check=False)
            return True
        return False

    def _add_bridge(self, netns):
        self._add_namespace(netns)
        _run("ip", "-n", netns, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", netns, "link", "set", "br0", "up")

    def _build_racks(self):
        for index, rack in enumerate(self.rack_names):
            ns = self.rack_switch(rack)
            self._add_bridge(ns)
            inside, outside = f"{self.prefix}u{index}", f"{self.prefix}c{index}"
            _run("ip", "link", "add", inside, "mtu", str(self.mtu), "type", "veth", "peer", "name", outside,
                 "mtu", str(self.mtu))
            _run("ip", "link", "set", inside, "netns", ns)
            _run("ip", "link", "set", outside, "netns", self.switch)
            _run("ip", "-n", ns, "link", "set", inside, "name", "uplink")
            for netns, device in ((ns, "uplink"), (self.switch, outside)):
                _run("ip", "-n", netns, "link", "set", device, "master", "br0")
                _run("ip", "-n", netns, "link", "set", device, "up")
                self._shape(netns, device, self.uplink_mbit)

    def _build(self):
        self._add_bridge(self.switch)
        for index, host in enumerate(self.hosts):
            self._add_namespace(self.netns(host))
        self.latency = self._has_netem()
        if not self.latency:
            log.warning("this kernel has no netem: links get the %s Mbit/s cap but no added latency", self.rate_mbit)
        self._build_racks()
        for index, host in enumerate(self.hosts):
            ns = self.netns(host)
            switch = self.rack_switch(self.racks[host]) if host in self.racks else self.switch
            inside, outside = f"{self.prefix}h{index}", f"{self.prefix}s{index}"
            _run("ip", "link", "add", inside, "mtu", str(self.mtu), "type", "veth", "peer", "name", outside,
                 "mtu", str(self.mtu))
            _run("ip", "link", "set", inside, "netns", ns)
            _run("ip", "link", "set", outside, "netns", switch)
            _run("ip", "-n", ns, "link", "set", inside, "name", "eth0")
            _run("ip", "-n", ns, "addr", "add", f"{self.address(host)}/{self.prefixlen}", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", switch, "link", "set", outside, "master", "br0")
            _run("ip", "-n", switch, "link", "set", outside, "up")
            self._shape(ns, "eth0")
            self._shape(switch, outside)
        log.info("network: %d hosts on %s, %s Mbit/s links%s", len(self.hosts), self.switch, self.rate_mbit,
                 f", {len(self.rack_names)} racks behind {self.uplink_mbit} Mbit/s uplinks" if self.racks else "")

    def close(self):
        # Deleting a namespace removes its end of every veth pair, and so the pair.
        for name in reversed(self._namespaces):
            _run("ip", "netns", "del", name, check=False)
        self._namespaces = []


# Reads the namespace's interface counters every interval (the %s) and prints a line "<time>
# <device>=<rx_bytes>,<tx_bytes> ...", until its standard input closes (the bench ended, or died).
_SAMPLER = """
import select, sys, time
while not select.select([sys.stdin], [], [], %s)[0]:
    counters = []
    for line in open("/proc/net/dev").read().splitlines()[2:]:
        device, fields = line.split(":", 1)
        fields = fields.split()
        counters.append("%%s=%%s,%%s" %% (device.strip(), fields[0], fields[8]))
    print(time.time(), " ".join(counters), flush=True)
"""


class LinkTimeline:
    """Bytes every host received and sent over its link, sampled through a run.

    One small process in each switch namespace reads ``/proc/net/dev`` every ``interval`` seconds (a read of
    the kernel's counters, no fork per sample); :meth:`busy` turns a host's bytes over a window into the share
    of its link's rate they used, which shows whether a slow download waited on its link or on its peers.
    """

    def __init__(self, network, interval=0.25):
        self.network = network
        self.interval = interval
        self._samples = {}  # namespace -> [(wall time, {device: (rx_bytes, tx_bytes)})]
        self._processes, self._threads = [], []

    def start(self):
        namespaces = sorted({self.network.host_device(host)[0] for host in self.network.hosts})
        for ns in namespaces:
            process = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c",
                                        _SAMPLER % self.interval],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self._samples[ns] = []
            thread = threading.Thread(target=self._read, args=(ns, process), daemon=True)
            thread.start()
            self._processes.append(process)
            self._threads.append(thread)
        return self

    def _read(self, ns, process):
        for line in process.stdout:
            when, *fields = line.split()
            counters = {}
            for field in fields:
                device, _, values = field.partition("=")
                received, sent = values.split(",")
                counters[device] = (int(received), int(sent))
            self._samples[ns].append((float(when), counters))

    def stop(self):
        for process in self._processes:
            process.stdin.close()
        deadline = time.monotonic() + 5
        for process in self._processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for thread in self._threads:
            thread.join(timeout=5)

    def _bytes_at(self, host, when, direction):
        ns, device = self.network.host_device(host)
        samples = self._samples.get(ns) or []
        if not samples:
            return None
        # The switch's end sends what the host receives, and receives what the host sends.
        column = 1 if direction == "down" else 0
        return report.interpolate([t for t, _ in samples], [c[device][column] for _, c in samples], when)

    def busy(self, host, since, until, direction="down"):
        """Share of ``host``'s link rate used ``down`` (what it received) or ``up`` from wall time ``since`` to
        ``until``, counted on the wire (frames' headers included); None when it was not sampled."""
        first, last = self._bytes_at(host, since, direction), self._bytes_at(host, until, direction)
        if first is None or until <= since:
            return None
        return (last - first) * 8 / (self.network.rate_mbit * 1e6 * (until - since))
