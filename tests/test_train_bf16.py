"""Tier 2: ``train.bf16 = true`` trains through TrainPipelineSparseDist (its fx trace of the task).

Regression: the task read the autocast device type from ``dense.device``, a proxy while the
pipeline traces the task, so every bf16 run failed at its first step.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from c2al_rec.config import load_config
from c2al_rec.train.launch import launch

SMOKE = Path(__file__).resolve().parent.parent / "launch" / "configs" / "smoke.toml"


def _run(tmp_path: Path, bf16: bool) -> dict:
    cfg = load_config(SMOKE)
    cfg = replace(
        cfg,
        data=replace(cfg.data, path=str(tmp_path / "data"), synthetic=replace(cfg.data.synthetic, rows=6000)),
        cohorts=replace(cfg.cohorts, spec=str(SMOKE.parent.parent / "cohorts" / "user_value_p5_p95.json")),
        train=replace(cfg.train, bf16=bf16, max_steps=6, eval_every=0, log_every=0, eval_batches=4),
        checkpoint=replace(cfg.checkpoint, every_steps=0),
    )
    metrics = launch(cfg, tmp_path / ("bf16" if bf16 else "fp32"))
    assert metrics is not None
    return metrics


def test_bf16_autocast_trains_through_the_pipeline(tmp_path: Path) -> None:
    fp32 = _run(tmp_path, bf16=False)
    bf16 = _run(tmp_path, bf16=True)
    assert bf16["steps"] == fp32["steps"] == 6
    ne, ne_ref = bf16["primary"]["ne"], fp32["primary"]["ne"]
    assert math.isfinite(ne)
    # same seed, data and steps: bf16 rounding moves the validation NE only slightly
    assert abs(ne - ne_ref) / ne_ref < 0.01, (ne, ne_ref)
