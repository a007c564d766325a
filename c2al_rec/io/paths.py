"""Recorded results name files relative to the repository, never by the recording machine's absolute path."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def relative_paths(obj: Any, root: str | Path) -> Any:
    """``obj`` (JSON-like: dicts, lists, strings) with every string that is an absolute path under
    ``root`` rewritten relative to it (``/repo/.cache/datasets/adult`` -> ``.cache/datasets/adult``).

    Strings that are not absolute paths under ``root`` (and every other value) are returned as they are.
    """
    prefix = str(Path(root).resolve()).rstrip("/") + "/"
    if isinstance(obj, dict):
        return {k: relative_paths(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relative_paths(v, root) for v in obj]
    if isinstance(obj, str) and obj.startswith(prefix):
        return obj[len(prefix):]
    return obj
