"""`make demo`: a real deploy on an embedded master and three minions, no root needed.

Starts a salt-master and three salt-minions under a temporary directory, all
on 127.0.0.1, configured with the shipped master snippet
(``salt/master.d/murder.conf``); deploys a sample app with
``salt-run murder.deploy``; shows ``current`` on each minion; then stops
every daemon it started (by PID) and removes the directory.
"""
import argparse
import getpass
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import yaml

from murder_core.saltext import master_snippet

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
MINIONS = ("demo-1", "demo-2", "demo-3")
LOOPBACK = {"seeder_address": "127.0.0.1", "peer_address": "127.0.0.1", "shared_address": True,
            "announce_interval": 1, "linger": 5, "progress_interval": 1}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(directory, name, settings):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(yaml.safe_dump(settings), encoding="utf-8")
    return directory


def daemon_settings(root):
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


def run(cmd, **kwargs):
    return subprocess.run([str(c) for c in cmd], text=True, **kwargs)


def wait_for_minions(conf, deadline):
    while time.monotonic() < deadline:
        answer = run([BIN / "salt", "-c", conf, "--out=json", "--static", "-t", "5", "demo-*", "test.ping"],
                     capture_output=True)
        try:
            if set(json.loads(answer.stdout or "{}")) >= set(MINIONS):
                return
        except json.JSONDecodeError:
            pass
        time.sleep(1)  # a poll with a deadline: the daemons give no readiness signal we can wait on
    raise SystemExit("the demo minions did not answer within the deadline; see the logs above")


def sample_app(path):
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "hello").write_text("#!/bin/sh\necho 'hello from murder for Salt'\n")
    (path / "bin" / "hello").chmod(0o755)
    (path / "static").mkdir()
    for index in range(20):
        (path / "static" / f"asset-{index:02}.bin").write_bytes(os.urandom(512 * 1024))
    (path / "README").write_text("A sample release deployed by `make demo`.\n")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the temporary directory for a look")
    args = parser.parse_args()

    top = pathlib.Path(tempfile.mkdtemp(prefix="murder-demo-"))
    processes = []
    try:
        publish, ret = free_port(), free_port()
        master_root = top / "master"
        master = daemon_settings(master_root)
        master.update(master_snippet(REPO))
        master["murder"] = dict(master["murder"], **LOOPBACK, tracker_port=free_port())
        master.update({"interface": "127.0.0.1", "publish_port": publish, "ret_port": ret, "auto_accept": True})
        conf = write_config(master_root / "conf", "master", master)
        processes.append(subprocess.Popen([BIN / "salt-master", "-c", conf, "-l", "quiet"]))
        for minion_id in MINIONS:
            root = top / minion_id
            settings = daemon_settings(root)
            settings.update({"id": minion_id, "master": "127.0.0.1", "master_port": ret, "publish_port": publish,
                             "module_dirs": [str(REPO)], "murder": dict(LOOPBACK)})
            minion_conf = write_config(root / "conf", "minion", settings)
            processes.append(subprocess.Popen([BIN / "salt-minion", "-c", minion_conf, "-l", "quiet"]))
        print(f"== embedded master and {len(MINIONS)} minions under {top} (all on 127.0.0.1)", flush=True)
        wait_for_minions(conf, time.monotonic() + 120)

        source = sample_app(top / "build" / "hello-app")
        base_dir = str(top / "fleet" / "{minion}" / "{app}")
        print(f"== salt-run murder.deploy source={source} app=hello tgt='demo-*'", flush=True)
        deploy = run([BIN / "salt-run", "-c", conf, "murder.deploy", f"source={source}", "app=hello",
                      "tgt=demo-*", f"base_dir={base_dir}", "timeout=120"])
        print("== current on each minion", flush=True)
        for minion_id in MINIONS:
            current = top / "fleet" / minion_id / "hello" / "current"
            target = os.readlink(current) if current.is_symlink() else "(none)"
            output = run([current / "bin" / "hello"], capture_output=True).stdout.strip() if current.exists() else ""
            print(f"{minion_id}: current -> {target}   bin/hello says: {output}", flush=True)
        return deploy.returncode
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if args.keep:
            print(f"== left {top} in place")
        else:
            shutil.rmtree(top, ignore_errors=True)
        print("== demo daemons stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
