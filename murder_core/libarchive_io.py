"""Release archives read through libarchive: the check in front of GNU tar, or the unpacker where there is none.

``libarchive-c`` loads the system's libarchive (Debian's ``libarchive13``).
Why not tarfile: on a release of 20,000 small files tarfile with its
``data`` filter spends most of its time in Python per member (measured by
``bench/pack.py --many-files``); here the format, the compression and the
writing to disk run in C, and Python only checks each member's name, kind
and link with :class:`murder_core.members.MemberGuard`.

libarchive's own ``SECURE_SYMLINKS`` is not used: it opens every component
of every member's path (1.3 s instead of 0.8 s for 20,000 files), and the
guard proves the same from the archive alone, because the staging
directory is new.
``SECURE_NODOTDOT`` stays as a second lock. Owners are never restored.
"""
import collections
import contextlib
import ctypes
import logging
import os
import queue
import stat
import threading
from ctypes import c_char_p, c_int, c_longlong, c_void_p

import zstandard

from murder_core import members

log = logging.getLogger(__name__)

try:
    from libarchive import ffi
    from libarchive.exception import ArchiveError
except (ImportError, OSError, AttributeError) as exc:  # no libarchive-c, or no libarchive.so
    ffi = None
    ArchiveError = None
    MISSING = f"libarchive is not usable here ({exc}); install libarchive13 and the libarchive-c package"
else:
    MISSING = ""


def _raw(name, argtypes, restype):
    """A libarchive function without libarchive-c's Python error check: for the per-member loop.

    A second handle on the same library, so that libarchive-c's own
    declarations (with their checks) stay as they are.
    """
    function = getattr(_RAW, "archive_" + name)
    function.argtypes, function.restype = argtypes, restype
    return function


if ffi is not None:
    _RAW = ctypes.CDLL(ffi.libarchive_path)
    _next_header = _raw("read_next_header2", [c_void_p, c_void_p], c_int)
    _pathname = _raw("entry_pathname_utf8", [c_void_p], c_char_p)
    _symlink = _raw("entry_symlink_utf8", [c_void_p], c_char_p)
    _hardlink = _raw("entry_hardlink_utf8", [c_void_p], c_char_p)
    _mode = _raw("entry_mode", [c_void_p], c_int)
    _set_perm = _raw("entry_set_perm", [c_void_p, c_int], None)
    _update_pathname = _raw("entry_update_pathname_utf8", [c_void_p, c_char_p], c_int)
    _update_hardlink = _raw("entry_update_hardlink_utf8", [c_void_p, c_char_p], c_int)
    _extract2 = _raw("read_extract2", [c_void_p, c_void_p, c_void_p], c_int)
    _write_close = _raw("write_close", [c_void_p], c_int)
    _header_position = _raw("read_header_position", [c_void_p], c_longlong)
    _filter_bytes = _raw("filter_bytes", [c_void_p, c_int], c_longlong)
    _entry_size = _raw("entry_size", [c_void_p], c_longlong)
    _sparse_count = _raw("entry_sparse_count", [c_void_p], c_int)

AVAILABLE = ffi is not None
_CHUNK = 1 << 20
_EXTRACT_PERM = 0x0002
_EXTRACT_TIME = 0x0004
_EXTRACT_SECURE_NODOTDOT = 0x0200
_KINDS = {stat.S_IFREG: members.FILE, stat.S_IFDIR: members.DIRECTORY, stat.S_IFLNK: members.SYMLINK}
_OTHER_KINDS = {stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
                stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


def _text(raw):
    return raw.decode("utf-8", "surrogateescape") if raw else ""


def _utf8(text):
    return text.encode("utf-8", "surrogateescape")


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BLOCK_BYTES = 1 << 20
# Small enough that tar, a block behind the check, always has bytes to unpack.
_TEE_BLOCK_BYTES = 1 << 17
_PEEK_BYTES = 1 << 20


class _Unzstd:
    """A zstd file decompressed by a thread of its own, handed to libarchive block by block.

    ``zstd -dc | tar -x`` decompresses on one core and writes files on the
    other; libarchive's own zstd filter does both on one. python-zstandard
    releases the GIL while it decompresses, so the thread costs the member
    loop little. libarchive reads each block where the thread left it (its
    read callback, :meth:`read`): no byte is copied through a pipe. The
    thread touches no path, so the unpack may still run in the staging
    directory (:func:`_names_under`).
    """

    _BLOCKS_AHEAD = 4

    def __init__(self, path):
        self._source = open(path, "rb")
        self._blocks = queue.Queue(maxsize=self._BLOCKS_AHEAD)
        self._stop = threading.Event()
        self._current = None  # the block libarchive is reading: alive until it asks for the next
        self.error = None
        self.callback = ffi.READ_CALLBACK(self.read)  # libarchive keeps a pointer: so must we
        self._thread = threading.Thread(target=self._run, name="murder-unzstd", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(self._source, read_across_frames=True)
            while not self._stop.is_set():
                block = reader.read(_BLOCK_BYTES)
                if not block:
                    break
                self._blocks.put(block)
        except (zstandard.ZstdError, OSError) as exc:
            self.error = exc
        finally:
            self._source.close()
            self._blocks.put(None)  # the end, or the failure in ``error``

    def read(self, archive, client_data, buffer):
        """libarchive's read callback: the next block's address in ``buffer``, its length; 0 at the end, -1 failed."""
        block = self._blocks.get()
        if block is None:
            self._current = None
            return -1 if self.error is not None else 0
        pointer = ctypes.c_char_p(block)
        self._current = (block, pointer)
        buffer[0] = ctypes.cast(pointer, c_void_p).value
        return len(block)

    def close(self):
        """Stop the thread: the blocks it waits to hand over are dropped, so its ``put`` returns."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                while True:
                    self._blocks.get_nowait()
            self._thread.join(0.05)
        self._current = None


def _decompress_apart(path):
    """Whether ``path`` is zstd, which :class:`_Unzstd` decompresses beside libarchive (bench/pack.py turns it off)."""
    with open(path, "rb") as handle:
        return handle.read(4) == _ZSTD_MAGIC


class _Tee:
    """The bytes of a tar stream, handed to libarchive and, as far as the guard passed them, to a sink.

    Read in the caller's thread through libarchive's read callback. Each
    block is held until the bytes before :attr:`allowed` go on to the sink,
    a block at a time as libarchive asks for the next one (a write a member
    cost 0.15 s more on 20,000 small files), so the sink never gets a byte of
    a member the guard has not seen.
    """

    def __init__(self, stream, sink):
        self._stream, self._sink = stream, sink
        self._held = collections.deque()
        self._sent = 0
        self.allowed = 0
        self._current = None  # the block libarchive is reading: alive until it asks for the next
        self.error = None
        self.sink_error = None
        self.callback = ffi.READ_CALLBACK(self.read)  # libarchive keeps a pointer: so must we

    def read(self, archive, client_data, buffer):
        """libarchive's read callback: the next block's address in ``buffer``, its length; 0 at the end, -1 failed."""
        try:
            self._release()
        except OSError as exc:  # the sink is gone (tar ended): check_into raises it as it is
            self.sink_error = exc
            return -1
        try:
            block = self._stream.read(_TEE_BLOCK_BYTES)
        except Exception as exc:  # a corrupt stream; raised by _Reader.failed
            self.error = exc
            return -1
        if not block:
            self._current = None
            return 0
        pointer = ctypes.c_char_p(block)
        self._current = (block, pointer)
        self._held.append(memoryview(block))
        buffer[0] = ctypes.cast(pointer, c_void_p).value
        return len(block)

    def _release(self):
        while self._sent < self.allowed and self._held:
            block = self._held[0]
            take = min(len(block), self.allowed - self._sent)
            self._sink.write(block[:take])
            if take == len(block):
                self._held.popleft()
            else:
                self._held[0] = block[take:]
            self._sent += take

    def release_rest(self):
        """Pass on every byte held and whatever the stream has after them (the end of the archive)."""
        while self._held:
            self._sink.write(self._held.popleft())
        for block in iter(lambda: self._stream.read(_TEE_BLOCK_BYTES), b""):
            self._sink.write(block)

    def close(self):
        self._current = None
        self._held.clear()


class _Reader:
    """An archive read from a file: tar in any of its dialects, zstd, gzip or no compression.

    With ``source`` (a :class:`_Tee`) the tar bytes come from it instead of the file.
    """

    def __init__(self, path, source=None):
        self.pointer = ffi.read_new()
        self._source = source
        try:
            ffi.read_support_format_tar(self.pointer)
            if not isinstance(source, _Tee):
                # A tee's stream is decompressed already: what libarchive took for a compressed one (zstd's
                # skippable frames included) would be another archive than the bytes tar gets.
                ffi.read_support_filter_zstd(self.pointer)
                ffi.read_support_filter_gzip(self.pointer)
            ffi.read_support_filter_none(self.pointer)
            if source is None and _decompress_apart(path):
                self._source = _Unzstd(path)
            if self._source is not None:
                ffi.read_open(self.pointer, None, ffi.NO_OPEN_CB, self._source.callback, ffi.NO_CLOSE_CB)
            else:
                ffi.read_open_filename_w(self.pointer, path, _CHUNK)
        except BaseException:
            self.close()
            raise

    def failed(self, code, member=None):
        """Raise the error behind a failed call: the decompression's, when it failed, else libarchive's."""
        if self._source is not None and self._source.error is not None:
            raise zstandard.ZstdError(f"{member + ': ' if member else ''}{self._source.error}")
        if member is None:
            _checked(code, self.pointer)  # raises: called for an error, never for a warning
            return
        _failed(code, self.pointer, member)

    def members(self, entry):
        """Yield ``(name, kind, target, mode)`` of each member; ``entry`` holds its header."""
        pointer = self.pointer
        while True:
            code = _next_header(pointer, entry)
            if code == ffi.ARCHIVE_EOF:
                return
            if code == ffi.ARCHIVE_WARN:
                _checked(code, pointer)
            elif code < ffi.ARCHIVE_OK:
                self.failed(code)
            name = _text(_pathname(entry))
            hardlink = _hardlink(entry)
            if hardlink:
                yield name, members.HARDLINK, _text(hardlink), 0
                continue
            mode = _mode(entry)
            kind = _KINDS.get(mode & 0o170000)
            if kind is None:
                kind = _OTHER_KINDS.get(mode & 0o170000, f"entry of type {mode & 0o170000:o}")
            yield name, kind, _text(_symlink(entry)) if kind == members.SYMLINK else "", mode & 0o7777

    def close(self):
        try:
            ffi.read_free(self.pointer)
        finally:
            if self._source is not None:
                self._source.close()
                self._source = None


def check(path):
    """Raise :class:`UnsafeArchive` at the first member of ``path`` that unpacking refuses."""
    guard = members.MemberGuard()
    entry = ffi.entry_new()
    reader = _Reader(path)
    try:
        for name, kind, target, mode in reader.members(entry):
            guard.check(name, kind, target, mode)
    finally:
        reader.close()
        ffi.entry_free(entry)


def mean_member_bytes(stream, window=_PEEK_BYTES):
    """The tar bytes per member in the first ``window`` bytes of the tar ``stream`` (decompressed); None without one.

    What :func:`murder_core.pack.unpack` chooses its unpacker by: a release
    of many small files unpacks faster through GNU tar, one of large files
    through libarchive alone (bench/pack.py).
    """
    head = stream.read(window)
    pointer = ffi.read_new()
    entry = ffi.entry_new()
    count = 0
    try:
        ffi.read_support_format_tar(pointer)
        ffi.read_support_filter_none(pointer)
        ffi.read_open_memory(pointer, head, len(head))
        # Past the window a header is cut short: libarchive's error ends the count.
        while _next_header(pointer, entry) in (ffi.ARCHIVE_OK, ffi.ARCHIVE_WARN):
            count += 1
    except ArchiveError:
        pass  # not even one header: the unpack names what is wrong
    finally:
        ffi.read_free(pointer)
        ffi.entry_free(entry)
    return len(head) / count if count else None


def check_into(stream, sink):
    """Check the members of the tar ``stream`` (decompressed) in order, writing to ``sink`` the bytes of each one passed.

    A member's bytes go on only once the guard passed it, so a program
    that unpacks what ``sink`` gets never sees a refused member. Raises
    :class:`UnsafeArchive` at the first refused member; returns the guard.
    """
    guard = members.MemberGuard()
    entry = ffi.entry_new()
    tee = _Tee(stream, sink)
    reader = _Reader(None, tee)
    try:
        pointer = reader.pointer
        for name, kind, target, mode in reader.members(entry):
            tee.allowed = _header_position(pointer)  # the members before this one all passed
            guard.check(name, kind, target, mode)
            if kind == members.FILE and not _sparse_count(entry):
                # And its data, up to the next header: a file's size is the data libarchive skips
                # (a sparse file's is not: its bytes go on with the next header).
                tee.allowed = _filter_bytes(pointer, 0) + -(-_entry_size(entry) // 512) * 512
        tee.release_rest()
    except Exception:
        if tee.sink_error is not None:  # not the archive's fault: the unpacker stopped reading
            raise tee.sink_error from None
        raise
    finally:
        reader.close()
        ffi.entry_free(entry)
    return guard


def _alone():
    """Whether this is the process's only Python thread (a ``murder.peer`` job is: measured with py-spy)."""
    return threading.active_count() == 1


@contextlib.contextmanager
def _names_under(staging):
    """Yield the prefix that makes a member's name a path in ``staging``: "" with ``staging`` the working directory.

    libarchive has no call that writes relative to a directory descriptor,
    as tar does with openat. Each member's path is walked by the kernel in
    several calls (lstat, open, chmod, utimes), so a name relative to the
    staging directory instead of a deep absolute one took 15 % off the
    unpack of 20,000 small files (0.96 -> 0.84 s in bench/pack.py --samples many-files).
    The working directory is the process's: it is changed only while no
    other Python thread runs (a Salt job is a process of its own; with
    ``multiprocessing: False`` it is a thread, and the names stay absolute).
    libtorrent's threads use absolute paths.
    """
    absolute = os.path.realpath(staging) + "/"
    try:
        # O_PATH: a working directory that may be searched but not read can still be returned to.
        here = os.open(".", os.O_PATH | os.O_DIRECTORY) if _alone() else None
    except OSError:
        here = None
    if here is None:
        yield absolute
        return
    try:
        os.chdir(absolute)
        yield ""
    finally:
        try:
            os.fchdir(here)
        finally:
            os.close(here)


def extract(path, staging, on_member=None):
    """Write every member of ``path`` into the new, empty directory ``staging``.

    Raises :class:`UnsafeArchive` (naming the member) or libarchive's
    ``ArchiveError``; the caller removes ``staging`` on failure. In a
    process with one Python thread the working directory is ``staging``
    during the call, ``on_member`` included (:func:`_names_under`).
    """
    path = os.path.abspath(path)
    with _names_under(staging) as prefix:
        _extract_into(path, prefix, on_member)


def _extract_into(path, prefix, on_member):
    check = members.MemberGuard().check
    entry = ffi.entry_new()
    writer = ffi.write_disk_new()
    reader = None
    try:
        ffi.write_disk_set_options(writer, _EXTRACT_PERM | _EXTRACT_TIME | _EXTRACT_SECURE_NODOTDOT)
        reader = _Reader(path)
        # The loop runs once a member (20,000 times for a virtualenv): one pass, no generator, few calls.
        for name, kind, target, mode in reader.members(entry):
            checked = check(name, kind, target, mode)
            if checked is None:
                continue
            if on_member is not None:
                on_member()
            relpath, kept = checked
            # The entry already holds the member's name: set it only when the guard changed it or it gets a prefix.
            if (prefix or relpath != name) and not _update_pathname(entry, _utf8(prefix + relpath)):
                _failed(ffi.ARCHIVE_FATAL, writer, relpath)
            if kind == members.HARDLINK:
                if not _update_hardlink(entry, _utf8(prefix + members.canonical(target))):
                    _failed(ffi.ARCHIVE_FATAL, writer, relpath)
            elif kept != mode and kind != members.SYMLINK:
                _set_perm(entry, kept)
            code = _extract2(reader.pointer, entry, writer)
            if code != ffi.ARCHIVE_OK:
                # A "warning" here can be a write that failed (a full disk): the member is not all there.
                # libarchive copies the disk writer's error onto the reader.
                reader.failed(code, relpath)
        code = _write_close(writer)
        if code != ffi.ARCHIVE_OK:
            _failed(code, writer, "setting the modes and times of directories")
    finally:
        if reader:
            reader.close()
        ffi.write_free(writer)
        ffi.entry_free(entry)


def _failed(code, pointer, member):
    """Raise libarchive's error for ``member``, a warning included; errno says what the disk said."""
    error = ffi.archive_error(pointer, min(code, ffi.ARCHIVE_FAILED))
    reason = error.msg or (os.strerror(error.errno) if error.errno and error.errno > 0 else "failed")
    error.msg = f"{member}: {reason}"
    raise error


def _checked(code, pointer, member=None):
    """Raise libarchive's error for a failed call; log a warning and go on for a partial success."""
    if code >= ffi.ARCHIVE_OK:
        return
    error = ffi.archive_error(pointer, code)
    if member is not None:
        error.msg = f"{member}: {error.msg}"
    if code == ffi.ARCHIVE_WARN:
        log.warning("libarchive: %s", error.msg)
        return
    raise error


class _Unavailable(Exception):
    """Never raised: the stand-in for libarchive's error where there is no libarchive."""


# libarchive's own error, for ``except`` clauses that must work with or without libarchive.
Error = ArchiveError or _Unavailable
