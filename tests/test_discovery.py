"""Tier 1: discovery finds the planted disparate pair and enforces its size limits."""

import numpy as np
import pyarrow as pa
import pytest

from c2al_rec.cohorts.discovery import categorical_cohorts, discover_axis, parse_axis_spec
from c2al_rec.cohorts.spec import quantile_cohorts


def _world(n: int = 40000, seed: int = 0):
    rng = np.random.default_rng(seed)
    value = rng.normal(size=n)
    # predictions shift strongly with user value at the extremes only
    logit = -3 + 1.5 * (value > 1.64) - 1.5 * (value < -1.64) + 0.3 * rng.normal(size=n)
    probs = 1 / (1 + np.exp(-logit))
    labels = (rng.random(n) < probs).astype(np.int64)
    return value, probs, labels


def test_numeric_axis_picks_the_extreme_pair_with_head_the_higher_rate() -> None:
    value, probs, labels = _world()
    axis = parse_axis_spec("user_value:quantiles=0.05,0.25,0.5,0.75,0.95")
    result = discover_axis(axis, pa.array(value), probs, labels, min_rows=500, min_positives=20)
    spec = result.spec
    assert spec is not None
    assert spec.names == ["p0-p5", "p5-p25", "p25-p50", "p50-p75", "p75-p95", "p95+"]
    assert (spec.head, spec.tail) == ("p95+", "p0-p5")
    assert len(spec.pairs) == 15 and spec.pairs[0]["score"] == result.best_score
    assert spec.selection == {"metric": "js", "min_rows": 500, "min_positives": 20}
    for key in ("kl_ab", "kl_ba", "js", "cosine", "wasserstein", "rows_a", "rows_b", "plr_a", "plr_b"):
        assert key in spec.pairs[0]


def test_size_limits_exclude_small_cohorts_and_say_which_limit() -> None:
    value, probs, labels = _world()
    axis = parse_axis_spec("user_value:quantiles=0.05,0.95")
    # the 5% cohorts have ~2000 rows: a 3000-row minimum leaves no eligible pair
    result = discover_axis(axis, pa.array(value), probs, labels, min_rows=3000, min_positives=1)
    assert result.spec is None and "min_rows=3000" in result.reason
    result = discover_axis(axis, pa.array(value), probs, labels, min_rows=10, min_positives=10**6)
    assert result.spec is None and "min_positives" in result.reason


def test_rare_categorical_values_merge_into_other() -> None:
    col = pa.array(["a"] * 500 + ["b"] * 490 + ["c"] * 5 + ["d"] * 5)
    cohorts = categorical_cohorts(col, rare_share=0.01)
    assert [c.name for c in cohorts] == ["a", "b", "other"] and cohorts[2].values == ["c", "d"]


@pytest.mark.parametrize("text", ["user_value", "x:quantiles=0.5,0.2", "x:quantiles=a", "x:bins=3", "x:quantiles=1.5"])
def test_bad_axis_specs(text: str) -> None:
    with pytest.raises(ValueError, match="--axes"):
        parse_axis_spec(text)


def test_axis_with_one_cohort_is_an_error() -> None:
    with pytest.raises(ValueError, match="fewer than two"):
        discover_axis(parse_axis_spec("g:categorical"), pa.array(["x"] * 100), np.full(100, 0.1), np.zeros(100))


def test_tied_quantiles_merge_cohorts_in_discovery() -> None:
    rng = np.random.default_rng(3)
    value = np.where(rng.random(20000) < 0.6, 0.0, rng.random(20000))  # 60% of rows tie at 0
    probs = 1 / (1 + np.exp(-(-3 + 2 * value + 0.3 * rng.normal(size=20000))))
    labels = (rng.random(20000) < probs).astype(np.int64)
    axis = parse_axis_spec("v:quantiles=0.05,0.25,0.5,0.75,0.95")
    spec = discover_axis(axis, pa.array(value), probs, labels, min_rows=100, min_positives=10).spec
    assert spec is not None and spec.names == ["p0-p75", "p75-p95", "p95+"]
    with pytest.raises(ValueError, match="empty cohort"):
        quantile_cohorts(value, [0.05, 0.25])
