"""NE, calibration, AUC in float64, and the intervals for NE_diff = (NE - NE_base) / NE_base.

Two sources of uncertainty: which rows were scored (paired bootstrap over rows, the same
resampled rows for both models) and which seed trained the models (paired differences across
seeds). With several seeds the interval carries both (``seed_interval``); with one seed it is
row-level only and says so (``ci_kind = "rows"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import stats as sps

EPS = 1e-12


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(p.astype(np.float64), EPS, 1 - EPS)


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row binary cross-entropy (nats), float64 [N]."""
    p, y = _clip(probs), labels.astype(np.float64)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def normalized_entropy(probs: np.ndarray, labels: np.ndarray, weights: Optional[np.ndarray] = None) -> float:
    """NE = weighted BCE(model) / weighted BCE(predicting the weighted mean label)."""
    w = np.ones(len(labels)) if weights is None else weights.astype(np.float64)
    y = labels.astype(np.float64)
    rate = float(np.clip((w * y).sum() / w.sum(), EPS, 1 - EPS))
    base = -(rate * np.log(rate) + (1 - rate) * np.log1p(-rate))
    return float((w * cross_entropy(probs, labels)).sum() / w.sum() / base)


def calibration(probs: np.ndarray, labels: np.ndarray, weights: Optional[np.ndarray] = None) -> float:
    """Sum of predictions / sum of labels (1 = calibrated), weighted."""
    w = np.ones(len(labels)) if weights is None else weights.astype(np.float64)
    return float((w * probs).sum() / max(EPS, (w * labels).sum()))


def auc(probs: np.ndarray, labels: np.ndarray) -> Optional[float]:
    """ROC AUC by ranks (ties averaged); None when only one class is present."""
    y = labels.astype(bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return None
    ranks = sps.rankdata(probs)
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


@dataclass
class DiffInterval:
    """NE_diff with its 95% interval and p-value."""

    ne_diff: float
    ci95: tuple[float, float]
    p_value: float
    ci_kind: str
    """'rows' (bootstrap over rows, one seed) or 'seeds' (paired across seeds, rows included)."""
    se: float


def ne_diff(ne: float, ne_base: float) -> float:
    return (ne - ne_base) / ne_base


def paired_bootstrap(
    probs: np.ndarray,
    probs_base: np.ndarray,
    labels: np.ndarray,
    weights: Optional[np.ndarray] = None,
    num_resamples: int = 1000,
    seed: int = 0,
    chunk: int = 50,
) -> DiffInterval:
    """Row-level interval for NE_diff: Poisson bootstrap, the same resampled rows for both models.

    Each resample weights row i by Poisson(1) (times its sample weight), which approximates the
    multinomial bootstrap for large N and vectorises over resamples.
    """
    w0 = np.ones(len(labels)) if weights is None else weights.astype(np.float64)
    y = labels.astype(np.float64)
    ce, ce_b = cross_entropy(probs, labels), cross_entropy(probs_base, labels)
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, num_resamples, chunk):
        n = min(chunk, num_resamples - start)
        w = rng.poisson(1.0, size=(n, len(labels))) * w0  # [n, N]
        wsum = w.sum(1)
        rate = np.clip((w @ y) / wsum, EPS, 1 - EPS)
        base = -(rate * np.log(rate) + (1 - rate) * np.log1p(-rate))
        ne = (w @ ce) / wsum / base
        ne_b = (w @ ce_b) / wsum / base
        diffs.append((ne - ne_b) / ne_b)
    d = np.concatenate(diffs)
    point = ne_diff(normalized_entropy(probs, labels, weights), normalized_entropy(probs_base, labels, weights))
    lo, hi = np.quantile(d, [0.025, 0.975])
    p = 2 * min((d <= 0).mean(), (d >= 0).mean())
    return DiffInterval(
        point, (float(lo), float(hi)), float(min(1.0, max(p, 1 / len(d)))), "rows", float(d.std(ddof=1))
    )


def seed_interval(per_seed: list[DiffInterval]) -> DiffInterval:
    """Combine per-seed paired NE_diffs into one interval that carries seed-to-seed variance.

    The mean of the K per-seed differences has variance s_seed^2 / K (its spread across seeds,
    which already includes each seed's own row noise on its own test rows) plus, to stay
    conservative when the test rows are shared, the mean row-bootstrap variance / K. A t
    interval with K - 1 degrees of freedom; p-value from the same t statistic.
    """
    k = len(per_seed)
    if k < 2:
        raise ValueError("seed_interval needs at least two seeds")
    d = np.array([x.ne_diff for x in per_seed])
    row_var = float(np.mean([x.se**2 for x in per_seed]))
    se = float(np.sqrt(d.var(ddof=1) / k + row_var / k))
    t = sps.t.ppf(0.975, df=k - 1)
    mean = float(d.mean())
    p = float(2 * sps.t.sf(abs(mean) / se, df=k - 1)) if se > 0 else 0.0
    return DiffInterval(mean, (mean - t * se, mean + t * se), p, "seeds", se)
