"""Pack and unpack: the tree round-trips exactly, deterministically, and safely."""
import contextlib
import io
import os
import re
import stat
import subprocess
import tarfile
import threading

import pytest
import zstandard

from murder_core import gnu_tar, libarchive_io, pack
from murder_core.errors import InvalidInput, MurderError, ReleaseError, UnsafeArchive


def make_tree(root):
    """A tree with every kind of entry a release carries."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "run").write_text("#!/bin/sh\necho run\n")
    (root / "bin" / "run").chmod(0o750)
    (root / "conf").mkdir()
    (root / "conf" / "app.yaml").write_text("a: 1\n")
    (root / "conf" / "app.yaml").chmod(0o640)
    (root / "group-writable").write_text("shared\n")
    (root / "group-writable").chmod(0o664)
    (root / "empty").mkdir()
    (root / "name with spaces.txt").write_text("spaces\n")
    (root / "ünïcødé-名前.txt").write_text("unicode\n")
    (root / "link-to-file").symlink_to("conf/app.yaml")
    (root / "link-to-dir").symlink_to("bin")
    (root / "conf" / "up-and-back").symlink_to("../bin/run")
    (root / "data.bin").write_bytes(os.urandom(300_000))
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


def snapshot(root):
    """{relative path: (kind, mode, content or link target)} of a tree."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ("link", None, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ("dir", stat.S_IMODE(st.st_mode), None)
            else:
                with open(full, "rb") as handle:
                    entries[rel] = ("file", stat.S_IMODE(st.st_mode), handle.read())
    return entries


@pytest.fixture(autouse=True, params=["native", "libarchive", "libarchive-threaded", "tarfile"])
def backend(request, monkeypatch):
    """Every test runs on each path: GNU tar (unpacking what libarchive checked), libarchive without GNU tar,
    and tarfile.

    libarchive runs alone in its process and beside another Python thread: alone, it names members relative
    to the staging directory; beside another thread (a Salt job with ``multiprocessing: False``) it names them
    absolutely. None leaves the working directory changed.
    """
    if request.param != "tarfile" and not libarchive_io.AVAILABLE:
        pytest.skip(libarchive_io.MISSING)
    if request.param.startswith("native") and not gnu_tar.program():
        pytest.skip("GNU tar is not on the PATH")
    if request.param == "tarfile":
        monkeypatch.setattr(libarchive_io, "AVAILABLE", False)
    if request.param == "native":
        # GNU tar unpacks every archive here, not only those of small files (test_the_unpacker_suits_the_members).
        monkeypatch.setattr(pack, "SMALL_MEMBER_BYTES", float("inf"))
    else:
        monkeypatch.setattr(gnu_tar, "program", lambda: "")
    if not request.param.endswith("-threaded"):
        # libarchive: as in a murder.peer job, whatever threads pytest's plugins run.
        monkeypatch.setattr(libarchive_io, "_alone", lambda: request.param != "tarfile")
    cwd = os.getcwd()
    with other_thread_running(request.param.endswith("-threaded")):
        yield request.param
    assert os.getcwd() == cwd


# Tests of GNU tar's part alone (the gate, tar's messages, the choice of unpacker): the other backends have none.
NATIVE_ONLY = pytest.mark.parametrize("backend", ["native"], indirect=True)


@contextlib.contextmanager
def other_thread_running(wanted=True):
    if not wanted:
        yield
        return
    release = threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    try:
        yield
    finally:
        release.set()
        other.join()


def test_libarchive_names_members_relative_to_the_staging_directory_only_when_alone(tmp_path, backend):
    staging = tmp_path / "staging"
    staging.mkdir()
    cwd = os.getcwd()
    with libarchive_io._names_under(str(staging)) as prefix:
        if backend not in ("native", "libarchive"):  # another Python thread runs, or tarfile's fixture says so
            assert prefix == os.path.realpath(staging) + "/" and os.getcwd() == cwd
        else:
            assert prefix == "" and os.getcwd() == os.path.realpath(staging)
    assert os.getcwd() == cwd
    with pytest.raises(RuntimeError), libarchive_io._names_under(str(staging)):
        raise RuntimeError("a member refused")
    assert os.getcwd() == cwd


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "src")


def test_round_trip_keeps_every_kind_of_entry(tree, tmp_path):
    artifact = pack.pack(str(tree), str(tmp_path / "out" / "app.tar.zst"))
    dest = tmp_path / "releases" / "r1"
    pack.unpack(artifact.path, str(dest))

    expected = {k: v for k, v in snapshot(tree).items() if not k.startswith(".git")}
    assert snapshot(dest) == expected
    assert ".git" not in os.listdir(dest)
    assert os.path.islink(dest / "link-to-dir")
    assert (dest / "link-to-dir" / "run").read_text() == "#!/bin/sh\necho run\n"
    assert stat.S_IMODE(os.stat(dest / "group-writable").st_mode) == 0o664
    assert artifact.sha256 == pack.sha256_file(artifact.path)
    assert artifact.size == os.path.getsize(artifact.path)


def test_same_tree_packs_to_same_bytes(tree, tmp_path):
    first = pack.pack(str(tree), str(tmp_path / "a.tar.zst"))
    second = pack.pack(str(tree), str(tmp_path / "b.tar.zst"))
    assert first.sha256 == second.sha256
    (tree / "bin" / "run").write_text("#!/bin/sh\necho changed\n")
    third = pack.pack(str(tree), str(tmp_path / "c.tar.zst"))
    assert third.sha256 != first.sha256



def test_every_member_carries_its_own_mode_mtime_and_size(tmp_path):
    # The libarchive writer sets a field only when it differs from the member before: members that
    # share some fields and not others, around a symlink (whose entry is cleared), must all come out whole.
    source = tmp_path / "src"
    source.mkdir()
    layout = [("a", 0o644, 1_600_000_000, b"one"), ("b", 0o644, 1_600_000_000, b"two!"),
              ("c-link", None, 1_600_000_100, "a"), ("d", 0o644, 1_600_000_100, b"three"),
              ("e", 0o755, 1_600_000_200, b"three"), ("f-dir", 0o750, 1_600_000_200, None),
              ("g", 0o600, 1_600_000_000, b"")]
    for name, mode, mtime, body in layout:
        path = source / name
        if mode is None:
            path.symlink_to(body)
        elif body is None:
            path.mkdir()
        else:
            path.write_bytes(body)
        if mode is not None:
            path.chmod(mode)
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    artifact = pack.pack(str(source), str(tmp_path / "a.tar.zst"))
    with open(artifact.path, "rb") as handle:
        raw = zstandard.ZstdDecompressor().stream_reader(handle).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        found = {member.name: member for member in archive.getmembers()}
    assert sorted(found) == sorted(name for name, *_ in layout)
    for name, mode, mtime, body in layout:
        member = found[name]
        assert member.mtime == mtime, name
        if mode is None:
            assert member.issym() and member.linkname == body and member.size == 0, name
        elif body is None:
            assert member.isdir() and member.mode == mode and member.size == 0, name
        else:
            assert member.isfile() and member.mode == mode and member.size == len(body), name

def test_excludes_are_configurable(tree, tmp_path):
    artifact = pack.pack(str(tree), str(tmp_path / "a.tar.zst"), excludes=["*.bin", "conf"])
    pack.unpack(artifact.path, str(tmp_path / "r"))
    names = set(os.listdir(tmp_path / "r"))
    assert ".git" in names and "data.bin" not in names and "conf" not in names


def test_unpack_and_hashing_report_as_they_go(tree, tmp_path):
    """What the minion's heartbeat hangs on while it verifies and unpacks."""
    artifact = pack.pack(str(tree), str(tmp_path / "app.tar"), compression="none")
    calls = []
    pack.unpack(artifact.path, str(tmp_path / "dest"), on_member=lambda: calls.append("member"))
    with tarfile.open(artifact.path) as tar:
        assert len(calls) == len(tar.getmembers()) > 3
    big = tmp_path / "big"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 1))
    chunks = []
    assert pack.sha256_file(str(big), on_chunk=lambda: chunks.append(1)) == pack.sha256_file(str(big))
    assert len(chunks) == 4


def test_uncompressed_artifact_round_trips(tree, tmp_path):
    artifact = pack.pack(str(tree), str(tmp_path / "a.tar"), compression="none")
    with open(artifact.path, "rb") as handle:
        assert not handle.read(4).startswith(pack.ZSTD_MAGIC)
    pack.unpack(artifact.path, str(tmp_path / "r"))
    assert (tmp_path / "r" / "conf" / "app.yaml").read_text() == "a: 1\n"


def test_single_file_source(tmp_path):
    source = tmp_path / "tool.sh"
    source.write_text("echo hi\n")
    source.chmod(0o755)
    artifact = pack.pack(str(source), str(tmp_path / "a.tar.zst"))
    pack.unpack(artifact.path, str(tmp_path / "r"))
    assert os.listdir(tmp_path / "r") == ["tool.sh"]
    assert stat.S_IMODE(os.stat(tmp_path / "r" / "tool.sh").st_mode) == 0o755


def test_a_single_file_named_by_a_symlink_is_packed_as_the_file_under_the_symlinks_name(tmp_path):
    (tmp_path / "tool-1.2.sh").write_text("echo hi\n")
    (tmp_path / "tool.sh").symlink_to("tool-1.2.sh")
    artifact = pack.pack(str(tmp_path / "tool.sh"), str(tmp_path / "a.tar.zst"))
    pack.unpack(artifact.path, str(tmp_path / "r"))
    assert os.listdir(tmp_path / "r") == ["tool.sh"]
    assert not os.path.islink(tmp_path / "r" / "tool.sh")
    assert (tmp_path / "r" / "tool.sh").read_text() == "echo hi\n"


def test_source_date_epoch_clamps_every_newer_mtime(tree, tmp_path, monkeypatch):
    os.utime(tree / "conf" / "app.yaml", (1_000_000_000, 1_000_000_000))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1500000000")
    artifact = pack.pack(str(tree), str(tmp_path / "a.tar.zst"))
    with open(artifact.path, "rb") as handle, tarfile.open(fileobj=pack._open_stream(handle), mode="r|") as tar:
        mtimes = {member.name: member.mtime for member in tar}
    assert mtimes["conf/app.yaml"] == 1_000_000_000
    assert mtimes["bin/run"] == 1_500_000_000 and max(mtimes.values()) == 1_500_000_000


def test_gnu_tar_writes_the_artifact_where_the_host_has_it(tree, tmp_path, monkeypatch, backend):
    calls = []
    write = gnu_tar.write
    monkeypatch.setattr(gnu_tar, "write", lambda *args, **kwargs: (calls.append(args[1]), write(*args, **kwargs)))
    pack.pack(str(tree), str(tmp_path / "a.tar.zst"))
    assert calls == ([str(tree)] if backend == "native" else [])


@NATIVE_ONLY
def test_a_file_gone_before_tar_reads_it_fails_the_pack_in_tars_words(tree, tmp_path, monkeypatch, backend):
    walk = pack._walk

    def racing_walk(root, excludes):
        for rel, name, directory, st in walk(root, excludes):
            yield rel, name, directory, st
            if rel == "data.bin":  # its name is on its way to tar, which will not find it
                os.unlink(name, dir_fd=directory)

    monkeypatch.setattr(pack, "_walk", racing_walk)
    with pytest.raises(MurderError, match=r"tar failed \(.*data\.bin.*No such file"):
        pack.pack(str(tree), str(tmp_path / "a.tar.zst"))
    assert not (tmp_path / "a.tar.zst").exists()
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".packing-")]


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz")])
def test_existing_archive_is_shipped_unchanged(tree, tmp_path, suffix, mode):
    source = tmp_path / f"given{suffix}"
    with tarfile.open(source, mode) as tar:
        tar.add(tree / "conf", arcname="conf")
    artifact = pack.pack(str(source), str(tmp_path / "a"))
    assert artifact.sha256 == pack.sha256_file(str(source))
    pack.unpack(artifact.path, str(tmp_path / "r"))
    assert (tmp_path / "r" / "conf" / "app.yaml").read_text() == "a: 1\n"


def test_existing_zstd_archive(tree, tmp_path):
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tar:
        tar.add(tree / "bin", arcname="bin")
    source = tmp_path / "given.tar.zst"
    source.write_bytes(zstandard.ZstdCompressor().compress(plain.getvalue()))
    artifact = pack.pack(str(source), str(tmp_path / "a"))
    pack.unpack(artifact.path, str(tmp_path / "r"))
    assert os.access(tmp_path / "r" / "bin" / "run", os.X_OK)


@pytest.mark.parametrize(
    "make_source,message",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "is empty"),
    ],
)
@pytest.mark.bad_input
def test_bad_sources_are_refused(tmp_path, make_source, message):
    with pytest.raises(InvalidInput, match=message):
        pack.pack(str(make_source(tmp_path)), str(tmp_path / "out" / "a.tar.zst"))
    assert not (tmp_path / "out" / "a.tar.zst").exists()


@pytest.mark.bad_input
def test_source_symlink_leaving_the_tree_is_refused(tree, tmp_path):
    (tree / "escape").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput, match="escape"):
        pack.pack(str(tree), str(tmp_path / "out" / "a.tar.zst"))
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.bad_input
def test_a_name_that_is_not_utf8_is_refused_when_packed(tree, tmp_path):
    # Packed, such a name would reach every minion and fail there: libarchive cannot name the member.
    with open(os.path.join(os.fsencode(tree), b"bad\xffname"), "w") as handle:
        handle.write("x")
    with pytest.raises(InvalidInput, match=r"src/bad\\xffname: its name is not UTF-8"):
        pack.pack(str(tree), str(tmp_path / "a.tar.zst"))
    assert not (tmp_path / "a.tar.zst").exists()
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".packing-")]


def test_source_fifo_is_refused(tree, tmp_path):
    os.mkfifo(tree / "pipe")
    with pytest.raises(InvalidInput, match="pipe"):
        pack.pack(str(tree), str(tmp_path / "a.tar.zst"))


def _archive(path, *members):
    """Write a plain tar with the given TarInfo members (regular ones get 3 bytes)."""
    with tarfile.open(path, "w") as tar:
        for info in members:
            if info.isreg():
                info.size = 3
                tar.addfile(info, io.BytesIO(b"bad"))
            else:
                tar.addfile(info)
    return str(path)


def _member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


UNSAFE = {
    "absolute path": [_member("/tmp/murder-evil")],
    "dot-dot path": [_member("../murder-evil")],
    "nested dot-dot": [_member("ok/../../murder-evil")],
    "symlink escaping": [_member("ln", tarfile.SYMTYPE, "../../outside")],
    "absolute symlink": [_member("ln", tarfile.SYMTYPE, "/etc")],
    "write through symlink": [_member("ln", tarfile.SYMTYPE, ".."), _member("ln/murder-evil")],
    "hard link escaping": [_member("hl", tarfile.LNKTYPE, "../outside")],
    "hard link through a symlink": [_member("ln", tarfile.SYMTYPE, "."), _member("hl", tarfile.LNKTYPE, "ln/good.txt")],
    # Harmless when written, it would escape once a later member makes "a" a link to the root's parent level.
    "symlink climbing after a name": [_member("x", tarfile.SYMTYPE, "a/..")],
    "write through an inside symlink": [_member("ln", tarfile.SYMTYPE, "."), _member("ln/murder-evil")],
    "member written twice": [_member("twice.txt"), _member("twice.txt")],
    "symlink replaced by a directory": [_member("sub", tarfile.SYMTYPE, "."), _member("sub", tarfile.DIRTYPE)],
    "character device": [_member("dev", tarfile.CHRTYPE)],
    "block device": [_member("blk", tarfile.BLKTYPE)],
    "fifo": [_member("fifo", tarfile.FIFOTYPE)],
}


def _zstd(path):
    """Compress the file ``path`` into ``path.zst`` and return the new path."""
    target = str(path) + ".zst"
    with open(path, "rb") as source, open(target, "wb") as sink:
        zstandard.ZstdCompressor(level=3).copy_stream(source, sink)
    return target


@pytest.mark.bad_input
@pytest.mark.parametrize("compressed", [False, True], ids=["tar", "tar.zst"])
@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_archives_are_refused_with_nothing_written(tmp_path, case, compressed):
    members = UNSAFE[case]
    # A good member first, so that a partial extraction would leave traces.
    archive = _archive(tmp_path / "evil.tar", _member("good.txt"), *members)
    if compressed:
        archive = _zstd(archive)
    base = tmp_path / "base"
    releases = base / "releases"
    releases.mkdir(parents=True)
    before = set(os.listdir(tmp_path))

    with pytest.raises(UnsafeArchive) as raised:
        pack.unpack(archive, str(releases / "r1"))

    assert any(repr(m.name) in str(raised.value) for m in members)
    assert os.listdir(releases) == []
    assert set(os.listdir(tmp_path)) == before
    assert not os.path.lexists("/tmp/murder-evil")
    with pytest.raises(UnsafeArchive):
        pack.pack(archive, str(tmp_path / "out.tar"))


@pytest.mark.bad_input
def test_truncated_archive_leaves_nothing(tree, tmp_path):
    artifact = pack.pack(str(tree), str(tmp_path / "a.tar.zst"))
    data = open(artifact.path, "rb").read()
    (tmp_path / "cut.tar.zst").write_bytes(data[: len(data) // 2])
    releases = tmp_path / "releases"
    with pytest.raises(MurderError):
        pack.unpack(str(tmp_path / "cut.tar.zst"), str(releases / "r1"))
    assert os.listdir(releases) == []


def _unzstd_threads():
    return [thread for thread in threading.enumerate() if thread.name == "murder-unzstd"]


def _threads(name):
    return [thread for thread in threading.enumerate() if thread.name == name]


def test_a_zstd_artifact_is_decompressed_beside_the_member_loop(tree, tmp_path, monkeypatch, backend):
    """GNU tar gets it from a thread that decompresses and checks; libarchive from a thread that decompresses."""
    # First in the archive, and more blocks than the thread may keep ready: it still runs when the members come.
    (tree / "aaa-big.bin").write_bytes(os.urandom(8 << 20))
    artifact = pack.pack(str(tree), str(tmp_path / "a.tar.zst"))
    checked_on = []
    check_into = libarchive_io.check_into
    monkeypatch.setattr(libarchive_io, "check_into", lambda *args: (
        checked_on.append(threading.current_thread().name), check_into(*args))[1])
    seen = []
    pack.unpack(artifact.path, str(tmp_path / "r1"), on_member=lambda: seen.append(len(_threads("murder-unzstd"))))
    if backend == "native":
        assert checked_on == [gnu_tar.FEEDER_THREAD] and seen and max(seen) == 0
    elif backend == "tarfile":  # the fallback decompresses in its own loop
        assert checked_on == [] and seen and max(seen) == 0
    else:
        assert checked_on == [] and seen[0] == 1 and max(seen) == 1
    assert _threads("murder-unzstd") == [] and _threads(gnu_tar.FEEDER_THREAD) == []
    assert (tmp_path / "r1" / "aaa-big.bin").read_bytes() == (tree / "aaa-big.bin").read_bytes()
    assert (tmp_path / "r1" / "bin" / "run").read_text() == "#!/bin/sh\necho run\n"


@pytest.mark.bad_input
def test_a_member_refused_early_in_a_large_zstd_archive_stops_the_decompression(tmp_path):
    # The refused member comes before megabytes that no longer fit in the pipe: the unpack must not wait for them.
    big = tarfile.TarInfo("big.bin")
    big.size, big.mode = 8 << 20, 0o644
    plain = tmp_path / "evil.tar"
    with tarfile.open(plain, "w") as tar:
        tar.addfile(_member("../murder-evil"))
        tar.addfile(big, io.BytesIO(os.urandom(big.size)))
    archive = _zstd(plain)
    outcome = []

    def unpack():
        try:
            pack.unpack(archive, str(tmp_path / "releases" / "r1"))
        except UnsafeArchive as exc:
            outcome.append(exc)

    worker = threading.Thread(target=unpack, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the unpack hung after refusing a member"
    assert outcome and "murder-evil" in str(outcome[0])
    assert _unzstd_threads() == []
    assert os.listdir(tmp_path / "releases") == []


@pytest.mark.bad_input
def test_a_corrupt_zstd_stream_is_not_a_valid_release_archive(tree, tmp_path):
    artifact = pack.pack(str(tree), str(tmp_path / "a.tar.zst"))
    data = bytearray(open(artifact.path, "rb").read())
    # The frame's header and its first block: a corrupt block further on may decompress to wrong bytes
    # without an error (the frame has no checksum); the artifact's SHA-256, checked before, catches those.
    for offset in range(4, 40):
        data[offset] ^= 0xFF
    (tmp_path / "bad.tar.zst").write_bytes(bytes(data))
    with pytest.raises(UnsafeArchive, match="not a valid release archive"):
        pack.unpack(str(tmp_path / "bad.tar.zst"), str(tmp_path / "releases" / "r1"))
    assert os.listdir(tmp_path / "releases") == []
    assert _unzstd_threads() == []


def test_unpack_refuses_existing_destination(tree, tmp_path):
    artifact = pack.pack(str(tree), str(tmp_path / "a.tar.zst"))
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "keep").write_text("mine")
    with pytest.raises(ReleaseError, match="already exists"):
        pack.unpack(artifact.path, str(tmp_path / "r1"))
    assert (tmp_path / "r1" / "keep").read_text() == "mine"


def test_setuid_and_setgid_bits_are_dropped(tmp_path):
    member = _member("bin/tool")
    member.mode = 0o6755
    archive = _archive(tmp_path / "suid.tar", member)
    pack.unpack(archive, str(tmp_path / "r1"))
    assert stat.S_IMODE(os.stat(tmp_path / "r1" / "bin" / "tool").st_mode) == 0o755


def test_gnu_tar_unpacks_where_the_host_has_it(tree, tmp_path, monkeypatch, backend):
    calls = []
    extract = gnu_tar.extract
    monkeypatch.setattr(gnu_tar, "extract", lambda *args, **kwargs: (calls.append(1), extract(*args, **kwargs)))
    artifact = pack.pack(str(tree), str(tmp_path / "a.tar.zst"))
    pack.unpack(artifact.path, str(tmp_path / "r1"))
    assert calls == ([1] if backend == "native" else [])
    assert snapshot(tmp_path / "r1") == {path: entry for path, entry in snapshot(tree).items()
                                         if not path.startswith(".git")}


@pytest.mark.parametrize("shape,by_tar", [("many small files", True), ("a few large ones", False)])
@NATIVE_ONLY
def test_the_unpacker_suits_the_members(tmp_path, monkeypatch, backend, shape, by_tar):
    monkeypatch.setattr(pack, "SMALL_MEMBER_BYTES", 8 << 10)  # the default, which the fixture lifted
    source = tmp_path / "src"
    source.mkdir()
    for index in range(300 if by_tar else 3):
        (source / f"f{index:03d}").write_bytes(os.urandom(1000 if by_tar else 400_000))
    artifact = pack.pack(str(source), str(tmp_path / "a.tar.zst"))
    calls = []
    extract = gnu_tar.extract
    monkeypatch.setattr(gnu_tar, "extract", lambda *args, **kwargs: (calls.append(1), extract(*args, **kwargs)))
    pack.unpack(artifact.path, str(tmp_path / "r1"))
    assert calls == ([1] if by_tar else [])
    assert snapshot(tmp_path / "r1") == snapshot(source)


def _tar_that_also_writes(monkeypatch, write):
    """GNU tar as if it had read a header otherwise than the check did: ``write(staging)`` adds to its work."""
    extract = gnu_tar.extract

    def differing(staging, *args, **kwargs):
        extract(staging, *args, **kwargs)
        write(staging)

    monkeypatch.setattr(gnu_tar, "extract", differing)


@pytest.mark.bad_input
@pytest.mark.parametrize("differs,named", [
    (lambda staging: open(os.path.join(staging, "smuggled"), "w").close(), "'smuggled' (file) is no member"),
    (lambda staging: os.mkfifo(os.path.join(staging, "bin", "pipe")), "'bin/pipe' (special file)"),
    (lambda staging: (os.unlink(os.path.join(staging, "link-to-dir")),
                      os.symlink("..", os.path.join(staging, "link-to-dir"))), "'link-to-dir' points at '..'"),
    (lambda staging: (os.unlink(os.path.join(staging, "conf", "app.yaml")),
                      os.mkdir(os.path.join(staging, "conf", "app.yaml"))), "'conf/app.yaml' is a directory"),
    (lambda staging: os.unlink(os.path.join(staging, "data.bin")), "'data.bin' was not written"),
], ids=["extra file", "fifo", "symlink target", "kind", "missing"])
@NATIVE_ONLY
def test_a_tree_unlike_the_checked_archive_is_refused_with_nothing_written(tree, tmp_path, monkeypatch, backend,
                                                                          differs, named):
    artifact = pack.pack(str(tree), str(tmp_path / "a.tar.zst"))
    _tar_that_also_writes(monkeypatch, differs)
    releases = tmp_path / "releases"
    with pytest.raises(UnsafeArchive, match="refusing the unpacked release: .*" + re.escape(named)):
        pack.unpack(artifact.path, str(releases / "r1"))
    assert os.listdir(releases) == []


@pytest.mark.bad_input
@NATIVE_ONLY
def test_the_unpacking_tar_gets_no_byte_of_a_refused_member(tmp_path, backend):
    big = tarfile.TarInfo("big.bin")
    # The refused member's headers (a pax header with its long name, then its own) begin 512 bytes before a
    # block of the gate ends: libarchive reads the next block before it knows the member.
    assert (3 << 20) % libarchive_io._TEE_BLOCK_BYTES == 0
    big.size, big.mode = (3 << 20) - 3 * 512, 0o644
    evil = "murder-evil-link-" + "x" * 100
    plain = tmp_path / "evil.tar"
    with tarfile.open(plain, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_member("dir", tarfile.DIRTYPE))
        tar.addfile(big, io.BytesIO(b"\xab" * big.size))
        tar.addfile(_member(evil, tarfile.SYMTYPE, "/etc"))
        tar.addfile(_member("after.txt"), io.BytesIO(b""))
    sink = io.BytesIO()
    with open(plain, "rb") as stream, pytest.raises(UnsafeArchive, match="murder-evil-link"):
        libarchive_io.check_into(stream, sink)
    given = sink.getvalue()
    # Nothing of the refused member or after it went on; the big file's data did, but for the last block or two.
    with tarfile.open(plain) as tar:
        refused = next(member for member in tar if member.name == evil)
    assert len(given) <= refused.offset
    assert given.count(b"\xab") >= big.size - 2 * libarchive_io._TEE_BLOCK_BYTES
    assert b"murder-evil-link" not in given and b"after.txt" not in given


@pytest.mark.bad_input
@NATIVE_ONLY
def test_the_gate_reads_the_stream_as_tar_takes_it_not_as_a_compressed_one(tmp_path, backend):
    """A stream that is compressed once more is no archive to tar: libarchive must not decompress it for the check."""
    inner = tmp_path / "inner.tar"
    with tarfile.open(inner, "w") as tar:
        tar.addfile(_member("ok.txt"), io.BytesIO(b"bad"))
    sink = io.BytesIO()
    with open(_zstd(inner), "rb") as stream, pytest.raises(libarchive_io.Error):
        libarchive_io.check_into(stream, sink)
    assert sink.getvalue() == b""


@NATIVE_ONLY
def test_the_gate_never_opens_beyond_the_archive_for_a_sparse_file(tmp_path, monkeypatch, backend):
    """A sparse file's size is not the bytes it takes in the archive."""
    source = tmp_path / "src"
    source.mkdir()
    with open(source / "holes.bin", "wb") as handle:
        handle.truncate(64 << 20)
        handle.write(b"data")
    (source / "after.txt").write_text("after\n")
    archive = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-C", str(source), "-cf", str(archive), "holes.bin", "after.txt"], check=True)
    opened = []

    class Tee(libarchive_io._Tee):
        @property
        def allowed(self):
            return opened[-1] if opened else 0

        @allowed.setter
        def allowed(self, value):
            opened.append(value)

    monkeypatch.setattr(libarchive_io, "_Tee", Tee)
    sink = io.BytesIO()
    with open(archive, "rb") as stream:
        libarchive_io.check_into(stream, sink)
    assert sink.getvalue() == archive.read_bytes()
    assert max(opened) <= os.path.getsize(archive)


def test_directories_no_member_names_get_the_usual_mode(tmp_path, backend):
    archive = _archive(tmp_path / "deep.tar", _member("lib/python/pkg/mod.py"))
    umask = os.umask(0o022)
    try:
        pack.unpack(archive, str(tmp_path / "r1"))
    finally:
        os.umask(umask)
    for directory in ("lib", "lib/python", "lib/python/pkg"):
        assert stat.S_IMODE(os.stat(tmp_path / "r1" / directory).st_mode) == 0o755, directory


@NATIVE_ONLY
def test_the_gate_passes_a_large_file_on_before_the_next_header_is_read(tmp_path, backend):
    """The bytes held back are at most a few blocks, whatever the size of a member."""
    big = tarfile.TarInfo("big.bin")
    big.size, big.mode = 16 << 20, 0o644
    plain = tmp_path / "big.tar"
    with tarfile.open(plain, "w") as tar:
        tar.addfile(big, io.BytesIO(os.urandom(big.size)))
    held = []

    class Sink:
        def __init__(self):
            self.size = 0

        def write(self, block):
            self.size += len(block)

    sink = Sink()
    with open(plain, "rb") as source:

        class Stream:
            def read(self, size):
                block = source.read(size)
                held.append(source.tell() - sink.size)  # bytes read but not yet passed on
                return block

        libarchive_io.check_into(Stream(), sink)
    assert sink.size == os.path.getsize(plain)
    assert max(held) <= 4 * libarchive_io._TEE_BLOCK_BYTES


@pytest.mark.fault
@NATIVE_ONLY
def test_a_tar_that_stops_reading_fails_the_unpack_in_its_own_words(tmp_path, monkeypatch, backend):
    """Not as a broken archive: the gate's broken pipe is tar's doing, and tar says why."""
    source = tmp_path / "src"
    source.mkdir()
    for index in range(2000):  # 3 MB of tar: more than tar's pipe holds
        (source / f"f{index:04d}").write_bytes(os.urandom(1000))
    artifact = pack.pack(str(source), str(tmp_path / "a.tar.zst"))
    crashing = tmp_path / "tar"
    crashing.write_text("#!/bin/sh\nhead -c 4096 >/dev/null\necho 'tar: simulated crash' >&2\nexit 2\n")
    crashing.chmod(0o755)
    monkeypatch.setattr(gnu_tar, "program", lambda: str(crashing))
    with pytest.raises(MurderError, match=r"cannot unpack .*: tar failed \(tar: simulated crash\)") as raised:
        pack.unpack(artifact.path, str(tmp_path / "releases" / "r1"))
    assert not isinstance(raised.value, UnsafeArchive)
    assert os.listdir(tmp_path / "releases") == []


def test_tar_gets_no_option_from_the_environment(tree, tmp_path, monkeypatch):
    # TAR_OPTIONS would make tar keep owners and setuid bits; the unpack must not inherit it.
    monkeypatch.setenv("TAR_OPTIONS", "--same-permissions --same-owner --to-stdout")
    member = _member("bin/tool")
    member.mode = 0o6755
    archive = _archive(tmp_path / "suid.tar", member)
    pack.unpack(archive, str(tmp_path / "r1"))
    assert stat.S_IMODE(os.stat(tmp_path / "r1" / "bin" / "tool").st_mode) == 0o755


@pytest.mark.fault
def test_a_full_disk_is_named_and_leaves_no_release(tmp_path):
    """A write that fails mid-member (libarchive reports it as a mere warning) must fail the whole unpack."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    source = tmp_path / "src"
    source.mkdir()
    (source / "big").write_bytes(os.urandom(5 * 1024 * 1024))
    artifact = pack.pack(str(source), str(tmp_path / "a.tar.zst"))
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(full)], check=True)
    try:
        with pytest.raises(MurderError, match="No space left on device"):
            pack.unpack(artifact.path, str(full / "r1"))
        assert os.listdir(full) == []
        # And packing onto a full disk leaves no artifact either (random bytes do not compress).
        (source / "big2").write_bytes(os.urandom(1024 * 1024))
        with pytest.raises(MurderError):
            pack.pack(str(source), str(full / "out.tar.zst"))
        assert os.listdir(full) == []
    finally:
        subprocess.run(["umount", str(full)], check=True)
