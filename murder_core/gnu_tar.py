"""Release archives written and unpacked by GNU tar: the fast path of :mod:`murder_core.pack`.

Why a process of its own: on a release of 20,000 small files the work is
per member (a stat, an open, a read, a close, a header), and Python with
libarchive spent about 1.7 times as long on it as ``tar | zstd`` on this
machine, however few calls a member took (docs/tuning.md). GNU tar does
that loop in C, and ``pack`` keeps what is its own: it walks the tree
(excludes, and the checks of what may go into a release) and hands tar the
sorted names one by one on a pipe while tar archives those before them.
python-zstandard compresses tar's output on a worker thread of libzstd.

GNU tar is part of every Debian and Red Hat system (Debian marks it
essential). Where it is missing, or the ``tar`` found is another one, pack
falls back to tarfile and unpack to libarchive alone.

Unpacking a release of many small files is the same per-member loop, so it
is tar's too (``pack.SMALL_MEMBER_BYTES`` says when), behind a gate:
libarchive reads the archive on a thread of ``pack.unpack`` and passes each
member through :class:`murder_core.members.MemberGuard`, and only the bytes
of members the guard passed go on to ``tar --extract`` in the fresh
staging directory (:func:`murder_core.libarchive_io.check_into`), so tar
never sees a refused member. tar does not restore owners, setuid, setgid or
sticky bits (``--no-same-owner``, and ``--no-same-permissions`` under a
umask of 0 keeps the permission bits exact). Afterwards the guard checks
that the tree holds exactly what it passed
(:meth:`~murder_core.members.MemberGuard.verify_tree`), so a header that
tar read differently from libarchive cannot slip anything in.

The same tree gives the same bytes: names in the walk's order, owners 0 and
no names, whole-second mtimes (the pax ``mtime`` record is deleted, so the
ustar field carries them), no atime or ctime, pax header names without a
process ID, hard links stored as files, and a fixed locale.
"""
import contextlib
import fcntl
import functools
import os
import shutil
import subprocess
import tempfile
import threading

import zstandard

from murder_core.errors import MurderError

_OPTIONS = (
    "--create", "--file=-", "--format=posix",
    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime,delete=mtime",
    "--owner=0", "--group=0", "--numeric-owner", "--hard-dereference",
    # The names come from pack's walk, one per NUL, taken as they are: no recursion, no option, no quoting.
    "--no-recursion", "--null", "--verbatim-files-from",
)
_EXTRACT_OPTIONS = (
    "--extract", "--file=-", "--no-same-owner", "--no-same-permissions",
    # One line a member as tar comes to it: the unpack's heartbeat (extract()).
    "--verbose",
)
_CHUNK = 1 << 17
POLL_SECONDS = 0.1
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_PIPE_BYTES = 1 << 20


class TarFailed(MurderError):
    """tar exited with an error; the message holds its last words."""


@functools.lru_cache(maxsize=None)
def program():
    """The path of GNU tar on this host, or "" when there is none (or the ``tar`` found is another tar)."""
    path = shutil.which("tar")
    if not path:
        return ""
    try:
        version = subprocess.run([path, "--version"], capture_output=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return path if version.startswith(b"tar (GNU tar)") else ""


def _environment():
    # TAR_OPTIONS would add options of the operator's, POSIXLY_CORRECT change some; the locale decides how
    # names become pax records.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LC_", "TAR_")) and key not in ("LANG", "LANGUAGE", "POSIXLY_CORRECT")}
    env["LC_ALL"] = "C.UTF-8"
    return env


def _failed(errors, code):
    errors.seek(0)
    said = errors.read().decode("utf-8", "replace").strip().splitlines()
    raise TarFailed(f"tar failed ({'; '.join(said[-3:]) or f'exit code {code}'})")


class _Compressor(threading.Thread):
    """Compresses what ``tar`` writes to the pipe ``source`` into the artifact; stops tar when it cannot write."""

    def __init__(self, source, out, level, tar):
        super().__init__(name="murder-pack-zstd", daemon=True)
        # Unbuffered: each read copies the pipe's bytes once, not through a buffer too.
        self._source, self._out, self._level, self._tar = open(source, "rb", buffering=0), out, level, tar
        self.error = None

    def run(self):
        try:
            # threads=1: libzstd compresses on a worker of its own while this thread reads the pipe;
            # the bytes do not depend on timing.
            zstandard.ZstdCompressor(level=self._level, threads=1).copy_stream(
                self._source, self._out, read_size=_CHUNK, write_size=_CHUNK)
        except (OSError, zstandard.ZstdError) as exc:
            self.error = exc
            with contextlib.suppress(OSError):
                self._tar.kill()
        finally:
            self._source.close()


def write(out, root, names, compression, level, clamp=None, follow_links=False):
    """Write the tar of ``names`` (paths relative to the directory ``root``, in order) to the binary file ``out``.

    ``names`` is iterated while tar runs: an exception it raises stops tar
    and is raised here. ``clamp`` is the latest mtime a member may carry;
    with ``follow_links`` a symlink is packed as what it points to.
    Raises :class:`TarFailed` with tar's own words when tar fails.
    """
    command = [program(), *_OPTIONS, f"--directory={root}"]
    if clamp is not None:
        command += [f"--mtime=@{clamp}", "--clamp-mtime"]
    if follow_links:
        command.append("--dereference")
    command.append("--files-from=-")  # after --directory: tar's options here are positional
    out.flush()
    zstd = compression == "zstd"
    with tempfile.TemporaryFile() as errors:
        source, sink = os.pipe() if zstd else (None, out)
        try:
            tar = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=sink, stderr=errors, env=_environment(),
                                   cwd=root)
        except BaseException:
            if zstd:
                os.close(source)
            raise
        finally:
            if zstd:
                os.close(sink)  # tar holds it now: the compressor sees the end when tar ends
        compressor = _Compressor(source, out, level, tar) if zstd else None
        try:
            if compressor:
                compressor.start()
            try:
                for name in names:
                    tar.stdin.write(os.fsencode(name) + b"\0")
            except BrokenPipeError:
                pass  # tar ended early: its status and its words say why
        except BaseException:
            tar.kill()
            raise
        finally:
            with contextlib.suppress(OSError):
                tar.stdin.close()
            code = tar.wait()
            if compressor:
                compressor.join()
        if compressor and compressor.error is not None:
            raise MurderError(f"cannot write the artifact: {compressor.error}") from compressor.error
        if code != 0:
            _failed(errors, code)


class _Feeder(threading.Thread):
    """Writes the archive's tar bytes into tar's stdin (``feed(sink)``); stops tar when it cannot."""

    def __init__(self, feed, tar, name):
        super().__init__(name=name, daemon=True)
        self._feed, self._tar = feed, tar
        self.error = None

    def run(self):
        try:
            self._feed(self._tar.stdin)
        except BrokenPipeError:
            pass  # tar stopped reading: its status and its words say why
        except Exception as exc:  # a corrupt stream: raised again by extract(), where the caller names it
            self.error = exc
            with contextlib.suppress(OSError):
                self._tar.kill()
        finally:
            with contextlib.suppress(OSError):
                self._tar.stdin.close()


def _listed(listing, offset, on_member):
    """Call ``on_member()`` once a line tar wrote to ``listing`` after ``offset``; return the new offset.

    pread: tar writes at the file's shared offset, which reading must not move.
    """
    while True:
        block = os.pread(listing.fileno(), _CHUNK, offset)
        if not block:
            return offset
        offset += len(block)
        if on_member is not None:
            for _ in range(block.count(b"\n")):
                on_member()


FEEDER_THREAD = "murder-untar-feed"


def extract(staging, feed, on_member=None):
    """Run ``tar --extract`` in the directory ``staging`` on the tar bytes that ``feed(sink)`` writes to ``sink``.

    ``feed`` runs on a thread named :data:`FEEDER_THREAD` (decompressing, as
    ``zstd -dc | tar -x`` does on another core); an exception it raises is
    raised here. ``on_member()`` is called for each member tar came to, in
    batches every :data:`POLL_SECONDS`: tar lists them in a file, not a pipe,
    because reading a line a member from a pipe woke this thread 20,000
    times for a virtualenv and took the GIL from the feed each time.
    Raises :class:`TarFailed` with tar's own words when tar fails. Check
    the archive before, and the tree after: tar is told nothing of the rules.
    """
    command = [program(), *_EXTRACT_OPTIONS, f"--directory={staging}"]
    with tempfile.TemporaryFile() as errors, tempfile.TemporaryFile() as listing:
        tar = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=listing, stderr=errors,
                               env=_environment(), cwd=staging, umask=0)
        with contextlib.suppress(OSError):
            # A pipe of 1 MiB (Linux's most for a user) instead of 64 KiB: the feed rarely waits for tar.
            fcntl.fcntl(tar.stdin.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
        feeder = _Feeder(feed, tar, FEEDER_THREAD)
        listed = 0
        try:
            feeder.start()
        except BaseException:
            tar.kill()
            tar.wait()
            raise
        try:
            while True:
                try:
                    tar.wait(POLL_SECONDS)
                except subprocess.TimeoutExpired:
                    listed = _listed(listing, listed, on_member)
                    continue
                _listed(listing, listed, on_member)
                break
        except BaseException:
            tar.kill()
            raise
        finally:
            code = tar.wait()
            feeder.join()
        if feeder.error is not None:
            raise feeder.error
        if code != 0:
            _failed(errors, code)
