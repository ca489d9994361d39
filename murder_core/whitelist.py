"""An external tracker's whitelist, kept in step with the published releases.

Debian's opentracker is built to serve only the info-hashes listed in its
whitelist file (``access.whitelist``), one 40-digit hex hash per line, and
re-reads it on SIGHUP. With ``tracker_whitelist`` set, the engine writes
there the tracker keys of every release it seeds (a hybrid torrent has two:
its v1 hash and its v2 hash cut to 20 bytes, the form peers announce), and
runs ``tracker_whitelist_reload`` when the list changed.
"""
import logging
import os
import subprocess
import tempfile

log = logging.getLogger(__name__)

RELOAD_TIMEOUT = 30


def read(path):
    """The hex keys listed in ``path`` (none when it does not exist)."""
    try:
        with open(path) as handle:
            return [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return []


def write(path, keys):
    """Make ``path`` list ``keys`` (written whole, then renamed); return False when it already did."""
    keys = list(keys)
    if read(path) == keys:
        return False
    directory = os.path.dirname(os.path.abspath(path))
    fd, partial = tempfile.mkstemp(prefix=".murder-whitelist-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(f"{key}\n" for key in keys))
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    log.info("tracker whitelist %s now lists %d info-hashes", path, len(keys))
    return True


def reload(command):
    """Run the operator's reload command; a failure is logged, never raised (the seeding goes on)."""
    if not command:
        return True
    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=RELOAD_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.error("tracker_whitelist_reload %r did not finish in %d s", command, RELOAD_TIMEOUT)
        return False
    if done.returncode != 0:
        log.error("tracker_whitelist_reload %r failed (exit %d): %s", command, done.returncode,
                  (done.stderr or done.stdout).strip()[-500:])
        return False
    return True
