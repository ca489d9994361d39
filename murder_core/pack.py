"""Pack a release into one artifact, and unpack an artifact safely.

The artifact is a POSIX (pax) tar stream compressed with zstd at level 3.
Why (measured by ``bench/pack.py``, see docs/tuning.md): zstd level 3 packs
and unpacks several times faster than gzip, so on two cores it costs less CPU
than the bytes it saves on the wire for any compressible release, and on an
incompressible one it costs little. ``compression="none"`` turns it off.

Determinism: members are sorted, owners are dropped (uid/gid 0, no names),
times are whole seconds (clamped to ``SOURCE_DATE_EPOCH`` when that is set,
as reproducible builds do) and zstd's output does not depend on timing, so
the same tree packs to the same bytes on the same host and the same release
gets the same info-hash.

Unpacking goes into a staging directory beside the destination
(``.staging-<name>-<random>``, ignored by the release layout) and is renamed
into place only when every member was written. Every member passes
:class:`murder_core.members.MemberGuard` first (no absolute paths, no ``..``,
no links leaving the tree, nothing written through a link, no special files,
no setuid or setgid).

Packing runs GNU tar (:mod:`murder_core.gnu_tar`) on the names this module's
walk checked. Unpacking runs GNU tar too, on the bytes of the members that
libarchive read and the guard passed (:func:`murder_core.libarchive_io.check_into`),
and checks the tree it wrote; without GNU tar libarchive writes the tree
itself (:mod:`murder_core.libarchive_io`), and without libarchive tarfile
does, as it packs without GNU tar: the same rules, the same archive format,
several times slower on trees of many small files (measured by
``bench/pack.py``).
"""
import contextlib
import errno
import fnmatch
import gzip
import hashlib
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass

import zstandard

from murder_core import gnu_tar, libarchive_io, members
from murder_core.config import STAGING_PREFIX
from murder_core.errors import InvalidInput, MurderError, ReleaseError, UnsafeArchive

log = logging.getLogger(__name__)

ZSTD_LEVEL = 3
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Artifact:
    """A packed release on disk."""

    path: str
    size: int
    sha256: str


def sha256_file(path, on_chunk=None):
    """Return the hex SHA-256 of a file; ``on_chunk()`` is called after every MiB."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
            if on_chunk:
                on_chunk()
    return digest.hexdigest()


def _exclusion(excludes):
    """One compiled test for "this name matches an exclude pattern"."""
    if not excludes:
        return lambda name: False
    return re.compile("|".join(fnmatch.translate(pattern) for pattern in excludes)).match


def _clamp():
    """The latest mtime an archive may carry: ``SOURCE_DATE_EPOCH`` when set, as reproducible builds do."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(epoch) if epoch.isdigit() else None


def _mtime(st, clamp):
    mtime = int(st.st_mtime)
    return mtime if clamp is None or mtime < clamp else clamp


def check_source(source, excludes=(".git",), read_files=True):
    """Raise InvalidInput unless the caller can pack ``source``: it exists, is readable and not empty.

    With ``read_files`` every file and directory in it is checked too (no
    byte is read). ``salt-run`` calls it with the operator's own rights
    before the engine, which may run with more, packs anything.
    """
    source = os.path.abspath(source)
    if not os.path.exists(source):
        raise InvalidInput(f"release source {source} does not exist")
    if not os.access(source, os.R_OK):
        raise InvalidInput(f"release source {source} is not readable")
    if not os.path.isdir(source):
        return
    found = False
    for rel, name, directory, st in _walk(source, tuple(excludes or ())):
        found = True
        if not read_files:
            break
        if not stat.S_ISLNK(st.st_mode) and not os.access(name, os.R_OK, dir_fd=directory):
            raise InvalidInput(f"cannot pack {os.path.join(source, rel)}: Permission denied")
    if not found:
        raise InvalidInput(f"release source {source} is empty")


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk(root, excludes):
    """Yield (relative path, name, its directory's fd, lstat) of every entry, sorted by name, depth first.

    A name matching an exclude pattern is left out with everything under it
    (patterns match one path component, as ``.git`` does). Each entry is
    reached from its directory's descriptor, as tar does with openat: the
    kernel looks up one name, not the whole path (about a tenth off packing
    20,000 small files, bench/pack.py), and a directory swapped for a
    symlink while the walk runs is not followed. The descriptor is valid
    until the next entry is asked for.
    """
    excluded = _exclusion(excludes)

    def walk(directory, prefix):
        with os.scandir(directory) as listing:
            entries = sorted((entry for entry in listing if not excluded(entry.name)), key=lambda e: e.name)
        for entry in entries:
            name = entry.name
            st = entry.stat(follow_symlinks=False)
            yield prefix + name, name, directory, st
            if stat.S_ISDIR(st.st_mode):
                below = os.open(name, _DIRECTORY, dir_fd=directory)
                try:
                    yield from walk(below, prefix + name + "/")
                finally:
                    os.close(below)

    top = os.open(root, _DIRECTORY & ~os.O_NOFOLLOW)
    try:
        yield from walk(top, "")
    finally:
        os.close(top)


def _is_utf8(name):
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a byte that is not UTF-8 became a lone surrogate (os.fsdecode)
        return False
    return True


def _members(root, excludes):
    """Yield (relative path, name, its directory's fd, lstat, link target or None) of what may be packed.

    Raises InvalidInput for what may not: a special file, a symlink whose
    target leaves the tree, or a name that is not UTF-8 (the minion's guard
    and libarchive would refuse the artifact).
    """
    for rel, name, directory, st in _walk(root, excludes):
        if not rel.isascii() and not _is_utf8(rel):
            shown = os.fsencode(os.path.join(root, rel)).decode("utf-8", "backslashreplace")  # the byte as \xff
            raise InvalidInput(f"cannot pack {shown}: its name is not UTF-8, which a release's names must be")
        mode = st.st_mode
        target = None
        if stat.S_ISLNK(mode):
            target = os.readlink(name, dir_fd=directory)
            problem = members.link_target_problem(rel, target)
            if problem:
                raise InvalidInput(f"cannot pack {os.path.join(root, rel)}: {problem}")
        elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InvalidInput(f"cannot pack {os.path.join(root, rel)}: only files, directories and symlinks "
                               "go into a release")
        yield rel, name, directory, st, target


def _add_tree(sink, root, excludes):
    clamp = _clamp()
    for rel, name, directory, st, target in _members(root, excludes):
        mode = st.st_mode
        if stat.S_ISREG(mode):
            _add_file(sink, rel, name, st, clamp, directory)
        elif stat.S_ISDIR(mode):
            sink.directory(rel, stat.S_IMODE(mode), _mtime(st, clamp))
        else:
            sink.symlink(rel, target, _mtime(st, clamp))


def _add_file(sink, rel, path, st, clamp, directory=None):
    """Add the regular file ``path`` (relative to the descriptor ``directory`` when given) as ``rel``."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    try:
        sink.file(rel, stat.S_IMODE(st.st_mode), _mtime(st, clamp), st.st_size, fd)
    finally:
        os.close(fd)


class _TarfileWriter:
    """A tar stream written member by member through tarfile: where the host has no GNU tar."""

    def __init__(self, out, compression):
        self._out = out
        if compression == "zstd":
            self._stream = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0).stream_writer(out, closefd=False)
        else:
            self._stream = out
        self._tar = tarfile.open(fileobj=self._stream, mode="w|", format=tarfile.PAX_FORMAT)

    @staticmethod
    def _info(name, kind, perm, mtime, size=0, linkname=""):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime, info.size, info.linkname = kind, perm, mtime, size, linkname
        return info

    def directory(self, name, perm, mtime):
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, perm, mtime))

    def symlink(self, name, target, mtime):
        self._tar.addfile(self._info(name, tarfile.SYMTYPE, 0o777, mtime, linkname=target))

    def file(self, name, perm, mtime, size, fd):
        with os.fdopen(os.dup(fd), "rb") as handle:
            self._tar.addfile(self._info(name, tarfile.REGTYPE, perm, mtime, size), handle)

    def close(self):
        self._tar.close()
        if self._stream is not self._out:
            self._stream.close()


def _is_archive(path):
    return os.path.isfile(path) and path.endswith(ARCHIVE_SUFFIXES)


def pack(source, artifact, excludes=(".git",), compression="zstd"):
    """Pack ``source`` into the file ``artifact`` and return an :class:`Artifact`.

    ``source`` is a directory (its contents become the release), a single file
    (the release holds that one file), or an existing ``.tar``, ``.tar.gz`` or
    ``.tar.zst`` which is checked member by member and shipped unchanged.
    The artifact is written under a temporary name and renamed when complete.
    """
    if compression not in ("zstd", "none"):
        raise InvalidInput(f"unknown compression {compression!r}: use 'zstd' or 'none'")
    source = os.path.abspath(source)
    excludes = tuple(excludes or ())
    check_source(source, excludes, read_files=False)

    parent = os.path.dirname(os.path.abspath(artifact))
    os.makedirs(parent, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".packing-", dir=parent)
    try:
        with os.fdopen(fd, "wb") as out:
            if _is_archive(source):
                check_archive(source)
                with open(source, "rb") as handle:
                    shutil.copyfileobj(handle, out, _CHUNK)
            else:
                _write_tar(out, source, excludes, compression)
        os.replace(partial, artifact)
    except OSError as exc:
        raise MurderError(f"cannot pack {source} into {artifact}: {exc}") from exc
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return Artifact(path=artifact, size=os.path.getsize(artifact), sha256=sha256_file(artifact))


_FALLBACKS_NOTED = set()


def _note_fallback(direction, reason):
    """Say once a process that tarfile stands in for a faster tool, and what that costs."""
    if direction not in _FALLBACKS_NOTED:
        _FALLBACKS_NOTED.add(direction)
        log.warning("%s with tarfile: %s. A release of 20,000 small files %s several times slower this way "
                    "(bench/pack.py).", direction, reason, "packs" if direction == "packing" else "unpacks")


def _write_tar(out, source, excludes, compression):
    tree = os.path.isdir(source)
    if not tree and not stat.S_ISREG(os.stat(source).st_mode):
        raise InvalidInput(f"cannot pack {source}: a release is a directory, a regular file or a tar archive")
    if gnu_tar.program():
        if tree:
            gnu_tar.write(out, source, (rel for rel, _, _, _, _ in _members(source, excludes)),
                          compression, ZSTD_LEVEL, _clamp())
        else:  # the one file under the name it was given, also when that name is a symlink to it
            gnu_tar.write(out, os.path.dirname(source), [os.path.basename(source)], compression, ZSTD_LEVEL,
                          _clamp(), follow_links=True)
        return
    _note_fallback("packing", "there is no GNU tar on the PATH, or it is turned off")
    sink = _TarfileWriter(out, compression)
    try:
        if tree:
            _add_tree(sink, source, excludes)
        else:
            _add_file(sink, os.path.basename(source), os.path.realpath(source), os.stat(source), _clamp())
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            sink.close()
        raise
    sink.close()


def _open_stream(handle):
    """Return a binary stream of tar bytes, whatever the compression."""
    head = handle.read(4)
    handle.seek(0)
    if head.startswith(ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True)
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=handle, mode="rb")
    return handle


_TAR_KINDS = {tarfile.REGTYPE: members.FILE, tarfile.AREGTYPE: members.FILE, tarfile.DIRTYPE: members.DIRECTORY,
              tarfile.SYMTYPE: members.SYMLINK, tarfile.LNKTYPE: members.HARDLINK,
              tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "fifo"}


def _guarded(guard, on_member=None):
    """A tarfile extraction filter applying ``guard`` (and tarfile's own ``data`` filter as a second lock)."""

    def check(member, dest):
        kind = _TAR_KINDS.get(member.type, f"entry of type {member.type!r}")
        checked = guard.check(member.name, kind, member.linkname, member.mode)
        if checked is None:
            return None
        if on_member:
            on_member()
        name, mode = checked
        try:
            member = tarfile.data_filter(member.replace(name=name, deep=False), dest)
        except tarfile.FilterError as exc:
            raise UnsafeArchive(f"refusing archive member {name!r}: {exc}") from exc
        if kind in (members.FILE, members.DIRECTORY):
            member = member.replace(mode=mode, deep=False)
        return member

    return check


def _tarfile_members(path):
    with open(path, "rb") as handle:
        with tarfile.open(fileobj=_open_stream(handle), mode="r|") as tar:
            yield from tar


def check_archive(path):
    """Raise :class:`UnsafeArchive` for the first member that unpacking would refuse."""
    try:
        if libarchive_io.AVAILABLE:
            libarchive_io.check(path)
        else:
            check = _guarded(members.MemberGuard())
            for member in _tarfile_members(path):
                check(member, "/nonexistent-release-root")
    except UnsafeArchive:
        raise
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise UnsafeArchive(f"{path} is not a readable tar archive: {exc}") from exc
    except libarchive_io.Error as exc:
        raise UnsafeArchive(f"{path} is not a readable tar archive: {exc.msg}") from exc


def staging_dir_for(dest):
    """Make and return a fresh staging directory beside ``dest``."""
    parent, name = os.path.split(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-", dir=parent)


# Errors of libarchive that come from the disk, not from the archive.
_DISK_ERRNOS = {errno.ENOENT, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO,
                errno.EMFILE, errno.ENFILE, errno.ENOMEM}


# At most this many tar bytes a member, GNU tar unpacks (measured by bench/pack.py on this project's VMs: it
# saved about 8 us a member on 20,000 small files and cost about 1.4 ns a byte more on 200 MB of large ones,
# the bytes crossing a pipe twice; even at about 6 KB).
SMALL_MEMBER_BYTES = 8 << 10
_IMPLIED_DIRECTORY_MODE = 0o755


def _many_small_members(artifact):
    with open(artifact, "rb") as handle:
        mean = libarchive_io.mean_member_bytes(_open_stream(handle))
    return mean is not None and mean <= SMALL_MEMBER_BYTES


def _extract(artifact, staging, on_member):
    if gnu_tar.program() and libarchive_io.AVAILABLE and _many_small_members(artifact):
        checked = []

        def feed(sink):
            with open(artifact, "rb") as handle:
                checked.append(libarchive_io.check_into(_open_stream(handle), sink))

        gnu_tar.extract(staging, feed, on_member)
        if not checked:  # the feed stopped without a word and tar took what it had as the whole archive
            raise UnsafeArchive(f"cannot unpack {artifact}: not a valid release archive (it ended early)")
        for implied in checked[0].verify_tree(staging):
            # tar ran under a umask of 0 to keep the members' modes exact: a directory that no member
            # names gets the mode libarchive and tarfile give it.
            os.chmod(os.path.join(staging, implied), _IMPLIED_DIRECTORY_MODE)
        return
    if libarchive_io.AVAILABLE:
        libarchive_io.extract(artifact, staging, on_member)
        return
    _note_fallback("unpacking", libarchive_io.MISSING or "libarchive is turned off")
    with open(artifact, "rb") as handle:
        with tarfile.open(fileobj=_open_stream(handle), mode="r|") as tar:
            tar.errorlevel = 2
            tar.extractall(staging, filter=_guarded(members.MemberGuard(), on_member))


def _disk_full(path):
    """"No space left on device; " when the filesystem of ``path`` is full, which tar's "Wrote only" does not say."""
    try:
        disk = os.statvfs(path)
    except OSError:
        return ""
    # btrfs counts no inodes (f_files 0): only a filesystem that counts them can run out.
    if disk.f_bavail * disk.f_frsize < _CHUNK or (disk.f_files and disk.f_favail == 0):
        return f"{os.strerror(errno.ENOSPC)}; "
    return ""


def unpack(artifact, dest, on_member=None):
    """Unpack ``artifact`` into the directory ``dest``, which must not exist yet.

    Members are written into a staging directory beside ``dest`` which is
    renamed to ``dest`` only when the whole archive was written; on any
    failure the staging directory is removed and ``dest`` does not appear.
    ``on_member()`` is called before each member is written.
    """
    dest = os.path.abspath(dest)
    if os.path.lexists(dest):
        raise ReleaseError(f"cannot unpack into {dest}: it already exists")
    staging = staging_dir_for(dest)
    try:
        _extract(artifact, staging, on_member)
        # mkdtemp made the staging directory 0700; the release root gets the usual mode.
        os.chmod(staging, 0o755)
        os.rename(staging, dest)
    except UnsafeArchive:
        raise
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise UnsafeArchive(f"cannot unpack {artifact}: not a valid release archive ({exc})") from exc
    except gnu_tar.TarFailed as exc:
        raise MurderError(f"cannot unpack {artifact} into {dest}: {_disk_full(staging)}{exc}") from exc
    except OSError as exc:
        raise MurderError(f"cannot unpack {artifact} into {dest}: {exc.strerror or exc}") from exc
    except libarchive_io.Error as exc:
        if exc.errno in _DISK_ERRNOS:
            raise MurderError(f"cannot unpack {artifact} into {dest}: {os.strerror(exc.errno)} ({exc.msg})") from exc
        raise UnsafeArchive(f"cannot unpack {artifact}: not a valid release archive ({exc.msg})") from exc
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
    log.debug("unpacked %s into %s", artifact, dest)
    return dest
