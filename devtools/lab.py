"""Embedded salt-master and salt-minions for `make demo`, `make bench` and the install tests.

Writes daemon configs under one directory (no root needed), starts the
daemons as child processes (optionally inside a network namespace, or with
another Python), waits for the minions to answer, and stops exactly the
processes it started. The master is configured with the shipped snippet
(``master_snippet``). A development tool: not part of the installed package.
"""
import getpass
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import yaml

from murder_core.saltext import master_snippet

CONSOLE = "console"  # a daemon's stdout and stderr, in its root directory
STOP_GRACE_SECONDS = 3.0  # how long stop() waits for the daemons to end on SIGTERM


def _daemon_settings(root):
    return {
        "root_dir": str(root),
        "user": getpass.getuser(),
        "pki_dir": str(root / "pki"),
        "cachedir": str(root / "cache"),
        "sock_dir": str(root / "sock"),
        "pidfile": str(root / "daemon.pid"),
        "log_file": str(root / "log"),
        "log_level_logfile": "info",
        "enable_fqdns_grains": False,
    }


def _write(directory, name, settings):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(yaml.safe_dump(settings), encoding="utf-8")
    return directory


def _netns(netns):
    return ["ip", "netns", "exec", netns] if netns else []


def _signal_group(process, signum):
    """Signal the process group ``process`` leads (its own session); nothing if no process of it is left."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


class Lab:
    """One master and some minions, each a child process; a context manager."""

    def __init__(self, top, *, master_address, publish_port, ret_port, murder_master=None, murder_minion=None,
                 master_extra=None, python=None, snippet=None):
        self.top = pathlib.Path(top)
        # The Python the daemons and tools run on, and its bin/ with Salt's scripts.
        self.python = pathlib.Path(python or sys.executable)
        self.snippet = snippet if snippet is not None else master_snippet(store_dir=self.top / "master" / "store")
        self.master_address = master_address
        self.publish_port = publish_port
        self.ret_port = ret_port
        self.murder_master = murder_master or {}
        self.murder_minion = murder_minion or {}
        self.master_extra = master_extra or {}
        self.master_conf = None
        self.master_netns = None
        self._master = None  # the salt-master's Popen
        self.minion_ids = []
        self._processes = []

    def start_master(self, netns=None):
        root = self.top / "master"
        settings = _daemon_settings(root)
        settings.update(self.snippet)
        settings["murder"] = dict(settings.get("murder") or {}, **self.murder_master)
        settings.update({"interface": self.master_address, "publish_port": self.publish_port,
                         "ret_port": self.ret_port, "auto_accept": True})
        settings.update(self.master_extra)
        self.master_conf = _write(root / "conf", "master", settings)
        self.master_netns = netns
        self._master = self._spawn(self._tool("salt-master", "-c", self.master_conf, "-l", "quiet"), netns, root)
        return self.master_conf

    def restart_master(self, **murder_master):
        """Stop the salt-master, then start it again with these ``murder:`` settings changed.

        Its keys and store stay; the minions reconnect by themselves (wait
        for them with :meth:`wait_for_minions`).
        """
        if self._master is not None:
            self._end([self._master], grace=30)  # its store stays: let it close it
            self._processes.remove(self._master)
        self.murder_master = dict(self.murder_master, **murder_master)
        return self.start_master(netns=self.master_netns)

    def start_minion(self, minion_id, netns=None, murder=None, python=None):
        """Start a minion; ``python`` runs it on another Python than the lab's (its own install)."""
        root = self.top / minion_id
        settings = _daemon_settings(root)
        settings.update({"id": minion_id, "master": self.master_address, "master_port": self.ret_port,
                         "publish_port": self.publish_port,
                         "murder": dict(self.murder_minion, **(murder or {}))})
        conf = _write(root / "conf", "minion", settings)
        self._spawn(self._tool("salt-minion", "-c", conf, "-l", "quiet", python=python), netns, root)
        self.minion_ids.append(minion_id)

    def _tool(self, name, *args, python=None):
        # Run the script with the chosen Python, not through its #! line (a copied
        # virtualenv's scripts still name the Python they were installed with).
        python = pathlib.Path(python or self.python)
        return [python, python.parent / name, *args]

    def _spawn(self, argv, netns, root):
        # Salt's daemons print start-up chatter and asyncio shutdown warnings even
        # at "-l quiet"; they go to a file next to the daemon's log, not over the demo.
        with open(root / CONSOLE, "ab") as console:
            # A session of its own: stop() signals the daemon and every process it forked at once.
            process = subprocess.Popen(_netns(netns) + [str(a) for a in argv], cwd=root,
                                       stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
        self._processes.append(process)
        return process

    def command(self, tool, *args):
        """argv of a Salt CLI tool (salt, salt-run) run against this master, in its namespace."""
        return _netns(self.master_netns) + [str(a) for a in self._tool(tool, "-c", self.master_conf, *args)]

    def wait_for_minions(self, timeout=180):
        """Poll ``test.ping`` with a deadline until every started minion answers."""
        deadline = time.monotonic() + timeout
        wanted = set(self.minion_ids)
        answered = set()
        while time.monotonic() < deadline:
            answer = subprocess.run(
                self.command("salt", "--out=json", "--static", "-t", "10", "-L", ",".join(sorted(wanted)),
                             "test.ping"),
                capture_output=True, text=True,
            )
            try:
                answered = {m for m, ok in json.loads(answer.stdout or "{}").items() if ok is True}
            except json.JSONDecodeError:
                answered = set()
            if answered >= wanted:
                return
            time.sleep(1)  # the daemons give no readiness signal to wait on; this is a poll with a deadline
        raise RuntimeError(f"minions did not answer within {timeout} s: {sorted(wanted - answered)} "
                           f"(their output: {self.top}/<id>/{CONSOLE} and {self.top}/<id>/log)")

    @staticmethod
    def _end(processes, grace=STOP_GRACE_SECONDS):
        # SIGTERM to each daemon's whole group, then SIGKILL to what is left after the grace:
        # a salt-minion acts on SIGTERM only when its event loop next wakes, 5-9 s later here,
        # and everything a lab daemon has lives under the lab's own directory.
        for process in processes:
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(process, signal.SIGKILL)  # also its children, after the daemon itself is gone
            process.wait()

    def stop(self):
        # The minions first: they are killed after the grace anyway. The master, which writes its
        # store and log as it stops (bench/engine_events.py reads the log after), gets its time.
        self._end([process for process in self._processes if process is not self._master])
        if self._master is not None:
            self._end([self._master], grace=30)
        self._processes = []
        self._master = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
