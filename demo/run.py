"""`make demo`: a real deploy on an embedded master and three minions, no root needed.

Starts a salt-master (with the murder engine) and three salt-minions under
a temporary directory, all on 127.0.0.1, configured with the shipped
master snippet (``murder_core.saltext.master_snippet``); deploys a sample
app with ``salt-run murder.deploy``; publishes its next release and lets a
highstate (``murder.release`` with ``fetch: True``) fetch it through the
swarm; shows ``current`` on each minion after each; then stops every
daemon it started (by PID) and removes the directory.
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


def sample_app(path, version):
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "hello").write_text(f"#!/bin/sh\necho 'hello from murder for Salt, {version}'\n")
    (path / "bin" / "hello").chmod(0o755)
    (path / "static").mkdir()
    for index in range(20):
        (path / "static" / f"asset-{index:02}.bin").write_bytes(os.urandom(512 * 1024))
    (path / "README").write_text("A sample release deployed by `make demo`.\n")
    return path


# The highstate of the demo: keep the app hello on the release pillar names, fetched through the swarm,
# in each minion's murder: base_dir (/…/fleet/<minion>/hello), where the deploy put it too.
RELEASE_SLS = """\
hello:
  murder.release:
    - release: {{ pillar['hello']['release'] | yaml_encode }}
    - fetch: True
"""


def show_current(top):
    for minion_id in MINIONS:
        current = top / "fleet" / minion_id / "hello" / "current"
        target = os.readlink(current) if current.is_symlink() else "(none)"
        said = ""
        if current.exists():
            said = subprocess.run([current / "bin" / "hello"], capture_output=True, text=True).stdout.strip()
        print(f"{minion_id}: current -> {target}   bin/hello says: {said}", flush=True)


def state_tree(top, release):
    """A state tree and pillar for the highstate; returns (file_roots entry, pillar_roots entry)."""
    states, pillar = top / "states", top / "pillar"
    for directory in (states, pillar):
        directory.mkdir(parents=True)
        (directory / "top.sls").write_text("base:\n  'demo-*':\n    - hello\n")
    (states / "hello.sls").write_text(RELEASE_SLS)
    (pillar / "hello.sls").write_text(f"hello:\n  release: {release!r}\n")
    return str(states), str(pillar)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the temporary directory for a look")
    args = parser.parse_args()

    top = pathlib.Path(tempfile.mkdtemp(prefix="murder-demo-"))
    base_dir = str(top / "fleet" / "{minion}" / "{app}")
    states, pillar = state_tree(top, "v2")
    lab = Lab(top, master_address="127.0.0.1", publish_port=free_port(), ret_port=free_port(),
              murder_master=dict(LOOPBACK, tracker_port=free_port()), murder_minion=dict(LOOPBACK, base_dir=base_dir),
              master_extra={"pillar_roots": {"base": [pillar]}})
    lab.snippet["file_roots"]["base"].append(states)
    failed = 0
    try:
        with lab:
            lab.start_master()
            for minion_id in MINIONS:
                lab.start_minion(minion_id)
            print(f"== embedded master and {len(MINIONS)} minions under {top} (all on 127.0.0.1)", flush=True)
            lab.wait_for_minions()

            source = sample_app(top / "build" / "hello-v1", "v1")
            print(f"== 1. salt-run murder.deploy source={source} app=hello release=v1 tgt='demo-*'", flush=True)
            failed |= subprocess.run(lab.command("salt-run", "murder.deploy", f"source={source}", "app=hello",
                                                 "release=v1", "tgt=demo-*", "timeout=120")).returncode
            show_current(top)

            source = sample_app(top / "build" / "hello-v2", "v2")
            print(f"== 2. salt-run murder.publish source={source} app=hello release=v2", flush=True)
            failed |= subprocess.run(lab.command("salt-run", "murder.publish", f"source={source}", "app=hello",
                                                 "release=v2")).returncode
            print("== 3. salt 'demo-*' state.highstate  (pillar hello:release is v2; murder.release fetch: True)",
                  flush=True)
            failed |= subprocess.run(lab.command("salt", "--state-output=changes", "demo-*",
                                                 "state.highstate")).returncode
            show_current(top)
        print("== demo daemons stopped", flush=True)
        return 1 if failed else 0
    finally:
        if args.keep:
            print(f"== left {top} in place")
        else:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
