"""Output directories a command owns: a manifest of the entries it created, so clearing removes only those.

``train``, ``pipeline`` and ``experiment`` each own their ``--out`` directory. Before an entry is
created there its name goes into ``<out>/.c2al-manifest.json`` (``{"owner": "train", "entries":
[".c2al-manifest.json", ".lock", "config.toml", ...]}``; the manifest lists itself and the lock
file). Clearing the directory (``train --overwrite``) removes only the listed entries, and refuses
a directory that holds anything else, naming the first foreign entry; a directory without a
manifest is not one of ours and is never cleared. Because names go in before the entries are
created, a run killed half-way can still be cleared.

The manifest names top-level entries only: a listed directory (``checkpoints``) is owned whole.
It is read without following symbolic links, and a manifest that is a link is refused.

Example::

    owned = OwnedDir.open(Path("runs/x"), owner="train")
    owned.add("config.toml", "checkpoints")   # before writing them
    ...
    OwnedDir.read(Path("runs/x")).clear()     # --overwrite: ValueError if runs/x holds notes.txt
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path
from typing import IO, Iterable, Optional

from .atomic import atomic_write_json

MANIFEST_FILE = ".c2al-manifest.json"
# A real manifest lists tens of names; anything far larger is not one (and is not read into memory).
_MAX_MANIFEST_BYTES = 1 << 20


class NotOwned(ValueError):
    """A directory (or one of its entries) that the command does not own: it is never cleared."""


def open_nofollow(path: Path, flags: int, mode: int = 0o644, hint: str = "") -> int:
    """``os.open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode)``: a file descriptor, never through a link.

    Raises:
        NotOwned: ``path`` is a symbolic link (the message ends with ``hint``).
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotOwned(f"{path} is a symbolic link, not a regular file{hint}") from None
        raise


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, opened without following a symbolic link, at most ``max_bytes`` of them.

    Raises:
        NotOwned: ``path`` is a symbolic link, not a regular file, or larger than ``max_bytes``.
        FileNotFoundError: ``path`` does not exist.
    """
    fd = open_nofollow(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotOwned(f"{path} is not a regular file")
        if st.st_size > max_bytes:
            raise NotOwned(f"{path} has {st.st_size} bytes, more than the {max_bytes} it may hold")
        return f.read(max_bytes + 1)


def open_for_append(path: Path) -> IO[str]:
    """Open ``path`` for appending text (created if missing) without following a symbolic link: the
    state files a command keeps appending to (``train.log``) never write through a planted link.

    Raises:
        NotOwned: ``path`` is a symbolic link.
    """
    return os.fdopen(open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666), "a", encoding="utf-8")


def _check_name(name: str, where: Path) -> str:
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise NotOwned(f"{where}: {name!r} is not the name of an entry of the directory")
    return name


class OwnedDir:
    """The manifest of an owned output directory.

    Args:
        root: the directory.
        owner: the command that owns it (``train``, ``pipeline``, ``experiment``).
        entries: the top-level names listed (the manifest and ``.lock`` included).
    """

    def __init__(self, root: Path, owner: str, entries: Iterable[str]) -> None:
        self.root = Path(root)
        self.owner = owner
        self.entries = set(entries) | {MANIFEST_FILE}

    @property
    def path(self) -> Path:
        return self.root / MANIFEST_FILE

    @classmethod
    def read(cls, root: Path) -> Optional["OwnedDir"]:
        """The manifest of ``root``; None when it has none.

        Raises:
            NotOwned: the manifest is a symbolic link, not a regular file, or malformed.
        """
        path = Path(root) / MANIFEST_FILE
        try:
            raw = read_regular_file(path, _MAX_MANIFEST_BYTES)
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(raw)
            owner, entries = doc["owner"], doc["entries"]
            if not isinstance(owner, str) or not isinstance(entries, list):
                raise TypeError("'owner' must be a string and 'entries' a list")
        except (ValueError, KeyError, TypeError) as e:
            raise NotOwned(f"{path}: malformed manifest ({type(e).__name__}: {e})") from None
        return cls(Path(root), owner, (_check_name(n, path) for n in entries))

    @classmethod
    def open(cls, root: Path, owner: str, entries: Iterable[str | Path] = ()) -> "OwnedDir":
        """Create ``root`` if needed and its manifest if missing, then list ``entries`` (see ``add``).

        Entries already in ``root`` that nobody listed stay unlisted: they are not ours.

        Raises:
            NotOwned: ``root`` is owned by another command (another owner in its manifest), or its
                manifest is unreadable.
        """
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        owned = cls.read(root)
        if owned is None:
            owned = cls(root, owner, ())
            owned._write()
        elif owned.owner != owner:
            raise NotOwned(
                f"{root} holds the output of `c2al-rec {owned.owner}` ({owned.path}), not of {owner}: "
                "choose another --out"
            )
        owned.add(*entries)
        return owned

    def add(self, *entries: str | Path) -> None:
        """List ``entries`` before creating them: names, or paths under the root (their top-level
        component is listed; paths elsewhere are ignored). Rewrites the manifest when it grows."""
        names = set()
        for entry in entries:
            if isinstance(entry, Path):
                try:
                    entry = entry.relative_to(self.root).parts[0]
                except (ValueError, IndexError):
                    continue  # not inside the root: not an entry of it
            names.add(_check_name(entry, self.path))
        if not names <= self.entries:
            self.entries |= names
            self._write()

    def lists(self, name: str) -> bool:
        """Whether ``name`` is listed, or is the temp file of a listed entry that a killed atomic write
        left (``.<entry>.<random>``, see ``c2al_rec.io.atomic``)."""
        return name in self.entries or any(name.startswith(f".{e}.") for e in self.entries)

    def foreign(self) -> list[str]:
        """Entries present in the directory that the manifest does not list, sorted."""
        return sorted(p.name for p in self.root.iterdir() if not self.lists(p.name))

    def clear(self, keep: Iterable[str] = ()) -> None:
        """Remove every listed entry but ``keep`` and the manifest; links are removed, never followed.

        Raises:
            NotOwned: the directory holds an entry the manifest does not list (named); nothing is removed.
        """
        foreign = self.foreign()
        if foreign:
            raise NotOwned(
                f"{self.root} holds {foreign[0]}, which `c2al-rec {self.owner}` did not create (it is not listed in "
                f"{self.path}): refusing to clear the directory; move it away or choose another --out"
            )
        keep = set(keep) | {MANIFEST_FILE}
        for path in sorted(self.root.iterdir()):  # every one listed (or a listed entry's temp file)
            if path.name in keep:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        self.entries = keep
        self._write()

    def _write(self) -> None:
        atomic_write_json(self.path, {"owner": self.owner, "entries": sorted(self.entries | {MANIFEST_FILE})})
