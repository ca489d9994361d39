"""What may go into a release tree: the rules every archive member must pass.

One :class:`MemberGuard` checks the members of one archive in order, before
each is written into a fresh staging directory. Every unpacker (GNU tar
behind libarchive's check, libarchive, tarfile) and the packer use these
rules, so whatever packs also unpacks.

Why these rules are enough without looking at the disk: the staging
directory is new and only this archive writes into it, so the guard knows
every symlink in it. A member may not be written through one of them, and a
symlink target must be a run of ``..`` followed by names only. Then every
target resolves inside the tree: the ``..`` run climbs real directories (no
member is written through a link), and names can only descend, or jump
through another symlink that obeys the same rule. A ``..`` after a name
would be unsafe once that name becomes a link later in the archive, so it is
refused, whatever the disk holds at the time.

:meth:`MemberGuard.verify_tree` closes the one gap left when another program writes
the tree (GNU tar, see :mod:`murder_core.gnu_tar`): the guard saw the
archive as libarchive or tarfile read it, and a tar that read a header
differently could write something else. Afterwards, the tree must hold
exactly what the guard passed.
"""
import os

from murder_core.errors import UnsafeArchive

FILE = "file"
DIRECTORY = "directory"
SYMLINK = "symlink"
HARDLINK = "hardlink"
KINDS = (FILE, DIRECTORY, SYMLINK, HARDLINK)


def _parts(path):
    parts = path.split("/")
    if "" in parts or "." in parts:
        parts = [part for part in parts if part not in ("", ".")]
    return parts


def canonical(path):
    """``path`` without ``./`` and doubled slashes."""
    return "/".join(_parts(path))


def link_target_problem(name, target):
    """Why the symlink ``name`` (a path inside the tree) may not point at ``target``; None when it may."""
    if not target:
        return "symlink with an empty target"
    if target.startswith("/"):
        return f"symlink to {target!r} points outside the release (absolute)"
    parts = _parts(target)
    climb = 0
    while climb < len(parts) and parts[climb] == "..":
        climb += 1
    if ".." in parts[climb:]:
        return f"symlink to {target!r} climbs after descending; write it without '..' in the middle"
    if climb > len(_parts(name)) - 1:
        return f"symlink to {target!r} points outside the release"
    return None


class MemberGuard:
    """Checks the members of one archive in order; refuses the first unsafe one."""

    def __init__(self):
        self._seen = {}
        self._links = {}

    def _refuse(self, name, why):
        raise UnsafeArchive(f"refusing archive member {name!r}: {why}")

    def check(self, name, kind, target="", mode=0):
        """Return ``(path, mode)`` to write, or None to skip the tree's own root entry.

        ``path`` is ``name`` made canonical (no ``./``, no doubled slashes),
        ``mode`` keeps the permission bits and drops setuid, setgid and
        sticky: nothing should gain privileges by being deployed.
        """
        if kind not in KINDS:
            self._refuse(name, f"{kind} (only files, directories and links go into a release)")
        if name.startswith("/"):
            self._refuse(name, "absolute path")
        parts = _parts(name)
        if not parts:
            if kind != DIRECTORY:
                self._refuse(name, "no name")
            return None
        if ".." in parts:
            self._refuse(name, "'..' in the path")
        path = "/".join(parts)
        if self._links:
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent in self._links:
                    self._refuse(path, f"would be written through the symlink {parent!r}")
        if path in self._seen:
            self._refuse(path, "appears twice in the archive")
        if kind == SYMLINK:
            problem = link_target_problem(path, target)
            if problem:
                self._refuse(path, problem)
            self._links[path] = target
        elif kind == HARDLINK and self._seen.get(canonical(target)) != FILE:
            self._refuse(path, f"hard link to {target!r}, which is not a file earlier in the release")
        self._seen[path] = kind
        return path, mode & 0o777

    def verify_tree(self, root):
        """Raise :class:`UnsafeArchive` unless ``root`` holds exactly the members this guard passed.

        Directories that only the members' paths imply are allowed, and
        returned (their paths, relative to ``root``); a hard link is a file
        on disk.
        """
        seen = self._seen
        implied = {path.rsplit("/", depth)[0] for path in seen for depth in range(1, path.count("/") + 1)}
        found, made = 0, []
        for path, kind, target in _on_disk(root):
            expected = seen.get(path)
            if expected is None:
                if kind == DIRECTORY and path in implied:
                    made.append(path)
                    continue
                raise UnsafeArchive(f"refusing the unpacked release: {path!r} ({kind}) is no member the check passed")
            found += 1
            if (FILE if expected == HARDLINK else expected) != kind:
                raise UnsafeArchive(f"refusing the unpacked release: {path!r} is a {kind}, the archive said {expected}")
            if kind == SYMLINK and target != self._links[path]:
                raise UnsafeArchive(f"refusing the unpacked release: the symlink {path!r} points at {target!r}, "
                                    f"the archive said {self._links[path]!r}")
        if found != len(seen):
            missing = sorted(set(seen) - {path for path, _, _ in _on_disk(root)})
            raise UnsafeArchive(f"refusing the unpacked release: {missing[0]!r} was not written")
        return made


def _on_disk(root):
    """Yield ``(path, kind, target)`` of everything under ``root``, paths relative to it."""
    pending = [("", root)]
    while pending:
        prefix, directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                path = prefix + entry.name
                if entry.is_symlink():
                    yield path, SYMLINK, os.readlink(entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    pending.append((path + "/", entry.path))
                    yield path, DIRECTORY, ""
                elif entry.is_file(follow_symlinks=False):
                    yield path, FILE, ""
                else:
                    yield path, "special file", ""
