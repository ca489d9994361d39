"""The floor of a minion's work on one release: what it could not avoid doing by hand.

One SHA-256 pass over the artifact and ``zstd -d | tar -x`` of it, each
timed by the CPU it took (its children's rusage), the least of ``rounds``.
Both benchmarks set a peer's CPU per GiB beside it. The pass is OpenSSL's
SHA-256 (through hashlib, as murder and libtorrent's own hashing use the
CPU's SHA instructions): coreutils' ``sha256sum`` has no such code and runs
about six times slower here, which would flatter every ratio to the floor.
The interpreter's own start (about 0.07 CPU-s here, as much as hashing 80 MiB)
is measured on an empty file and taken off, so a small artifact's floor is
the hashing alone.
"""
import os
import resource
import shutil
import subprocess
import sys

GiB = 2**30
_SHA256 = ("import hashlib, sys\n"
           "digest = hashlib.sha256()\n"
           "with open(sys.argv[1], 'rb') as handle:\n"
           "    for block in iter(lambda: handle.read(1 << 20), b''):\n"
           "        digest.update(block)\n")


def children_cpu(argv):
    """CPU seconds (user + system) of a command and everything it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([str(a) for a in argv], check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def measure(artifact, workdir, rounds=3):
    """The floor for the packed ``artifact`` (a path); scratch space in ``workdir``, removed after."""
    size = os.path.getsize(artifact)
    hashing, starting, unpacking = [], [], []
    for index in range(rounds):
        starting.append(children_cpu([sys.executable, "-c", _SHA256, os.devnull]))
        hashing.append(children_cpu([sys.executable, "-c", _SHA256, artifact]))
        dest = os.path.join(workdir, f"floor-unpacked-{index}")
        os.makedirs(dest)
        try:
            unpacking.append(children_cpu(["sh", "-c", 'zstd -dcq "$0" | tar -xf - -C "$1"', artifact, dest]))
        finally:
            shutil.rmtree(dest, ignore_errors=True)
    per_gib = GiB / size
    sha256, unpack = max(min(hashing) - min(starting), 0) * per_gib, min(unpacking) * per_gib
    return {"artifact_bytes": size, "rounds": rounds,
            "cpu_seconds_per_gib": round(sha256 + unpack, 3),
            "sha256_cpu_seconds_per_gib": round(sha256, 3),
            "unpack_cpu_seconds_per_gib": round(unpack, 3),
            "sha256_cpu_seconds": [round(value, 4) for value in hashing],
            "interpreter_start_cpu_seconds": [round(value, 4) for value in starting],
            "unpack_cpu_seconds": [round(value, 4) for value in unpacking]}
