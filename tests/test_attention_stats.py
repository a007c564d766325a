"""Tier 1: attention-weight statistics on distributions with known properties."""

from pathlib import Path

import numpy as np
import pytest

from c2al_rec.analysis.attention import plot_attention_comparison, weight_stats


def test_sparse_vs_dense_weights() -> None:
    rng = np.random.default_rng(0)
    sparse = np.where(rng.random(50_000) < 0.8, 0.0, rng.normal(0, 1, 50_000))
    dense = rng.normal(0, 0.5, 50_000)
    s, d = weight_stats(sparse), weight_stats(dense)
    assert s["near_zero_fraction"] == pytest.approx(0.8 + 0.2 * 0.008, abs=0.01)
    assert d["near_zero_fraction"] < 0.03
    assert s["gini"] > d["gini"] and s["kurtosis"] > d["kurtosis"]
    assert abs(d["kurtosis"]) < 0.1  # a Gaussian has zero excess kurtosis
    assert sum(d["histogram"]["counts"]) == 50_000


def test_gini_extremes() -> None:
    assert weight_stats(np.ones(1000))["gini"] == pytest.approx(0.0, abs=1e-12)
    assert weight_stats(np.ones(1000))["kurtosis"] is None  # undefined at zero variance, not a number
    one_hot = np.zeros(1000)
    one_hot[0] = 1.0
    assert weight_stats(one_hot)["gini"] == pytest.approx(0.999, abs=1e-3)


def test_comparison_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    runs = {
        "baseline": {"fm0": weight_stats(rng.normal(size=1000))},
        "c2al": {"fm0": weight_stats(rng.normal(size=1000) * 2)},
    }
    png = plot_attention_comparison(runs, tmp_path / "att.png")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"
