"""Pack a release into one artifact, and unpack an artifact safely.

The artifact is a POSIX (pax) tar stream compressed with zstd at level 3.
Why (measured by ``bench/pack.py``, see docs/tuning.md): zstd level 3 packs
and unpacks several times faster than gzip, so on two cores it costs less CPU
than the bytes it saves on the wire for any compressible release, and on an
incompressible one it costs little. ``compression="none"`` turns it off.

Determinism: members are sorted, owners are dropped (uid/gid 0, no names),
times are whole seconds (clamped to ``SOURCE_DATE_EPOCH`` when that is set,
as reproducible builds do) and zstd runs single-threaded, so the same tree
packs to the same bytes and the same release gets the same info-hash.

Unpacking goes into a staging directory beside the destination
(``.staging-<name>-<random>``, ignored by the release layout) and is renamed
into place only when every member was written; tarfile's ``data`` filter
refuses absolute paths, ``..``, links leaving the tree and special files.
"""
import fnmatch
import gzip
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass

import zstandard

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


def _excluded(relpath, excludes):
    return any(fnmatch.fnmatch(part, pattern) for part in relpath.split(os.sep) for pattern in excludes)


def _mtime(st):
    mtime = int(st.st_mtime)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        mtime = min(mtime, int(epoch))
    return mtime


def _tarinfo(name, st, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = _mtime(st)
    info.type = kind
    info.linkname = linkname
    info.size = st.st_size if kind == tarfile.REGTYPE else 0
    return info


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
    for _, full in _walk(source, tuple(excludes or ())):
        found = True
        if not read_files:
            break
        if not os.path.islink(full) and not os.access(full, os.R_OK):
            raise InvalidInput(f"cannot pack {full}: Permission denied")
    if not found:
        raise InvalidInput(f"release source {source} is empty")


def _walk(root, excludes):
    """Yield (relative path, full path) of every entry, sorted, excludes left out."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        kept = []
        for dirname in sorted(dirnames):
            rel = os.path.normpath(os.path.join(rel_dir, dirname))
            if not _excluded(rel, excludes):
                kept.append(dirname)
        dirnames[:] = kept
        entries = sorted(kept + filenames)
        for entry in entries:
            rel = os.path.normpath(os.path.join(rel_dir, entry))
            if not _excluded(rel, excludes):
                yield rel, os.path.join(dirpath, entry)


def _symlink_inside(root, full, target):
    if os.path.isabs(target):
        return False
    resolved = os.path.normpath(os.path.join(os.path.dirname(full), target))
    return resolved == root or resolved.startswith(root + os.sep)


def _add_tree(tar, root, excludes):
    root = os.path.abspath(root)
    for rel, full in _walk(root, excludes):
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(full)
            if not _symlink_inside(root, full, target):
                raise InvalidInput(f"cannot pack {full}: symlink to {target!r} points outside the release")
            # os.walk lists symlinks to directories among dirnames; they stay links.
            tar.addfile(_tarinfo(rel, st, tarfile.SYMTYPE, target))
        elif stat.S_ISDIR(st.st_mode):
            tar.addfile(_tarinfo(rel, st, tarfile.DIRTYPE))
        elif stat.S_ISREG(st.st_mode):
            with open(full, "rb") as handle:
                tar.addfile(_tarinfo(rel, st, tarfile.REGTYPE), handle)
        else:
            raise InvalidInput(f"cannot pack {full}: only files, directories and symlinks go into a release")


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


def _write_tar(out, source, excludes, compression):
    if compression == "zstd":
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0)
        stream = compressor.stream_writer(out, closefd=False)
    else:
        stream = out
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        if os.path.isdir(source):
            _add_tree(tar, source, excludes)
        else:
            st = os.stat(source)
            with open(source, "rb") as handle:
                tar.addfile(_tarinfo(os.path.basename(source), st, tarfile.REGTYPE), handle)
    if stream is not out:
        stream.close()


def _open_stream(handle):
    """Return a binary stream of tar bytes, whatever the compression."""
    head = handle.read(4)
    handle.seek(0)
    if head.startswith(ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True)
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=handle, mode="rb")
    return handle


def _keep_mode(member, dest):
    """tarfile's ``data`` filter for safety, but keep the permission bits.

    The filter drops group/other write bits; a release must carry its modes
    exactly. setuid, setgid and sticky bits stay dropped: nothing in a
    release should gain privileges by being deployed.
    """
    if os.path.isabs(member.name):
        # The data filter would strip the slash; a release has no absolute paths.
        raise UnsafeArchive(f"refusing archive member {member.name!r}: absolute path")
    try:
        checked = tarfile.data_filter(member, dest)
    except tarfile.FilterError as exc:
        raise UnsafeArchive(f"refusing archive member {member.name!r}: {exc}") from exc
    if checked is None:
        return None
    if member.isreg() or member.isdir():
        checked = checked.replace(mode=stat.S_IMODE(member.mode) & 0o777, deep=False)
    return checked


def _announcing(on_member):
    def keep_mode(member, dest):
        on_member()
        return _keep_mode(member, dest)

    return keep_mode


def check_archive(path):
    """Raise :class:`UnsafeArchive` for the first member that unpacking would refuse."""
    with open(path, "rb") as handle:
        try:
            with tarfile.open(fileobj=_open_stream(handle), mode="r|") as tar:
                for member in tar:
                    _keep_mode(member, "/nonexistent-release-root")
        except tarfile.TarError as exc:
            raise UnsafeArchive(f"{path} is not a readable tar archive: {exc}") from exc


def staging_dir_for(dest):
    """Make and return a fresh staging directory beside ``dest``."""
    parent, name = os.path.split(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-", dir=parent)


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
        with open(artifact, "rb") as handle:
            with tarfile.open(fileobj=_open_stream(handle), mode="r|") as tar:
                tar.errorlevel = 2
                tar.extractall(staging, filter=_keep_mode if on_member is None else _announcing(on_member))
        # mkdtemp made the staging directory 0700; the release root gets the usual mode.
        os.chmod(staging, 0o755)
        os.rename(staging, dest)
    except UnsafeArchive:
        raise
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise UnsafeArchive(f"cannot unpack {artifact}: not a valid release archive ({exc})") from exc
    except OSError as exc:
        raise MurderError(f"cannot unpack {artifact} into {dest}: {exc.strerror or exc}") from exc
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
    log.debug("unpacked %s into %s", artifact, dest)
    return dest
