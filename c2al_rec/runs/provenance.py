"""The run directory's small files: resolved config, provenance, data fingerprint checks."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from c2al_rec.config import Config, dump_toml
from c2al_rec.io import atomic_write_json, atomic_write_text

PACKAGES = ("torch", "torchrec", "fbgemm-gpu-cpu", "fbgemm-gpu", "torchx", "pyarrow", "numpy", "c2al-rec")


def git_commit() -> str:
    """The source tree's git commit (with ``+dirty`` when modified), or ``unknown`` outside git."""
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_summary() -> dict[str, Any]:
    """CPU model, CPU count and Python version of this host (for results files)."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "python": platform.python_version()}


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def write_run_files(run_dir: Path, cfg: Config, fingerprint: dict[str, Any], world_size: int) -> None:
    """``config.toml`` (resolved) and ``provenance.json`` (git commit, versions, data fingerprint)."""
    atomic_write_text(run_dir / "config.toml", dump_toml(cfg))
    atomic_write_json(
        run_dir / "provenance.json",
        {
            "git_commit": git_commit(),
            "packages": package_versions(),
            "python": platform.python_version(),
            "host": platform.node(),
            "world_size": world_size,
            "data": fingerprint,
        },
    )


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any], force: bool, ckpt: Path) -> None:
    """Refuse to resume on changed data unless ``force``."""
    if saved == current or force:
        return
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    raise ValueError(
        f"data changed since checkpoint {ckpt} (fingerprint differs in: {', '.join(changed)}); "
        "resume anyway with --checkpoint.force=true"
    )
