"""Benchmark: how to pack a release, bytes on the wire against CPU.

Run with ``.venv/bin/python bench/pack.py`` (``--help`` for the options).

Two sample releases are generated in a temporary directory:

* ``source``: a tree of text and source-like files (about 200 MB by default,
  files of a few KiB to a few hundred KiB, lines of identifiers, keywords and
  punctuation drawn with a skewed distribution; it compresses about 3x with
  zstd, less than real code usually does, so it does not flatter compression);
* ``incompressible``: one file of random bytes of the same size (bundled
  media, already-compressed assets, a JAR);
* ``many-files``: 20,000 small files in 200 directories (a virtualenv,
  ``node_modules``), measured against the command-line tools on the same
  tree in the same run: ``tar -cf - . | zstd -3`` and ``zstd -dc | tar -xf -``
  (GNU tar, Debian's zstd), and against murder's tarfile fallback; each step
  ``--repeat`` times (at least 5), interleaved, the median kept. It runs in a
  tmpfs (``/dev/shm``) unless ``--dir`` says otherwise: on this machine's
  ext4 the same ``tar -x`` took 4 to 17 s from one run to the next, all of it
  kernel time, which would swamp what the unpacker itself costs;
* with ``--tree DIR``, an existing directory as it is (for example the
  project's own ``.venv/lib/python3.11/site-packages``: 13,000 files of
  Python source, bytecode and shared libraries, a real application tree).

Each is packed with ``murder_core.pack.pack`` (``zstd`` at level 3 and
``none``) and, for comparison only, with ``tarfile`` ``w:gz`` at levels 1 and
6, then unpacked with ``murder_core.pack.unpack`` (which reads all three).
The table shows the artifact's bytes, wall and CPU seconds of pack and unpack,
and an estimate of a deploy's critical path for one peer, pack + bytes over
the link + unpack, at 1 and 10 Gbit/s.

Everything runs in the page cache (no fsync): the point is the CPU that
compression costs against the bytes it saves. Results go to
``bench/results/pack-latest.json``; the temporary directory is removed
whatever happens. The sizes bound the run time: with the defaults it takes
about two minutes on two cores (four with ``--repeat 2`` and the venv as ``--tree``).
"""
import argparse
import contextlib
import datetime
import statistics
import subprocess
import itertools
import json
import logging
import os
import platform
import random
import resource
import shutil
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from murder_core import gnu_tar, libarchive_io  # noqa: E402
from murder_core import pack as pack_mod  # noqa: E402

log = logging.getLogger("bench.pack")

MiB = 1024 * 1024
RESULTS = os.path.join(HERE, "results", "pack-latest.json")
# Gbit/s link rates the critical-path estimate is given for.
LINKS = (1, 10)
# Seconds of quiet (after a sync) before each measurement.
SETTLE = 1.0
# Distinct lines the source tree is drawn from (about 14 MB, several zstd windows).
POOL_LINES = 300000

KEYWORDS = (
    "def class return import from if else elif for while in not and or is None True False self "
    "try except finally with as yield lambda pass raise assert const let var function public private "
    "static void int string bool struct impl fn match enum package func go defer interface"
).split()
PUNCTUATION = ("(", ")", ":", ",", ".", " = ", " == ", "[", "]", "{", "}", " + ", " -> ", "; ", "\"", "'")


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu or platform.processor(), "kernel": platform.release(),
            "python": platform.python_version(), "zstandard": pack_mod.zstandard.__version__}


def cpu_seconds():
    """CPU seconds of this process and of its children waited for: murder's pack runs GNU tar."""
    usage, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def make_source_tree(root, size, rng):
    """Write about ``size`` bytes of source-like files under ``root``; return the file count.

    Lines are drawn from a pool of about 14 MB of distinct lines, several
    times zstd's window, and every file starts with the same licence header,
    as real trees do.
    """
    identifiers = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz_", k=rng.randint(3, 14)))
                   for _ in range(6000)]
    vocabulary = KEYWORDS + identifiers
    # Zipf-like: a few tokens are everywhere, most are rare, as in real code.
    cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(vocabulary))))
    lines = []
    for _ in range(POOL_LINES):
        tokens = rng.choices(vocabulary, cum_weights=cum_weights, k=rng.randint(1, 9))
        glue = rng.choices(PUNCTUATION, k=len(tokens))
        indent = "    " * rng.choice((0, 1, 1, 2, 2, 2, 3, 3, 4))
        lines.append(indent + "".join(t + g for t, g in zip(tokens, glue)).rstrip() + "\n")
    header = "".join(f"# {rng.choice(lines).strip()}\n" for _ in range(15))
    written = files = 0
    while written < size:
        directory = os.path.join(root, f"pkg{files // 200:03d}", f"mod{files // 20 % 10}")
        os.makedirs(directory, exist_ok=True)
        body = (header + "".join(rng.choices(lines, k=rng.randint(40, 4000)))).encode()
        with open(os.path.join(directory, f"file{files:05d}.py"), "wb") as handle:
            handle.write(body)
        written += len(body)
        files += 1
    return files


def make_incompressible(root, size):
    os.makedirs(root)
    with open(os.path.join(root, "assets.bin"), "wb") as handle:
        left = size
        while left:
            block = os.urandom(min(4 * MiB, left))
            handle.write(block)
            left -= len(block)
    return 1


def settle(seconds):
    os.sync()
    time.sleep(seconds)


def _machine_ticks():
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(value) for value in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


# How busy the whole machine was (0..1 of all cores) during each measurement: what else ran shows here.
BUSY = []


@contextlib.contextmanager
def _busy_recorded():
    busy, total = _machine_ticks()
    try:
        yield
    finally:
        busy_after, total_after = _machine_ticks()
        if total_after > total:
            BUSY.append((busy_after - busy) / (total_after - total))


def timed(function, pause):
    settle(pause)
    with _busy_recorded():
        cpu, started = cpu_seconds(), time.monotonic()
        function()
        return time.monotonic() - started, cpu_seconds() - cpu


def pack_gzip(source, artifact, level):
    """Pack as ``tar.gz`` with tarfile, and hash it as ``pack.pack`` does (comparison only)."""
    with tarfile.open(artifact, "w:gz", compresslevel=level, format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(source)):
            tar.add(os.path.join(source, name), arcname=name)
    pack_mod.sha256_file(artifact)


METHODS = {
    "zstd-3": lambda source, artifact: pack_mod.pack(source, artifact, compression="zstd"),
    "none": lambda source, artifact: pack_mod.pack(source, artifact, compression="none"),
    "gzip-1": lambda source, artifact: pack_gzip(source, artifact, 1),
    "gzip-6": lambda source, artifact: pack_gzip(source, artifact, 6),
}
SUFFIX = {"zstd-3": ".tar.zst", "none": ".tar", "gzip-1": ".tar.gz", "gzip-6": ".tar.gz"}


def measure(sample, source, tree_bytes, workdir, methods, pause, repeat):
    rows = []
    for method in methods:
        name = sample.replace(":", "-")
        artifact = os.path.join(workdir, f"{name}-{method}{SUFFIX[method]}")
        dest = os.path.join(workdir, "unpacked", f"{name}-{method}")
        packs, unpacks, apart = [], [], []
        for attempt in range(repeat):
            if attempt:
                os.unlink(artifact)
            packs.append(timed(lambda: METHODS[method](source, artifact), pause))
            shutil.rmtree(dest, ignore_errors=True)
            unpacks.append(timed(lambda: pack_mod.unpack(artifact, dest), pause))
            if method == "zstd-3" and libarchive_io.AVAILABLE and gnu_tar.program():
                shutil.rmtree(dest, ignore_errors=True)
                apart.append(timed(lambda: _other_unpacker(artifact)[1](pack_mod.unpack, artifact, dest), pause))
        # The fastest attempt: the least disturbed by the rest of the machine.
        (pack_s, pack_cpu), (unpack_s, unpack_cpu) = min(packs), min(unpacks)
        size = os.path.getsize(artifact)
        row = {
            "sample": sample, "method": method, "tree_bytes": tree_bytes, "bytes": size,
            "ratio": tree_bytes / size, "pack_seconds": pack_s, "pack_cpu_seconds": pack_cpu,
            "unpack_seconds": unpack_s, "unpack_cpu_seconds": unpack_cpu,
        }
        row["unpacker"] = _unpacker(artifact)
        if apart:  # the unpacker murder did not choose for this artifact: why it chose the other
            row["other_unpacker"] = _other_unpacker(artifact)[0]
            row["other_unpack_seconds"], row["other_unpack_cpu_seconds"] = min(apart)
        for gbit in LINKS:
            row[f"critical_path_seconds_{gbit}gbit"] = pack_s + size / (gbit * 1e9 / 8) + unpack_s
        rows.append(row)
        log.info("%s %s: %d bytes, pack %.2f s, unpack %.2f s", sample, method, size, pack_s, unpack_s)
        os.unlink(artifact)
        shutil.rmtree(dest, ignore_errors=True)
    return rows


def make_many_files(root, files, rng):
    """``files`` small files (a few hundred bytes to a few KiB) in directories of 100."""
    for index in range(files):
        directory = os.path.join(root, f"pkg{index // 100:03d}")
        if index % 100 == 0:
            os.makedirs(directory)
        body = "".join(f"value_{rng.randrange(10 ** 6)} = {rng.random()!r}\n" for _ in range(rng.randint(2, 30)))
        with open(os.path.join(directory, f"mod{index % 100:03d}.py"), "w") as handle:
            handle.write(body)
    return files


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _shell(command):
    """Run a shell pipeline; return (wall, CPU seconds of its processes)."""
    with _busy_recorded():
        cpu, started = _children_cpu(), time.monotonic()
        subprocess.run(["sh", "-c", command], check=True)
        return time.monotonic() - started, _children_cpu() - cpu


@contextlib.contextmanager
def _tarfile_only():
    saved, libarchive_io.AVAILABLE = libarchive_io.AVAILABLE, False
    program, gnu_tar.program = gnu_tar.program, lambda: ""
    try:
        yield
    finally:
        libarchive_io.AVAILABLE, gnu_tar.program = saved, program


def measure_many_files(root, files, pause, repeat):
    """murder's pack and unpack (GNU tar; libarchive alone), and the tarfile fallback, against tar and zstd, interleaved."""
    source = os.path.join(root, "tree")
    make_many_files(source, files, random.Random(7))
    artifact, cli_artifact = os.path.join(root, "murder.tar.zst"), os.path.join(root, "cli.tar.zst")
    dest = os.path.join(root, "out")
    steps = {
        "murder pack": lambda: timed(lambda: pack_mod.pack(source, artifact), pause),
        "cli pack": lambda: (settle(pause), _shell(f"tar -C {source} -cf - . | zstd -q -3 -o {cli_artifact}"))[1],
        "murder unpack": lambda: timed(lambda: pack_mod.unpack(artifact, dest), pause),
        "cli unpack": lambda: (settle(pause), os.makedirs(dest),
                               _shell(f"zstd -dc {artifact} | tar -C {dest} -xf -"))[2],
        # Where there is no GNU tar, libarchive writes the tree (as before session 13).
        "libarchive unpack": lambda: timed(lambda: _libarchive_unpack(pack_mod.unpack, artifact, dest), pause),
    }
    fallback = {
        "tarfile pack": lambda: timed(lambda: pack_mod.pack(source, artifact + ".tarfile"), pause),
        "tarfile unpack": lambda: timed(lambda: pack_mod.unpack(artifact + ".tarfile", dest), pause),
    }
    samples = {name: [] for name in list(steps) + list(fallback)}
    first = len(BUSY)
    for attempt in range(repeat):
        for name, step in steps.items():
            shutil.rmtree(dest, ignore_errors=True)
            output = {"murder pack": artifact, "cli pack": cli_artifact}.get(name)
            if output and os.path.exists(output):
                os.unlink(output)
            samples[name].append(step())
        # The fallback is several times slower: twice is enough to show it.
        if attempt < 2:
            with _tarfile_only():
                for name, step in fallback.items():
                    shutil.rmtree(dest, ignore_errors=True)
                    if name == "tarfile pack" and os.path.exists(artifact + ".tarfile"):
                        os.unlink(artifact + ".tarfile")
                    samples[name].append(step())
    shutil.rmtree(dest, ignore_errors=True)
    median = {name: (statistics.median(s[0] for s in runs), statistics.median(s[1] for s in runs))
              for name, runs in samples.items()}
    row = {"sample": "many-files", "files": files, "tree_bytes": tree_bytes_of(source),
           "bytes": os.path.getsize(artifact), "cli_bytes": os.path.getsize(cli_artifact),
           "extractor": _unpacker(artifact),
           "packer": "GNU tar" if gnu_tar.program() else "tarfile", "repeat": repeat,
           "cpu_busy_median": statistics.median(BUSY[first:]), "cpu_busy_max": max(BUSY[first:])}
    for name, (seconds, cpu) in median.items():
        key = name.replace(" ", "_")
        row[f"{key}_seconds"], row[f"{key}_cpu_seconds"] = seconds, cpu
    # Each attempt ran murder and the tools back to back: the median of those ratios is what drifting load disturbs least.
    for step in ("pack", "unpack"):
        row[f"{step}_ratio_to_cli"] = statistics.median(
            ours[0] / theirs[0] for ours, theirs in zip(samples[f"murder {step}"], samples[f"cli {step}"]))
    return row


def _unpacker(artifact):
    """Which unpacker ``pack.unpack`` uses for ``artifact`` on this host."""
    if not libarchive_io.AVAILABLE:
        return "tarfile"
    if gnu_tar.program() and pack_mod._many_small_members(artifact):
        return "GNU tar behind libarchive's check"
    return "libarchive"


def _other_unpacker(artifact):
    """(name, runner) of the unpacker between GNU tar and libarchive that ``pack.unpack`` does not choose."""
    if _unpacker(artifact) == "libarchive":
        return "GNU tar behind libarchive's check", _gnu_tar_unpack
    return "libarchive", _libarchive_unpack


def _gnu_tar_unpack(function, *args):
    """Run ``function`` with GNU tar unpacking whatever the members' size."""
    limit, pack_mod.SMALL_MEMBER_BYTES = pack_mod.SMALL_MEMBER_BYTES, float("inf")
    try:
        return function(*args)
    finally:
        pack_mod.SMALL_MEMBER_BYTES = limit


def _libarchive_unpack(function, *args):
    """Run ``function`` with libarchive writing the tree, as on a host without GNU tar."""
    program = gnu_tar.program
    gnu_tar.program = lambda: ""
    try:
        return function(*args)
    finally:
        gnu_tar.program = program


def print_many_files(row):
    print(f"many-files: {row['files']} files, {row['tree_bytes'] / 1e6:.1f} MB, packed {row['bytes'] / 1e6:.2f} MB; "
          f"median of {row['repeat']} (tarfile of 2), wall s (CPU s); packer {row.get('packer', '?')}, "
          f"extractor {row['extractor']}; "
          f"machine {row['cpu_busy_median']:.2f} busy (max {row['cpu_busy_max']:.2f}) of {os.cpu_count()} cores "
          f"during the steps")
    for step in ("pack", "unpack"):
        print(f"  {step:<7} murder {row[f'murder_{step}_seconds']:.2f} ({row[f'murder_{step}_cpu_seconds']:.2f})"
              f"  tar+zstd {row[f'cli_{step}_seconds']:.2f} ({row[f'cli_{step}_cpu_seconds']:.2f})"
              f"  ratio {row[f'{step}_ratio_to_cli']:.2f} (median of pairs)"
              f"  tarfile fallback {row[f'tarfile_{step}_seconds']:.2f} ({row[f'tarfile_{step}_cpu_seconds']:.2f})")
    if "libarchive_unpack_seconds" in row:
        print(f"  unpack by libarchive alone (a host without GNU tar) "
              f"{row['libarchive_unpack_seconds']:.2f} ({row['libarchive_unpack_cpu_seconds']:.2f})")


def tree_bytes_of(root):
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(root) for f in files)


def _filesystem(path):
    """The type of the filesystem holding ``path`` (from /proc/mounts)."""
    best, kind = "", "unknown"
    with open("/proc/mounts") as handle:
        for line in handle:
            _, mount, fstype = line.split()[:3]
            if (path + "/").startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
                best, kind = mount, fstype
    return kind


def print_table(results):
    print(f"{results['machine']['nproc']} cores, {results['machine']['cpu']}; "
          f"zstandard {results['machine']['zstandard']}; single-threaded compression")
    links = "".join(f"  {f'path@{g}G s':>10}" for g in LINKS)
    print(f"{'sample':<22}{'method':<8}{'MB':>8}{'ratio':>7}{'pack s':>8}{'pack CPU':>9}"
          f"{'unpack s':>9}{'unpk CPU':>9}{links}")
    for row in results["rows"]:
        if row["sample"] == "many-files":
            continue
        paths = "".join(f"  {row[f'critical_path_seconds_{g}gbit']:10.2f}" for g in LINKS)
        print(f"{row['sample'][:21]:<22}{row['method']:<8}{row['bytes'] / 1e6:8.1f}{row['ratio']:7.2f}"
              f"{row['pack_seconds']:8.2f}{row['pack_cpu_seconds']:9.2f}{row['unpack_seconds']:9.2f}"
              f"{row['unpack_cpu_seconds']:9.2f}{paths}")
    print("path@N G s: pack + bytes over an N Gbit/s link + unpack, the critical path for one peer")
    for row in results["rows"]:
        if "other_unpack_seconds" in row:
            print(f"{row['sample']} {row['method']}: unpack {row['unpack_seconds']:.2f} s "
                  f"({row['unpack_cpu_seconds']:.2f} CPU-s) by {row['unpacker']} (murder's choice), "
                  f"{row['other_unpack_seconds']:.2f} s ({row['other_unpack_cpu_seconds']:.2f}) by {row['other_unpacker']}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=200, help="size of each sample release (default 200)")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS),
                        help="packing methods to measure (default: all)")
    parser.add_argument("--samples", nargs="+", choices=("source", "incompressible", "many-files"),
                        default=["source", "incompressible", "many-files"], help="sample releases (default: all)")
    parser.add_argument("--files", type=int, default=20000, help="files of the many-files sample (default 20000)")
    parser.add_argument("--tree", action="append", default=[], metavar="DIR",
                        help="also measure an existing release directory (read only; repeatable), "
                             "e.g. .venv/lib/python3.11/site-packages for a real application tree")
    parser.add_argument("--repeat", type=int, default=1,
                        help="pack and unpack this many times and keep the fastest (default 1)")
    parser.add_argument("--settle", type=float, default=SETTLE,
                        help=f"seconds of quiet before every measurement (default {SETTLE:g})")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated source tree")
    parser.add_argument("--dir", default=None, help="where to make the temporary directory")
    parser.add_argument("--results", default=RESULTS, help="JSON results file (default bench/results/pack-latest.json)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each measurement")
    args = parser.parse_args(argv)
    if args.size_mib < 1:
        parser.error("--size-mib must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    size = args.size_mib * MiB
    workdir = tempfile.mkdtemp(prefix="murder-bench-pack-", dir=args.dir)
    many_dir = args.dir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    results = {
        "benchmark": "pack",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_before": os.getloadavg(),
        "zstd_level": pack_mod.ZSTD_LEVEL,
        "repeat": args.repeat,
        "rows": [],
    }
    try:
        if "many-files" in args.samples:
            root = tempfile.mkdtemp(prefix="murder-bench-many-", dir=many_dir)
            try:
                row = measure_many_files(root, args.files, args.settle, max(args.repeat, 5))
                row["filesystem"] = _filesystem(root)
                results["rows"].append(row)
            finally:
                shutil.rmtree(root, ignore_errors=True)
        for sample in args.samples:
            if sample == "many-files":
                continue
            source = os.path.join(workdir, sample)
            started = time.monotonic()
            if sample == "source":
                files = make_source_tree(source, size, random.Random(args.seed))
            else:
                files = make_incompressible(source, size)
            tree_bytes = tree_bytes_of(source)
            log.info("%s: %d files, %d bytes, made in %.1f s", sample, files, tree_bytes, time.monotonic() - started)
            rows = measure(sample, source, tree_bytes, workdir, args.methods, args.settle, args.repeat)
            for row in rows:
                row["files"] = files
            results["rows"].extend(rows)
            shutil.rmtree(source, ignore_errors=True)
        for tree in args.tree:
            tree = os.path.abspath(tree)
            files = sum(len(names) for _, _, names in os.walk(tree))
            rows = measure(f"tree:{os.path.basename(tree)}", tree, tree_bytes_of(tree), workdir,
                           args.methods, args.settle, args.repeat)
            for row in rows:
                row["files"] = files
            results["rows"].extend(rows)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["loadavg_after"] = os.getloadavg()
    if BUSY:
        results["cpu_busy_median"], results["cpu_busy_max"] = statistics.median(BUSY), max(BUSY)

    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    partial = args.results + ".tmp"
    with open(partial, "w") as handle:
        json.dump(results, handle, indent=2)
        handle.write("\n")
    os.replace(partial, args.results)
    print_table(results)
    if BUSY:
        print(f"the machine was {results['cpu_busy_median']:.2f} busy (median; max {results['cpu_busy_max']:.2f}) "
              f"of its {os.cpu_count()} cores during the measurements")
    for row in results["rows"]:
        if row["sample"] == "many-files":
            print_many_files(row)
    print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
