"""One writer per run directory: an OS lock on ``<run>/.lock``, and no silent reuse of another run's directory.

The launching process takes the lock (``c2al-rec train``, the process that spawns the ranks; rank 0
under torchrun / torchx) and holds it for the whole run. It is an ``fcntl.flock``: the kernel drops
it when the process exits, crashes or is killed, so a stale lock file never blocks a later run. The
file holds the holder's pid and host, which a refused second writer reports.

A directory that holds a run (``config.toml``, ``checkpoints/``, ``metrics.json``...) is trained into
only to continue it (``checkpoint.resume`` auto or one of its own checkpoints) or after
``--overwrite`` cleared it; otherwise two runs would share checkpoints, pruning and ``best``.

What a run creates is listed in the directory's manifest (``c2al_rec.io.owned_dir``), all of
``RUN_ENTRIES`` at once, before any of them is written. ``--overwrite`` removes only the listed
entries and refuses a directory holding anything else, or one without a manifest. The lock file is
opened without following links, and a run's own entry that is a symbolic link is refused: writing
through it would change a file outside the run.

Example::

    with claim_run_dir(Path("runs/x"), resume="never", overwrite=False):
        ...  # train
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import stat
from pathlib import Path
from typing import Any, Optional

from c2al_rec.io.owned_dir import MANIFEST_FILE, NotOwned, OwnedDir, open_nofollow

LOCK_FILE = ".lock"
# Files and directories of a run (`c2al-rec train --help`); any one of them means "holds a run".
RUN_MARKERS = ("config.toml", "checkpoints", "metrics.json", "provenance.json", "cohorts.json", "train.log")
# Everything a run may create at its top level: listed in the manifest before training writes any.
# A feature that adds an output adds its name here.
RUN_DIRS = ("checkpoints", "tensorboard")
RUN_ENTRIES = (
    LOCK_FILE,
    MANIFEST_FILE,
    *RUN_MARKERS,
    *RUN_DIRS,
    "mlflow_run.json",
    "diagnostics.jsonl",
    "diagnostics.png",
)
OWNER = "train"


class RunDirLocked(ValueError):
    """Another process holds the run directory's lock."""


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock``, held until ``release()`` or process exit.

    Args:
        run_dir: the run directory (created if missing).

    Raises:
        RunDirLocked: another process holds the lock; the message names the directory and, when
            the lock file says, the holder's pid and host.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / LOCK_FILE
        self._fd: Optional[int] = _open_lock_file(self.path)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(self._fd)
            os.close(self._fd)
            self._fd = None
            raise RunDirLocked(
                f"run directory {self.run_dir} is in use by another training process{holder}; "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())

    def release(self) -> None:
        """Drop the lock; a directory this lock created and that stayed empty is removed again."""
        if self._fd is None:
            return
        if self.created and {p.name for p in self.run_dir.iterdir()} <= {LOCK_FILE, MANIFEST_FILE}:
            # nothing was written: leave no trace (unlink while still holding the lock)
            (self.run_dir / MANIFEST_FILE).unlink(missing_ok=True)
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.run_dir, ignore_errors=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _open_lock_file(path: Path) -> int:
    """Open (create) the lock file without following a link: a ``.lock`` planted as a link to a file
    outside the run would otherwise be truncated and rewritten. A hard link is refused as well."""
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o644, ": remove it (never followed)")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else "a hard link to another file"
        raise NotOwned(f"{path} is {what}: remove it (refusing to write through it)")
    return fd


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        return f" (pid {int(info['pid'])} on host {info['host']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def check_run_entries(run_dir: Path) -> None:
    """Refuse a run directory whose own top-level entries include a symbolic link (or a file where a
    directory belongs): training would write through it, outside the run.

    Raises:
        NotOwned: (a ValueError) naming the entry.
    """
    for name in RUN_ENTRIES:
        path = Path(run_dir) / name
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            kind = "a directory" if name in RUN_DIRS else "a regular file"
            raise NotOwned(f"{path} is a symbolic link, not {kind}: a run's own entries are never links (remove it)")
        if name in RUN_DIRS and not stat.S_ISDIR(st.st_mode):
            raise NotOwned(f"{path} is not a directory")
        if name not in RUN_DIRS and not stat.S_ISREG(st.st_mode):
            raise NotOwned(f"{path} is not a regular file")


def run_markers(run_dir: Path) -> list[str]:
    """The run files present in ``run_dir`` (empty: it holds no run)."""
    return [name for name in RUN_MARKERS if (Path(run_dir) / name).exists()]


def _inside(path: str, run_dir: Path) -> bool:
    try:
        Path(path).expanduser().resolve().relative_to(run_dir.resolve())
        return True
    except ValueError:
        return False


def check_run_dir(run_dir: Path, resume: str, overwrite: bool) -> None:
    """Refuse a run that would mix with the run already in ``run_dir`` (reads only; no lock needed).

    Args:
        run_dir: the run directory (``--out``).
        resume: ``checkpoint.resume``: ``never``, ``auto`` or a checkpoint path.
        overwrite: ``--overwrite``: clear ``run_dir`` before training.

    Raises:
        ValueError: ``run_dir`` is a file; ``--overwrite`` with a resume from inside ``run_dir``;
            ``run_dir`` holds a run and neither flag allows continuing or replacing it; or
            ``--overwrite`` on a non-empty directory that is not a run directory.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {run_dir} is a file, not a run directory")
    if overwrite and resume == "auto":
        raise ValueError("--overwrite clears the run directory, --resume auto continues it: give one of them")
    if overwrite and resume != "never" and _inside(resume, run_dir):
        raise ValueError(f"--overwrite would delete the checkpoint to resume from ({resume} is inside --out {run_dir})")
    if not run_dir.is_dir():
        return
    check_run_entries(run_dir)
    owned = OwnedDir.read(run_dir)
    if owned is not None and owned.owner != OWNER:
        raise NotOwned(
            f"--out {run_dir} holds the output of `c2al-rec {owned.owner}` ({owned.path}), not a training run: "
            "choose another --out"
        )
    present = run_markers(run_dir)
    if present and not overwrite:
        if resume == "never":
            raise ValueError(
                f"--out {run_dir} holds another run ({', '.join(present)}): continue it with --resume auto, "
                "replace it with --overwrite, or choose another --out"
            )
        if resume != "auto" and not _inside(resume, run_dir):
            raise ValueError(
                f"--out {run_dir} holds another run ({', '.join(present)}) and --resume {resume} is a checkpoint "
                "of a different run: choose a new --out, or clear this one with --overwrite"
            )
    if overwrite:
        if owned is None:
            others = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)
            if others:
                raise NotOwned(
                    f"--overwrite: {run_dir} is not a run directory (it has no {MANIFEST_FILE} listing what a run "
                    f"created, and holds {', '.join(others[:5])}): refusing to clear it"
                )
        elif owned.foreign():
            raise NotOwned(
                f"--overwrite: {run_dir} holds {owned.foreign()[0]}, which no run created (it is not listed in "
                f"{owned.path}): refusing to clear the directory; move it away or choose another --out"
            )


def clear_run_dir(run_dir: Path) -> None:
    """Remove the entries the run's manifest lists, but the lock file (call only while holding the lock).

    Raises:
        NotOwned: no manifest, or an entry it does not list (nothing is removed then).
    """
    owned = OwnedDir.read(run_dir)
    if owned is None:
        if any(p.name != LOCK_FILE for p in Path(run_dir).iterdir()):
            raise NotOwned(f"--overwrite: {run_dir} has no {MANIFEST_FILE} of a training run: refusing to clear it")
        return  # nothing there to clear
    if owned.owner != OWNER:
        raise NotOwned(f"--overwrite: {run_dir} holds the output of `c2al-rec {owned.owner}`: refusing to clear it")
    owned.clear(keep=[LOCK_FILE])


def claim_run_dir(run_dir: Path, resume: str, overwrite: bool) -> RunLock:
    """Lock ``run_dir`` for this process, check it (``check_run_dir``) and clear it on ``overwrite``.

    The check runs again under the lock: a run directory's state is only trusted while holding it.
    Then the run's manifest lists ``RUN_ENTRIES`` (created, or extended when continuing a run).

    Returns:
        The held lock; release it (or exit) when the run ends.

    Raises:
        RunDirLocked: another writer holds the directory.
        ValueError: see ``check_run_dir``.
    """
    check_run_dir(run_dir, resume, overwrite)
    lock = RunLock(run_dir)
    try:
        check_run_dir(run_dir, resume, overwrite)
        if overwrite:
            clear_run_dir(run_dir)
        # every entry the run may create is listed before training writes any (resume: extended)
        OwnedDir.open(Path(run_dir), OWNER, RUN_ENTRIES)
    except BaseException:
        lock.release()
        raise
    return lock
