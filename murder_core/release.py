"""The release layout on a minion: Capistrano's, which operators know.

::

    <base_dir>/
        releases/<release>/                     one directory per finished release
        releases/.staging-<release>-<random>/   a release being written
        shared/                                 what outlives releases (log, tmp, config)
        current -> releases/<release>           the release in service

Conventions this module keeps:

* **Release names are sortable ids** (``20261126T101500Z``): sorting the names
  sorts the releases oldest to newest. A name is checked by
  :func:`murder_core.config.check_release_name`, so it never holds ``/`` or
  ``..`` and never starts with ``.``.
* **Only finished releases are named** ``releases/<release>``. A release being
  written lives at ``releases/.staging-<release>-<random>`` (see
  :func:`staging_dir`; :func:`murder_core.pack.unpack` uses the same prefix)
  and is renamed into place only when complete, so no tool ever activates a
  half-written release. Every entry whose name starts with ``.`` is ignored.
* **``current`` is a relative symlink**, always written as the target
  ``releases/<release>``, so ``<base_dir>`` can be moved, bind-mounted or
  looked at from a chroot. An absolute target into ``<base_dir>/releases``
  (what Capistrano writes) is understood when reading.
* **The switch is atomic**: a new symlink is made beside ``current`` and
  renamed over it (``rename(2)``), so at every moment ``current`` exists and
  points at a finished release.
* **The rollback target** of a release is the newest finished release older
  than it (by name). Clean-up never removes ``current`` nor that target.

* **A whole activation** (link the shared entries, switch, run the health
  check and switch back if it fails, clean up) is planned by
  :meth:`ReleaseTree.plan_activation`, which changes nothing (``test=True``),
  and done by :meth:`ReleaseTree.carry_out`.

Nothing here imports Salt: ``_states/murder.py`` and ``_modules/murder.py``
are thin layers over :class:`ReleaseTree`; they run the health check through
``cmd.run_all`` and read its outcome with :func:`check_failure`.
"""
import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field

from murder_core.config import STAGING_PREFIX, STATE_DIR, check_release_name
from murder_core.errors import InvalidInput, ReleaseError

log = logging.getLogger(__name__)

RELEASES = "releases"
# The releases current here, oldest first, one per line (what rollback goes back to), in
# <base_dir>/STATE_DIR beside the minion's cached artifacts; a dot name, which no release can have.
ACTIVATED = ".activated"
SHARED = "shared"
CURRENT = "current"
# Prefix of a release being removed, inside releases/: ".removing-<release>-<random>".
REMOVING_PREFIX = ".removing-"
# Prefix of the new symlink made beside current before it is renamed over it.
NEW_CURRENT_PREFIX = ".current-new-"
# Seconds a health check may run when the caller does not say.
DEFAULT_CHECK_TIMEOUT = 30


def _is_release_name(name):
    try:
        check_release_name(name)
    except InvalidInput:
        return False
    return True


def _check_keep(keep):
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InvalidInput(f"keep must be a whole number of at least 1, got {keep!r}")
    return keep


def _check_shared(shared):
    """Return the shared entries as a list of clean relative paths, or raise InvalidInput."""
    if shared is None:
        return []
    if isinstance(shared, str) or not isinstance(shared, (list, tuple)):
        raise InvalidInput(f"shared must be a list of paths relative to shared/, got {shared!r}")
    entries = []
    for entry in shared:
        if not isinstance(entry, str) or not entry.strip("/"):
            raise InvalidInput(f"invalid shared entry {entry!r}: give a path relative to shared/")
        parts = entry.rstrip("/").split("/")
        if entry.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise InvalidInput(
                f"invalid shared entry {entry!r}: it must be a plain relative path "
                "(no leading '/', no '.' or '..' parts)"
            )
        entries.append("/".join(parts))
    for entry in entries:
        for other in entries:
            if other != entry and entry.startswith(other + "/"):
                raise InvalidInput(
                    f"shared entry {entry!r} lies inside shared entry {other!r}: give only one"
                )
    return entries


def _fsync_dir(path):
    """Make a rename in ``path`` durable; best effort (not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class Activation:
    """What activating a release changes (planned) or changed (carried out).

    :meth:`ReleaseTree.plan_activation` makes the plan, changing nothing;
    :meth:`ReleaseTree.carry_out` does it and returns what was done.
    """

    release: str
    # The shared entries asked for, and keep (None: no clean-up).
    shared_entries: list[str]
    keep: int | None
    # What was current before, and what is current after: ``release``, or
    # ``old`` again when the health check failed.
    old: str | None
    current: str | None
    # Shared entries linked into the release; releases removed.
    shared: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # Why the health check failed; None when it passed or did not run.
    check_failed: str | None = None

    @property
    def switches(self):
        """True when ``current`` changes (or changed) release."""
        return self.current != self.old

    @property
    def changes_anything(self):
        """True when anything on disk changes (or changed)."""
        return self.switches or bool(self.shared) or bool(self.removed)

    def changes(self):
        """Salt's ``changes``: current's old and new release, shared entries linked, releases removed."""
        changes = {}
        if self.switches:
            changes["current"] = {"old": self.old, "new": self.current}
        if self.shared:
            changes["shared"] = self.shared
        if self.removed:
            changes["removed"] = self.removed
        return changes

    def summary(self, where, would=False, checked=False):
        """One line saying what this activation does (``would``: planned) or did, under ``where``."""
        if self.check_failed:
            back = f"{self.old} is current again" if self.old else "current was removed again"
            return (f"Release {self.release} failed its health check and was rolled back ({back}): "
                    f"{self.check_failed}")
        if not self.switches:
            notes = [f"Release {self.release} is already current in {where}"]
        elif would:
            notes = [f"Release {self.release} would become current in {where} (now: {self.old})"]
        else:
            notes = [f"Release {self.release} is now current in {where} (was: {self.old})"]
            if checked:
                notes.append("health check passed")
        link, remove = ("would link", "would remove") if would else ("linked", "removed")
        if self.shared:
            notes.append(f"{link} shared {', '.join(self.shared)}")
        if self.removed:
            notes.append(f"{remove} releases {', '.join(self.removed)}")
        return "; ".join(notes)


class ReleaseTree:
    """The releases, shared files and ``current`` link under one ``base_dir``.

    Constructing one checks ``base_dir`` and touches nothing on disk.
    """

    def __init__(self, base_dir):
        if isinstance(base_dir, os.PathLike):
            base_dir = os.fspath(base_dir)
        if not isinstance(base_dir, str) or not os.path.isabs(base_dir):
            raise InvalidInput(f"base_dir must be an absolute path, got {base_dir!r}")
        if ".." in base_dir.split("/") or not os.path.normpath(base_dir).strip("/"):
            raise InvalidInput(f"base_dir {base_dir!r} must be a directory below / without '..'")
        self.base_dir = os.path.normpath(base_dir)
        self.releases_dir = os.path.join(self.base_dir, RELEASES)
        self.activated_record = os.path.join(self.base_dir, STATE_DIR, ACTIVATED)
        self.shared_dir = os.path.join(self.base_dir, SHARED)
        self.current_link = os.path.join(self.base_dir, CURRENT)

    def __repr__(self):
        return f"ReleaseTree({self.base_dir!r})"

    # Reading the layout.

    def release_dir(self, release):
        """Return the directory of ``release`` (which need not exist)."""
        return os.path.join(self.releases_dir, check_release_name(release))

    def has(self, release):
        """True when ``release`` is a finished release on disk."""
        path = self.release_dir(release)
        return os.path.isdir(path) and not os.path.islink(path)

    def releases(self):
        """Return the finished releases, oldest to newest (sorted by name)."""
        try:
            entries = list(os.scandir(self.releases_dir))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ReleaseError(f"cannot list releases in {self.releases_dir}: {exc.strerror}") from exc
        return sorted(
            entry.name
            for entry in entries
            if not entry.name.startswith(".")
            and _is_release_name(entry.name)
            and entry.is_dir(follow_symlinks=False)
        )

    def current(self):
        """Return the release ``current`` points at, or None when there is no ``current``.

        Raises ReleaseError when ``current`` is not a symlink (a real directory
        is never touched) or points outside ``releases/``.
        """
        if not os.path.lexists(self.current_link):
            return None
        if not os.path.islink(self.current_link):
            raise ReleaseError(
                f"{self.current_link} is not a symlink; murder manages current as a "
                "symlink to releases/<release> and will not replace or delete it: move it away"
            )
        try:
            target = os.readlink(self.current_link)
        except OSError as exc:
            raise ReleaseError(f"cannot read {self.current_link}: {exc.strerror}") from exc
        resolved = os.path.normpath(os.path.join(self.base_dir, target))
        parent, name = os.path.split(resolved)
        if parent != self.releases_dir or not _is_release_name(name):
            raise ReleaseError(
                f"{self.current_link} points at {target!r}, which is not a release in "
                f"{self.releases_dir}; fix or remove the link by hand"
            )
        return name

    def previous(self, release=None):
        """Return the rollback target of ``release`` (default: the current one), or None.

        That is the release that was current here before it and is still on
        disk: the record of currents (``.murder/.activated``) is a stack,
        where activating a release already in it drops what came after it,
        so a release undone by a failed check, a fleet rollback or a
        rollback is never a target again, and a release a failed deploy
        left unpacked never was one. For a ``release`` not yet current (a
        preview), it is the release current now. A tree with no record
        (activated before murder kept one) falls back to the newest release
        older by name.
        """
        if release is None:
            release = self.current()
            if release is None:
                return None
        history = self._history()
        if history is None:
            older = [name for name in self.releases() if name < release]
            return older[-1] if older else None
        before = history[:history.index(release)] if release in history else history
        on_disk = [name for name in before if name != release and self.has(name)]
        return on_disk[-1] if on_disk else None

    def _history(self):
        """The releases once current, oldest first; None when the tree has no record."""
        try:
            with open(self.activated_record, encoding="utf-8") as handle:
                return handle.read().split()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ReleaseError(f"cannot read {self.activated_record}: {exc.strerror}") from exc

    def _remember_current(self, release):
        # A release already in the stack becomes its top again (what came after it was undone).
        history = self._history() or []
        history = history[:history.index(release)] if release in history else history
        self._write_history([name for name in history if self.has(name)] + [release])

    def _forget_current(self, release):
        history = self._history()
        if history and history[-1] == release:
            self._write_history(history[:-1])

    def _write_history(self, names):
        path = self.activated_record
        partial = f"{path}.{uuid.uuid4().hex[:12]}"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(partial, "w", encoding="utf-8") as handle:
                handle.write("".join(f"{name}\n" for name in names))
            os.replace(partial, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            # current has switched already: the switch stands, only the rollback target is unknown.
            log.warning("%s: could not record the releases current here in %s (%s); a rollback "
                        "then needs release=<id>", self.base_dir, path, exc.strerror)

    # Shared entries.

    def _shared_paths(self, release, entry):
        source = os.path.join(self.shared_dir, entry)
        link = os.path.join(self.release_dir(release), entry)
        return source, link, os.path.relpath(source, os.path.dirname(link))

    def _check_link_parent(self, release, entry):
        """Refuse a shared entry whose parent inside the release is a symlink (it could lead out)."""
        root = self.release_dir(release)
        path = root
        for part in entry.split("/")[:-1]:
            path = os.path.join(path, part)
            if os.path.islink(path):
                raise ReleaseError(
                    f"cannot link shared/{entry} into release {release}: {path} is a symlink"
                )
            if os.path.lexists(path) and not os.path.isdir(path):
                raise ReleaseError(
                    f"cannot link shared/{entry} into release {release}: {path} is not a directory"
                )

    def unlinked_shared(self, release, shared):
        """Return the ``shared`` entries not yet linked into ``release`` (what link_shared would do)."""
        entries = _check_shared(shared)
        if not self.has(release):
            raise self._not_on_disk(release)
        missing = []
        for entry in entries:
            self._check_link_parent(release, entry)
            _, link, target = self._shared_paths(release, entry)
            if not (os.path.islink(link) and os.readlink(link) == target):
                missing.append(entry)
        return missing

    def link_shared(self, release, shared):
        """Link each ``shared`` entry (relative to ``shared/``) into ``release``; return those linked.

        The link ``releases/<release>/<entry>`` is relative, to
        ``shared/<entry>``; what the release ships at that path is replaced.
        A missing ``shared/<entry>`` is created as an empty directory (as for
        ``log`` or ``tmp``), unless the release ships a file there: a shared
        file must be put in place before the deploy. All entries are checked
        before the first link is made.
        """
        todo = self.unlinked_shared(release, shared)
        for entry in todo:
            source, link, target = self._shared_paths(release, entry)
            if not os.path.lexists(source):
                if os.path.isfile(link) and not os.path.islink(link):
                    raise ReleaseError(
                        f"cannot link shared/{entry} into release {release}: {source} is missing "
                        "and the release ships a file there; put the shared file in place first"
                    )
        for entry in todo:
            source, link, target = self._shared_paths(release, entry)
            try:
                if not os.path.lexists(source):
                    os.makedirs(source)
                os.makedirs(os.path.dirname(link), exist_ok=True)
                if os.path.isdir(link) and not os.path.islink(link):
                    shutil.rmtree(link)
                new_link = f"{link}.{uuid.uuid4().hex[:8]}.new"
                os.symlink(target, new_link)
                try:
                    os.replace(new_link, link)
                except OSError:
                    os.unlink(new_link)
                    raise
            except OSError as exc:
                raise ReleaseError(
                    f"cannot link shared/{entry} into release {release} at {link}: "
                    f"{exc.strerror or exc}"
                ) from exc
            log.debug("linked %s -> %s", link, target)
        return todo

    # Changing what is current.

    def _switch(self, release):
        """Point ``current`` at ``release`` with one rename; ``current`` is never missing."""
        new_link = os.path.join(self.base_dir, f"{NEW_CURRENT_PREFIX}{uuid.uuid4().hex[:12]}")
        try:
            os.symlink(os.path.join(RELEASES, release), new_link)
            try:
                os.replace(new_link, self.current_link)
            except OSError:
                os.unlink(new_link)
                raise
        except OSError as exc:
            raise ReleaseError(
                f"cannot point {self.current_link} at release {release}: {exc.strerror or exc}"
            ) from exc
        _fsync_dir(self.base_dir)

    def activate(self, release):
        """Make ``release`` current; return ``(old, new)`` (equal when it already was current)."""
        check_release_name(release)
        old = self.current()
        if not self.has(release):
            raise self._not_on_disk(release)
        if old == release:
            return old, release
        self._switch(release)
        self._remember_current(release)
        log.info("%s: current %s -> %s", self.base_dir, old, release)
        return old, release

    def _not_on_disk(self, release):
        return ReleaseError(f"release {release} is not on disk at {self.release_dir(release)}; "
                            "murder.fetch (app=, release=) brings a published release here")

    def rollback(self, to=None):
        """Make the release before the current one (or ``to``) current; return ``(old, new)``."""
        if to is not None:
            check_release_name(to)
        old = self.current()
        if old is None:
            raise ReleaseError(f"cannot roll back {self.base_dir}: no release is current")
        target = to if to is not None else self.previous(old)
        if target is None:
            raise ReleaseError(
                f"cannot roll back {self.base_dir}: no release before {old} in {self.releases_dir} "
                f"was current here and is still on disk; name one with release=<id>"
            )
        return self.activate(target)

    def revert(self, to):
        """Put ``current`` back to ``to`` after a failed check: a release, or None for no current.

        Returns ``(old, new)``.
        """
        if to is not None:
            return self.activate(to)
        old = self.current()
        if old is not None:
            try:
                os.unlink(self.current_link)
            except OSError as exc:
                raise ReleaseError(f"cannot remove {self.current_link}: {exc.strerror}") from exc
            self._forget_current(old)
            log.info("%s: current %s removed", self.base_dir, old)
        return old, None

    # Activation with shared links, a health check and clean-up.

    def plan_activation(self, release, shared=None, keep=None, arriving=False):
        """Check everything activating ``release`` needs; return the :class:`Activation` it would do.

        Nothing on disk changes. Raises InvalidInput for a bad name, shared
        entry or keep, ReleaseError when ``current`` is not ours or the
        release is not on disk. ``keep=None`` plans no clean-up.
        ``arriving`` plans for a release about to be fetched: not on disk
        yet, every shared entry still to link, counted among the releases.
        """
        check_release_name(release)
        entries = _check_shared(shared)
        if keep is not None:
            _check_keep(keep)
        old = self.current()
        if arriving:
            removed = []
            if keep is not None:
                releases = sorted(set(self.releases()) | {release})
                protected = {release, self.previous(release)}
                removed = [name for name in releases[:-keep] if name not in protected]
            return Activation(release=release, shared_entries=entries, keep=keep, old=old, current=release,
                              shared=list(entries), removed=removed)
        if not self.has(release):
            raise self._not_on_disk(release)
        return Activation(
            release=release,
            shared_entries=entries,
            keep=keep,
            old=old,
            current=release,
            shared=self.unlinked_shared(release, entries),
            removed=self.expired(keep, current=release) if keep is not None else [],
        )

    def carry_out(self, plan, check=None):
        """Link the shared entries, switch ``current``, run ``check``, clean up; return what was done.

        ``check(release_dir)`` runs only when ``current`` switched; it returns
        None when the release is healthy, else why not. Then ``current`` goes
        back to the release that was current before (or is removed again if
        there was none), nothing is cleaned up, and the returned activation's
        ``check_failed`` says why. Raises ReleaseError when a step fails,
        naming what is current then.
        """
        release = plan.release
        done = Activation(
            release=release, shared_entries=plan.shared_entries, keep=plan.keep,
            old=plan.old, current=plan.old,
        )
        done.shared = self.link_shared(release, plan.shared_entries)
        done.old, done.current = self.activate(release)
        if check is not None and done.switches:
            why = check(self.release_dir(release))
            if why is not None:
                try:
                    self.revert(done.old)
                except ReleaseError as exc:
                    raise ReleaseError(
                        f"release {release} failed its health check ({why}) and rolling back "
                        f"to {done.old} failed: {exc}; {release} is still current"
                    ) from exc
                log.warning("%s: release %s failed its health check, rolled back: %s",
                            self.base_dir, release, why)
                done.current, done.check_failed = done.old, why
                return done
        if plan.keep is not None:
            try:
                done.removed = self.cleanup(plan.keep)
            except ReleaseError as exc:
                raise ReleaseError(
                    f"release {release} is current but removing old releases failed: {exc}"
                ) from exc
        return done

    # Clean-up.

    def expired(self, keep, current=None):
        """Return the releases :meth:`cleanup` would remove, oldest first.

        All but the newest ``keep``, never ``current`` (default: the one on
        disk) nor its rollback target. Pass ``current`` to ask what would go
        once another release is current.
        """
        _check_keep(keep)
        if current is None:
            current = self.current()
        protected = {current, self.previous(current)} if current is not None else set()
        releases = self.releases()
        return [name for name in releases[:-keep] if name not in protected]

    def cleanup(self, keep):
        """Remove the releases beyond ``keep`` (see :meth:`expired`); return their names.

        Each is renamed to a hidden name first, so a half-removed release is
        never listed as finished.
        """
        removed = []
        for release in self.expired(keep):
            path = self.release_dir(release)
            doomed = os.path.join(
                self.releases_dir, f"{REMOVING_PREFIX}{release}-{uuid.uuid4().hex[:8]}"
            )
            try:
                os.rename(path, doomed)
                shutil.rmtree(doomed)
            except OSError as exc:
                raise ReleaseError(
                    f"cannot remove release {release} ({path}): {exc.strerror or exc}"
                ) from exc
            removed.append(release)
            log.info("%s: removed release %s", self.base_dir, release)
        return removed


def check_failure(check_cmd, check_timeout, result):
    """Say why a health check failed, or return None when it passed.

    ``result`` is the command's outcome as Salt's ``cmd.run_all`` returns it
    (``retcode``, ``stdout``, ``stderr``; a timed-out command has retcode 1 and
    "Timed out after" in its output).
    """
    if result.get("retcode") == 0:
        return None
    output = (result.get("stderr") or result.get("stdout") or "").strip()
    if "Timed out after" in output:
        return f"check_cmd {check_cmd!r} timed out after {check_timeout}s"
    last_line = output.splitlines()[-1][:300] if output else "no output"
    return f"check_cmd {check_cmd!r} exited {result.get('retcode')}: {last_line}"


def command_check(run, check_cmd, check_timeout, errors=()):
    """Return a health check for :meth:`ReleaseTree.carry_out` that runs ``check_cmd``.

    ``run`` runs the command as Salt's ``cmd.run_all`` does (same arguments,
    same result); the check runs it in the release directory and returns
    :func:`check_failure`'s verdict. An exception of one of ``errors`` means
    the command could not run at all, which fails the check too.
    """

    def check(release_dir):
        try:
            result = run(check_cmd, cwd=release_dir, timeout=check_timeout, python_shell=True)
        except errors as exc:
            return f"check_cmd {check_cmd!r} could not run: {exc}"
        return check_failure(check_cmd, check_timeout, result)

    return check


def staging_dir(base_dir, release):
    """Make and return a fresh directory to write ``release`` into.

    It is ``<base_dir>/releases/.staging-<release>-<random>`` (mode 0700 until
    the writer sets the release's mode); rename it to
    ``ReleaseTree.release_dir(release)`` only when every file is written.
    ``base_dir`` is a path or a :class:`ReleaseTree`.
    """
    tree = base_dir if isinstance(base_dir, ReleaseTree) else ReleaseTree(base_dir)
    check_release_name(release)
    try:
        os.makedirs(tree.releases_dir, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{release}-", dir=tree.releases_dir)
    except OSError as exc:
        raise ReleaseError(
            f"cannot make a staging directory for release {release} in {tree.releases_dir}: "
            f"{exc.strerror or exc}"
        ) from exc
