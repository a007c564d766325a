"""Tier 1: NE / calibration / AUC against references, and the NE_diff intervals' behaviour."""

import numpy as np
import pytest
import torch
from torchrec.metrics.metrics_config import RecComputeMode, RecTaskInfo
from torchrec.metrics.ne import NEMetric

from c2al_rec.analysis.stats import (
    DiffInterval,
    auc,
    calibration,
    normalized_entropy,
    paired_bootstrap,
    seed_interval,
)


def _data(n: int = 20000, seed: int = 0):
    rng = np.random.default_rng(seed)
    true = 1 / (1 + np.exp(-(rng.normal(size=n) - 3)))
    labels = (rng.random(n) < true).astype(np.float64)
    return true, labels, rng


def test_ne_agrees_with_torchrec_ne_metric() -> None:
    probs, labels, rng = _data()
    weights = rng.random(len(labels)) + 0.5
    task = RecTaskInfo(name="t", label_name="label", prediction_name="prediction", weight_name="weight")
    metric = NEMetric(
        world_size=1,
        my_rank=0,
        batch_size=len(labels),
        tasks=[task],
        compute_mode=RecComputeMode.UNFUSED_TASKS_COMPUTATION,
        window_size=len(labels),
    )
    metric.update(
        predictions={"t": torch.tensor(probs)}, labels={"t": torch.tensor(labels)}, weights={"t": torch.tensor(weights)}
    )
    ref = float(metric.compute()["ne-t|lifetime_ne"])
    assert normalized_entropy(probs, labels, weights) == pytest.approx(ref, rel=1e-6)


def test_ne_calibration_auc_basics() -> None:
    probs, labels, _ = _data()
    rate = labels.mean()
    assert normalized_entropy(np.full_like(probs, rate), labels) == pytest.approx(1.0, rel=1e-9)
    assert normalized_entropy(probs, labels) < 1.0
    assert calibration(np.full_like(probs, rate), labels) == pytest.approx(1.0)
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(np.array([0.1, 0.2]), np.array([1, 1])) is None


def test_bootstrap_interval_covers_and_detects_a_real_difference() -> None:
    probs, labels, rng = _data()
    worse = np.clip(probs * np.exp(rng.normal(0, 0.3, size=len(probs))), 1e-6, 1 - 1e-6)
    d = paired_bootstrap(worse, probs, labels, num_resamples=300)
    assert d.ne_diff > 0 and d.ci95[0] > 0 and d.p_value < 0.01 and d.ci_kind == "rows"
    assert d.ci95[0] <= d.ne_diff <= d.ci95[1]
    same = paired_bootstrap(probs, probs, labels, num_resamples=100)
    assert same.ne_diff == 0 and same.ci95 == (0.0, 0.0)


def test_seed_interval_widens_with_seed_spread() -> None:
    tight = [DiffInterval(x, (0, 0), 0.5, "rows", 1e-4) for x in (-0.010, -0.011, -0.009)]
    loose = [DiffInterval(x, (0, 0), 0.5, "rows", 1e-4) for x in (-0.03, 0.01, -0.01)]
    a, b = seed_interval(tight), seed_interval(loose)
    assert a.ci_kind == "seeds" and a.ci95[1] < 0 and a.p_value < 0.05
    assert b.ci95[0] < 0 < b.ci95[1] and (b.ci95[1] - b.ci95[0]) > 5 * (a.ci95[1] - a.ci95[0])
    with pytest.raises(ValueError, match="two seeds"):
        seed_interval(tight[:1])
