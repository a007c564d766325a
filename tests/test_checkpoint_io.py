"""Tier 1: atomic checkpoint writes, retention, resolution (single process, no process group)."""

import os
from pathlib import Path

import pytest
import torch

from c2al_rec.distributed import checkpoint as ckpt_io


def _save(run: Path, step: int, keep: int = 2, protect: str | None = None) -> Path:
    state = {"model": {"w": torch.full((3,), float(step))}}
    return ckpt_io.save_checkpoint(run, step, state, {"step": step}, keep=keep, protect=protect)


def test_save_load_prune_and_resolve(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        _save(tmp_path, step, keep=2, protect="step_10")
    names = [p.name for p in ckpt_io.list_checkpoints(tmp_path)]
    assert names == ["step_10", "step_20", "step_30"]  # step_10 protected (best), newest 2 kept
    _save(tmp_path, 40, keep=2)
    assert [p.name for p in ckpt_io.list_checkpoints(tmp_path)] == ["step_30", "step_40"]
    latest = ckpt_io.resolve_checkpoint(tmp_path)
    assert latest.name == "step_40" and ckpt_io.resolve_checkpoint(latest) == latest
    state = {"model": {"w": torch.zeros(3)}}
    ckpt_io.load_checkpoint(latest, state)
    assert state["model"]["w"].tolist() == [40.0] * 3
    assert ckpt_io.load_rng(latest, 0) is not None and ckpt_io.load_rng(latest, 5) is None


def test_crash_during_write_leaves_previous_checkpoint_loadable(tmp_path: Path, monkeypatch) -> None:
    _save(tmp_path, 10)
    real_replace = os.replace

    def crash(src, dst):  # the process dies between writing the shards and publishing them
        if "step_20" in str(dst):
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt_io.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 20)
    monkeypatch.setattr(ckpt_io.os, "replace", real_replace)
    assert (tmp_path / "checkpoints" / ".tmp_step_20").is_dir()  # the half-written one
    assert ckpt_io.resolve_checkpoint(tmp_path).name == "step_10"
    state = {"model": {"w": torch.zeros(3)}}
    ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(tmp_path), state)
    assert state["model"]["w"].tolist() == [10.0] * 3
    _save(tmp_path, 30)  # the next save clears the stale temp directory
    assert not list((tmp_path / "checkpoints").glob(".tmp_*"))


def test_resolve_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ckpt_io.resolve_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="best"):
        ckpt_io.resolve_checkpoint(tmp_path, which="best")
