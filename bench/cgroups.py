"""CPU seconds per simulated host: one cgroup each, read before and after a run.

The hosts of ``make bench`` share this machine's cores, so the machine's own
busy figure cannot say which host did the work. Each host (the master and
every minion) gets a cgroup of its own; its daemons are moved in once they
run (every PID in the host's network namespace), and what they fork later
inherits it. A command run for a host (``salt-run`` in the master's
namespace) joins the cgroup before it execs (:meth:`HostCgroups.joiner`).

The hierarchy is the first cgroup2 mount in ``/proc/mounts`` (``cpu.stat``'s
``usage_usec`` is kept for every cgroup, with or without the cpu controller),
else a cgroup v1 ``cpuacct`` mount (``cpuacct.usage``, nanoseconds). Where
neither lets us create a cgroup (no root, a read-only mount), the figures are
``None`` and :attr:`HostCgroups.reason` says why; nothing fails.

The cgroups live under ``murder-bench-<pid>`` at the hierarchy's root and
are removed on exit, also after an error or Ctrl-C: any process still in one
goes back to the cgroup this process started in, then the directories go.
"""
import logging
import os
import threading
import time

import report

log = logging.getLogger(__name__)


def _mounts():
    with open("/proc/mounts", encoding="utf-8") as handle:
        return [line.split() for line in handle]


def _own_cgroup(kind):
    """This process's cgroup path in the hierarchy of ``kind`` ("cgroup2" or "cpuacct"), from /proc/self/cgroup."""
    with open("/proc/self/cgroup", encoding="utf-8") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if (kind == "cgroup2" and controllers == "") or (kind == "cpuacct" and "cpuacct" in controllers.split(",")):
                return path.lstrip("/")
    return ""


def hierarchies():
    """(kind, mount point, usage file, unit in seconds) of each usable hierarchy, in the order they are tried."""
    mounts = _mounts()
    found = [("cgroup2", point, "cpu.stat", 1e-6) for _, point, fstype, *_ in mounts if fstype == "cgroup2"]
    found += [("cpuacct", point, "cpuacct.usage", 1e-9) for _, point, fstype, options, *_ in mounts
              if fstype == "cgroup" and "cpuacct" in options.split(",")]
    return found


class HostCgroups:
    """One cgroup per host; a context manager that always removes them."""

    def __init__(self, hosts):
        self.hosts = list(hosts)
        self.kind = None
        self.root = None
        self.reason = None
        self._usage = None  # (file, its unit in seconds)
        self._home = None  # cgroup.procs of the cgroup this process started in

    @property
    def available(self):
        return self.root is not None

    def describe(self):
        """What the results file says about the accounting."""
        if self.available:
            return {"kind": self.kind, "path": self.root}
        return {"kind": None, "reason": self.reason}

    def __enter__(self):
        tried = []
        for kind, point, usage_file, unit in hierarchies():
            root = os.path.join(point, f"murder-bench-{os.getpid()}")
            try:
                os.mkdir(root)
            except OSError as exc:
                tried.append(f"{kind} at {point}: {exc.strerror}")
                continue
            self.kind, self.root, self._usage = kind, root, (usage_file, unit)
            self._home = os.path.join(point, _own_cgroup(kind), "cgroup.procs")
            try:
                for host in self.hosts:
                    os.mkdir(self._path(host))
                self.usage(self.hosts[0])
            except OSError as exc:
                tried.append(f"{kind} at {point}: {exc.strerror}")
                self.close()
                continue
            log.info("CPU per host from %s cgroups under %s", kind, root)
            return self
        self.reason = "no writable cgroup hierarchy (" + ("; ".join(tried) or "no cgroup2 or cpuacct mount") + ")"
        log.warning("CPU per host is not measured: %s", self.reason)
        return self

    def __exit__(self, *exc):
        self.close()

    def _path(self, host, name=None):
        return os.path.join(self.root, host, *([name] if name else []))

    def adopt(self, host, pids):
        """Move these processes (and so their later children) into the host's cgroup."""
        if not self.available:
            return
        for pid in pids:
            try:
                with open(self._path(host, "cgroup.procs"), "w", encoding="ascii") as handle:
                    handle.write(str(pid))
            except ProcessLookupError:
                pass  # it exited since it was listed

    def joiner(self, host):
        """A ``preexec_fn`` that puts the new process in the host's cgroup before it execs (None without cgroups)."""
        if not self.available:
            return None
        procs = self._path(host, "cgroup.procs")

        def join():
            with open(procs, "w", encoding="ascii") as handle:
                handle.write(str(os.getpid()))

        return join

    def usage(self, host):
        """CPU seconds the host's processes have used so far (None without cgroups)."""
        if not self.available:
            return None
        usage_file, unit = self._usage
        with open(self._path(host, usage_file), encoding="ascii") as handle:
            text = handle.read()
        if self.kind == "cgroup2":
            text = dict(line.split() for line in text.splitlines())["usage_usec"]
        return int(text) * unit

    def close(self):
        if self.root is None:
            return
        for host in self.hosts:
            self._remove(self._path(host))
        self._remove(self.root)
        self.root = None

    def _move_home(self, path):
        try:
            with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as handle:
                pids = handle.read().split()
        except FileNotFoundError:
            return
        for pid in pids:
            try:
                with open(self._home, "w", encoding="ascii") as handle:
                    handle.write(pid)
            except OSError:
                pass  # gone already

    def _remove(self, path):
        # A process that has just forked or exited can keep the cgroup busy for a moment: move, retry.
        for _ in range(50):
            self._move_home(path)
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        log.warning("could not remove cgroup %s", path)


class UsageTimeline:
    """Every host's CPU seconds sampled through a run, so that a step of it can be given its own CPU.

    A thread reads each host's usage every ``interval`` seconds (17 hosts at the default: 2 % of one core,
    measured) between ``start`` and ``stop``; :meth:`between` interpolates linearly between samples,
    so a step shorter than ``interval`` gets its share of the CPU around it, not its own.
    """

    def __init__(self, cgroups, interval=0.05):
        self.cgroups = cgroups
        self.interval = interval
        self.times, self.samples = [], []  # wall clock (time.time()); {host: CPU seconds} at that time
        self._stop = threading.Event()
        self._thread = None

    def _sample(self):
        self.times.append(time.time())
        self.samples.append({host: self.cgroups.usage(host) for host in self.cgroups.hosts})

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self):
        self._sample()
        self._thread = threading.Thread(target=self._run, name="usage-timeline", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._sample()

    def at(self, host, when):
        """The host's CPU seconds at wall time ``when`` (clamped to the sampled span)."""
        return report.interpolate(self.times, [sample[host] for sample in self.samples], when)

    def between(self, host, since, until):
        """CPU seconds the host used from wall time ``since`` to ``until``."""
        return max(self.at(host, until) - self.at(host, since), 0.0)
