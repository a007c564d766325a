"""Distributed checkpoints with ``torch.distributed.checkpoint`` (DCP), written atomically.

Layout inside a run directory (DESIGN.md "Run directory")::

    checkpoints/step_<N>/      complete checkpoints (DCP files + train_state.json + rng.pt)
    checkpoints/.tmp_step_<N>/ a write in progress (never loaded; removed by the next save)
    checkpoints/best           JSON naming the checkpoint with the best validation NE

Every rank writes its shards into the temp directory; after a barrier rank 0 adds the small
files and renames the directory, so a reader sees either a whole checkpoint or none. DCP
metadata is pickled: load only checkpoints you trust.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from c2al_rec.io import atomic_write_text

STEP_RE = re.compile(r"^step_(\d+)$")
TRAIN_STATE = "train_state.json"
RNG_FILE = "rng.pt"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if (p / ".metadata").is_file() and (p / TRAIN_STATE).is_file()]


def resolve_checkpoint(path: str | Path, which: str = "latest") -> Path:
    """A run directory (its newest complete checkpoint, or ``which="best"``) or one step_<N> directory.

    Raises:
        FileNotFoundError: nothing loadable at ``path``.
    """
    p = Path(path)
    if STEP_RE.match(p.name) and (p / ".metadata").is_file():
        return p
    if which == "best":
        marker = checkpoint_dir(p) / "best"
        if not marker.is_file():
            raise FileNotFoundError(f"{p}: no checkpoints/best marker (was validation run?)")
        best = checkpoint_dir(p) / json.loads(marker.read_text())["checkpoint"]
        if not (best / ".metadata").is_file():
            raise FileNotFoundError(f"{marker} names {best.name}, which is missing")
        return best
    ckpts = list_checkpoints(p)
    if not ckpts:
        raise FileNotFoundError(f"{p}: no complete checkpoint (expected a run directory or a step_<N> directory)")
    return ckpts[-1]


def read_train_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((Path(ckpt) / TRAIN_STATE).read_text())


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def save_checkpoint(
    run_dir: Path,
    step: int,
    state: dict[str, Any],
    train_state: dict[str, Any],
    keep: int,
    protect: Optional[str] = None,
) -> Path:
    """Save ``state`` (model / optimizer state dicts) at ``step``; collective over all ranks.

    Args:
        state: DCP-saveable nested dict (sharded tensors allowed).
        train_state: small JSON-able dict (step, data position, config...) written by rank 0.
        keep: newest checkpoints to keep; older ones are removed (``protect`` is never removed).

    Returns:
        The final ``step_<N>`` directory.
    """
    root = checkpoint_dir(run_dir)
    final = root / f"step_{step}"
    tmp = root / f".tmp_step_{step}"
    if _rank() == 0:
        for stale in root.glob(".tmp_step_*") if root.is_dir() else []:
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True, exist_ok=True)
    _barrier()
    dcp.save(state, checkpoint_id=str(tmp))
    rng = torch.get_rng_state()
    gathered: list[Any] = [None] * (dist.get_world_size() if dist.is_initialized() else 1)
    if dist.is_initialized():
        dist.all_gather_object(gathered, rng)
    else:
        gathered = [rng]
    if _rank() == 0:
        torch.save({f"rank{r}": t for r, t in enumerate(gathered)}, tmp / RNG_FILE)
        (tmp / TRAIN_STATE).write_text(json.dumps(train_state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _prune(root, keep, protect)
    _barrier()
    return final


def prune_checkpoints(run_dir: Path, keep: int, protect: Optional[str]) -> None:
    """Remove all but the newest ``keep`` complete checkpoints, never ``protect`` (rank 0 only)."""
    _prune(checkpoint_dir(run_dir), keep, protect)


def _prune(root: Path, keep: int, protect: Optional[str]) -> None:
    ckpts = list_checkpoints(root.parent)
    for old in ckpts[:-keep]:
        if old.name != protect:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(ckpt: Path, state: dict[str, Any]) -> None:
    """Load ``ckpt`` into ``state`` in place (resharding as needed); collective when a group is up."""
    dcp.load(state, checkpoint_id=str(ckpt))


def load_rng(ckpt: Path, rank: int) -> Optional[torch.Tensor]:
    """This rank's saved CPU RNG state (None when the checkpoint had fewer ranks)."""
    states = torch.load(Path(ckpt) / RNG_FILE, weights_only=True)
    return states.get(f"rank{rank}")


def write_best_marker(run_dir: Path, ckpt: Path, ne: float, step: int) -> None:
    """Point ``checkpoints/best`` at ``ckpt`` (atomic write; rank 0 only)."""
    atomic_write_text(checkpoint_dir(run_dir) / "best", json.dumps({"checkpoint": ckpt.name, "ne": ne, "step": step}))


def best_checkpoint_name(run_dir: Path) -> Optional[str]:
    marker = checkpoint_dir(run_dir) / "best"
    return json.loads(marker.read_text())["checkpoint"] if marker.is_file() else None


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
