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
    paired_t_interval,
    power_summary,
    seed_interval,
    t_test_power,
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


def test_seed_interval_is_the_scipy_t_interval_of_the_paired_differences() -> None:
    from scipy import stats as sps

    d = np.array([-0.0012, -0.0004, -0.0019, 0.0003, -0.0008, -0.0011, -0.0006, -0.0015, -0.0002, -0.0009])
    got = seed_interval([DiffInterval(x, (0, 0), 0.5, "rows", 0.01) for x in d])  # row se plays no part
    lo, hi = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
    assert got.ne_diff == pytest.approx(d.mean(), abs=1e-15)
    assert got.ci95 == pytest.approx((lo, hi), rel=1e-12)
    assert got.p_value == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue, rel=1e-10)
    assert paired_t_interval(d).ci95 == got.ci95


def test_power_summary_matches_a_simulated_t_test() -> None:
    rng = np.random.default_rng(0)
    sd, k = 0.0008, 10
    d = rng.normal(0, sd, size=k)
    s = power_summary(d, target=-0.001)
    assert t_test_power(s["mde"], s["sd"], k) == pytest.approx(0.8, abs=1e-6)
    need = s["seeds_for_target"]
    assert t_test_power(-0.001, s["sd"], need) >= 0.8 > t_test_power(-0.001, s["sd"], need - 1)
    # the noncentral-t power agrees with simulated t-tests at the MDE
    from scipy import stats as sps

    sims = rng.normal(-s["mde"], s["sd"], size=(4000, k))
    rejected = sps.ttest_1samp(sims, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.03)


def test_weighted_auc_against_pairwise_definition_and_ranks() -> None:
    rng = np.random.default_rng(1)
    n = 300
    probs = np.round(rng.random(n), 2)  # many ties
    labels = (rng.random(n) < probs).astype(np.float64)
    w = rng.random(n) + 0.1
    pos, neg = labels == 1, labels == 0
    sp, sn = probs[pos][:, None], probs[neg][None, :]
    pair = (sp > sn) + 0.5 * (sp == sn)
    ww = w[pos][:, None] * w[neg][None, :]
    assert auc(probs, labels, w) == pytest.approx(float((pair * ww).sum() / ww.sum()), rel=1e-12)
    assert auc(probs, labels) == pytest.approx(float(pair.mean()), rel=1e-12)
    assert auc(probs, labels, np.where(pos, 2.0, 1.0)) == pytest.approx(auc(probs, labels), rel=1e-12)
    assert auc(probs, labels, np.where(pos, 0.0, 1.0)) is None
