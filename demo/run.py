"""`make demo`: a real deploy on an embedded master and three minions, no root needed.

Starts a salt-master and three salt-minions under a temporary directory, all
on 127.0.0.1, configured with the shipped master snippet
(``salt/master.d/murder.conf``); deploys a sample app with
``salt-run murder.deploy``; shows ``current`` on each minion; then stops
every daemon it started (by PID) and removes the directory.
"""
import argparse
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # devtools/ lives in the checkout
from devtools.lab import Lab  # noqa: E402

MINIONS = ("demo-1", "demo-2", "demo-3")
# Every demo host is 127.0.0.1: peers share the address and listen on loopback only.
LOOPBACK = {"seeder_address": "127.0.0.1", "peer_address": "127.0.0.1", "announce_interval": 1, "linger": 5, "progress_interval": 1}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    lab = Lab(top, master_address="127.0.0.1", publish_port=free_port(), ret_port=free_port(),
              murder_master=dict(LOOPBACK, tracker_port=free_port()), murder_minion=LOOPBACK)
    try:
        with lab:
            lab.start_master()
            for minion_id in MINIONS:
                lab.start_minion(minion_id)
            print(f"== embedded master and {len(MINIONS)} minions under {top} (all on 127.0.0.1)", flush=True)
            lab.wait_for_minions()

            source = sample_app(top / "build" / "hello-app")
            base_dir = str(top / "fleet" / "{minion}" / "{app}")
            print(f"== salt-run murder.deploy source={source} app=hello tgt='demo-*'", flush=True)
            deploy = subprocess.run(lab.command("salt-run", "murder.deploy", f"source={source}", "app=hello",
                                                "tgt=demo-*", f"base_dir={base_dir}", "timeout=120"))
            print("== current on each minion", flush=True)
            for minion_id in MINIONS:
                current = top / "fleet" / minion_id / "hello" / "current"
                target = os.readlink(current) if current.is_symlink() else "(none)"
                said = ""
                if current.exists():
                    said = subprocess.run([current / "bin" / "hello"], capture_output=True, text=True).stdout.strip()
                print(f"{minion_id}: current -> {target}   bin/hello says: {said}", flush=True)
        print("== demo daemons stopped", flush=True)
        return deploy.returncode
    finally:
        if args.keep:
            print(f"== left {top} in place")
        else:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
