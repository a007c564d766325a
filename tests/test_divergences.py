"""Tier 1: disparity metrics against independent float64 computations and their invariants."""

import numpy as np
import pytest

from c2al_rec.cohorts.divergences import disparity_score, histogram_bins, prediction_disparity, smoothed_histogram
from c2al_rec.config import DISPARITY_METRICS


def _sample(rng: np.random.Generator, mean_logit: float, n: int) -> np.ndarray:
    return 1 / (1 + np.exp(-(mean_logit + rng.normal(size=n))))


def test_identical_samples_have_no_disparity() -> None:
    rng = np.random.default_rng(0)
    a = _sample(rng, -3, 5000)
    d = prediction_disparity(a, a.copy())
    assert d["kl_ab"] == pytest.approx(0, abs=1e-12) and d["js"] == pytest.approx(0, abs=1e-6)
    assert d["cosine"] == pytest.approx(1) and d["wasserstein"] == pytest.approx(0)


def test_metrics_match_direct_formulas() -> None:
    rng = np.random.default_rng(1)
    a, b = _sample(rng, -3, 4000), _sample(rng, -2, 3000)
    edges = histogram_bins(np.concatenate([a, b]), 20)
    ha, hb = smoothed_histogram(a, edges), smoothed_histogram(b, edges)
    m = 0.5 * (ha + hb)
    js_ref = np.sqrt(0.5 * np.sum(ha * np.log2(ha / m)) + 0.5 * np.sum(hb * np.log2(hb / m)))
    d = prediction_disparity(a, b, edges)
    assert d["kl_ab"] == pytest.approx(np.sum(ha * np.log(ha / hb)), rel=1e-10)
    assert d["kl_ba"] == pytest.approx(np.sum(hb * np.log(hb / ha)), rel=1e-10)
    assert d["js"] == pytest.approx(js_ref, rel=1e-10)
    assert d["cosine"] == pytest.approx(ha @ hb / np.sqrt((ha @ ha) * (hb @ hb)), rel=1e-12)
    # Wasserstein-1 in 1-D = integral of |F_a - F_b|
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid, side="right") / b.size
    assert d["wasserstein"] == pytest.approx(np.sum(np.abs(fa - fb)[:-1] * np.diff(grid)), rel=1e-9)


def test_more_separated_pairs_score_higher_on_every_metric() -> None:
    rng = np.random.default_rng(2)
    base, near, far = _sample(rng, -3, 4000), _sample(rng, -2.7, 4000), _sample(rng, -1, 4000)
    edges = histogram_bins(np.concatenate([base, near, far]))
    d_near, d_far = prediction_disparity(base, near, edges), prediction_disparity(base, far, edges)
    for metric in DISPARITY_METRICS:
        assert disparity_score(d_far, metric) > disparity_score(d_near, metric), metric
    with pytest.raises(ValueError, match="unknown 'l2'"):
        disparity_score(d_far, "l2")
