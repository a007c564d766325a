"""Atomic writes: a temp file (or directory) in the same directory + rename, so readers never see half of it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and ``os.replace``.

    An OSError names ``path`` (not the temp file, and also when the failed write names no file: a full disk).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename2 is None:
            e.filename = str(path)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Pretty JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(out: str | Path) -> Iterator[Path]:
    """Fill a temp sibling directory, then swap it in for ``out``; on error nothing of it remains.

    Example::

        with atomic_directory("runs/export") as tmp:
            (tmp / "model.pt").write_bytes(...)
        # runs/export now holds exactly what was written into tmp
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the directory is meant to be shared
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, 0o666 & ~_umask())
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
