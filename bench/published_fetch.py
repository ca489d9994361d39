"""What a minion's fetch of a published release costs the master's file server.

``murder.fetch`` (and ``murder.release`` with ``fetch: True``) reads one
file, ``salt://murder-published/<app>/<release>.json``, before it joins the
swarm. This starts an embedded master (with the engine) and one minion on
127.0.0.1, publishes a release of ``--size-mib``, then reads that file
``--fetches`` times through a file client holding the minion's keys, as
``cp.get_file_str`` does, and reports the file's size, the time per read and
the master's CPU seconds per read. The same reads by 1,000 minions are the
cost of a 1,000-minion highstate that fetches the release; the comparison
with carrying the torrents in pillar is in docs/engine.md.

    python bench/published_fetch.py --size-mib 256 --fetches 1000
"""
import argparse
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import psutil

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from devtools.lab import Lab  # noqa: E402


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def master_cpu(pid):
    parent = psutil.Process(pid)
    total = 0.0
    for process in [parent, *parent.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--fetches", type=int, default=1000)
    parser.add_argument("--results", default=str(pathlib.Path(__file__).parent / "results" / "published-fetch.json"))
    args = parser.parse_args()

    import salt.config
    import salt.fileclient
    import salt.minion

    top = pathlib.Path(tempfile.mkdtemp(prefix="murder-fetch-bench-"))
    settings = {"seeder_address": "127.0.0.1", "peer_address": "127.0.0.1", "tracker_port": free_port()}
    lab = Lab(top, master_address="127.0.0.1", publish_port=free_port(), ret_port=free_port(),
              murder_master=settings, murder_minion=settings)
    try:
        with lab:
            lab.start_master()
            lab.start_minion("bench-1")
            lab.wait_for_minions()
            source = top / "build"
            source.mkdir()
            with open(source / "blob.bin", "wb") as handle:
                for _ in range(args.size_mib):
                    handle.write(os.urandom(1 << 20))
            subprocess.run(lab.command("salt-run", "murder.publish", f"source={source}", "app=bench",
                                       "release=b1"), check=True, capture_output=True, timeout=600)
            opts = salt.config.minion_config(str(top / "bench-1" / "conf" / "minion"))
            opts.update(salt.minion.resolve_dns(opts))  # master_uri, as the minion itself sets it
            client = salt.fileclient.get_file_client(opts)
            url = "salt://murder-published/bench/b1.json"
            master_pid = int((top / "master" / "daemon.pid").read_text())
            size = len(client.get_url(url, None) or b"")
            machine_before = psutil.cpu_times()
            cpu_before, started = master_cpu(master_pid), time.monotonic()
            cached = pathlib.Path(opts["cachedir"]) / "files" / "base" / "murder-published" / "bench" / "b1.json"
            for _ in range(args.fetches):
                # What a fetching minion reads, with nothing cached: the hash and then the file itself.
                cached.unlink(missing_ok=True)
                assert client.get_url(url, None), url
            seconds, cpu = time.monotonic() - started, master_cpu(master_pid) - cpu_before
            machine_after = psutil.cpu_times()
            busy = sum(getattr(machine_after, f) - getattr(machine_before, f) for f in ("user", "system", "nice"))
            # Share of both cores in use during the reads (this client, the master, the rest of the machine).
            cpu_busy = busy / (seconds * os.cpu_count())
            client.destroy()
        results = {
            "size_bytes": args.size_mib << 20, "fetches": args.fetches, "file_bytes": size,
            "seconds_per_fetch": round(seconds / args.fetches, 5),
            "master_cpu_seconds_per_fetch": round(cpu / args.fetches, 5),
            "cpu_busy": round(cpu_busy, 2),
            "for_1000_minions": {"file_server_megabytes": round(1000 * size / 1e6, 1),
                                 "master_cpu_seconds": round(1000 * cpu / args.fetches, 2)},
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
        }
        pathlib.Path(args.results).write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
