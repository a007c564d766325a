"""One writer per run directory: an OS lock on ``<run>/.lock``, and no silent reuse of another run's directory.

The launching process takes the lock (``c2al-rec train``, the process that spawns the ranks; rank 0
under torchrun / torchx) and holds it for the whole run. It is an ``fcntl.flock``: the kernel drops
it when the process exits, crashes or is killed, so a stale lock file never blocks a later run. The
file holds the holder's pid and host, which a refused second writer reports.

A directory that holds a run (``config.toml``, ``checkpoints/``, ``metrics.json``...) is trained into
only to continue it (``checkpoint.resume`` auto or one of its own checkpoints) or after
``--overwrite`` cleared it; otherwise two runs would share checkpoints, pruning and ``best``.

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
from pathlib import Path
from typing import Any, Optional

LOCK_FILE = ".lock"
# Files and directories of a run (`c2al-rec train --help`); any one of them means "holds a run".
RUN_MARKERS = ("config.toml", "checkpoints", "metrics.json", "provenance.json", "cohorts.json", "train.log")


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
        self._fd: Optional[int] = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(self.path)
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
        if self.created and {p.name for p in self.run_dir.iterdir()} == {LOCK_FILE}:
            # nothing was written: leave no trace (unlink while still holding the lock)
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.run_dir, ignore_errors=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _describe_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f" (pid {int(info['pid'])} on host {info['host']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


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
    if overwrite and not present:
        others = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)
        if others:
            raise ValueError(
                f"--overwrite: {run_dir} is not a run directory (it holds {', '.join(others[:5])}); "
                "refusing to clear it"
            )


def clear_run_dir(run_dir: Path) -> None:
    """Remove everything in ``run_dir`` but the lock file (call only while holding the lock)."""
    for p in Path(run_dir).iterdir():
        if p.name == LOCK_FILE:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def claim_run_dir(run_dir: Path, resume: str, overwrite: bool) -> RunLock:
    """Lock ``run_dir`` for this process, check it (``check_run_dir``) and clear it on ``overwrite``.

    The check runs again under the lock: a run directory's state is only trusted while holding it.

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
    except BaseException:
        lock.release()
        raise
    return lock
