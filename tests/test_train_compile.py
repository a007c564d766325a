"""Tier 2: ``train.compile_dense`` and ``train.metrics_every`` through the real Trainer (1 rank, CPU).

compile_dense compiles everything after the embedding lookup under DMP + TrainPipelineSparseDist;
the run must match eager: same seed, data and steps give the same validation NE (within 0.1%).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from c2al_rec.config import ConfigError, TrainConfig, load_config
from c2al_rec.train.launch import launch
from c2al_rec.train.trainer import Trainer

SMOKE = Path(__file__).resolve().parent.parent / "launch" / "configs" / "smoke.toml"


def _cfg(tmp_path: Path, **train):
    cfg = load_config(SMOKE)
    return replace(
        cfg,
        data=replace(cfg.data, path=str(tmp_path / "data"), synthetic=replace(cfg.data.synthetic, rows=6000)),
        cohorts=replace(
            cfg.cohorts, enabled=True, spec=str(SMOKE.parent.parent / "cohorts" / "user_value_p5_p95.json")
        ),
        train=replace(cfg.train, max_steps=6, eval_every=0, log_every=0, eval_batches=4, **train),
        checkpoint=replace(cfg.checkpoint, every_steps=0),
    )


def test_compiled_dense_part_trains_like_eager(tmp_path: Path) -> None:
    from torch._dynamo.utils import counters

    eager = launch(_cfg(tmp_path, compile_dense="off"), tmp_path / "eager")
    counters.clear()
    compiled = launch(_cfg(tmp_path, compile_dense="on"), tmp_path / "compiled")
    assert counters["frames"]["ok"] >= 1, "the dense part was not compiled"
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert eager is not None and compiled is not None
    assert compiled["steps"] == eager["steps"] == 6
    ne, ne_ref = compiled["primary"]["ne"], eager["primary"]["ne"]
    assert abs(ne - ne_ref) / ne_ref < 1e-3, (ne, ne_ref)


def test_metrics_every_samples_the_training_metrics(tmp_path: Path, monkeypatch) -> None:
    updates: list[int] = []
    original = Trainer._update_metrics

    def counting(self, metrics, out):  # type: ignore[no-untyped-def]
        if metrics is self.metrics:  # training metrics only; validation counts every batch
            updates.append(self.step)
        original(self, metrics, out)

    monkeypatch.setattr(Trainer, "_update_metrics", counting)
    assert launch(_cfg(tmp_path, metrics_every=3, compile_dense="off"), tmp_path / "run") is not None
    assert updates == [3, 6]


def test_metrics_every_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="train.metrics_every must be >= 1, got 0"):
        TrainConfig(metrics_every=0)
