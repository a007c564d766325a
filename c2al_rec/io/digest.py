"""File digests shared by checkpoint manifests and serving artifacts (``{"bytes", "sha256"}``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_HASH_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str | Path) -> dict:
    """``{"bytes": size, "sha256": hex}`` of one file, the entry form of checkpoint manifests and of
    ``metadata.json`` ``artifacts``."""
    return {"bytes": Path(path).stat().st_size, "sha256": file_sha256(path)}
