"""NE, calibration, AUC in float64, and the intervals for NE_diff = (NE - NE_base) / NE_base.

Two sources of uncertainty: which rows were scored (paired bootstrap over rows, the same
resampled rows for both models) and which seed trained the models. With several seeds the
interval is a t-interval over the per-seed paired differences (``seed_interval``): each seed's
difference is one observation whose spread already carries that seed's row noise. With one seed
it is row-level only and says so (``ci_kind = "rows"``). ``power_summary`` turns the measured
paired spread into the smallest effect a run could detect and the seeds a target effect needs.
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


def auc(probs: np.ndarray, labels: np.ndarray, weights: Optional[np.ndarray] = None) -> Optional[float]:
    """ROC AUC, sample-weighted: the weighted share of (positive, negative) pairs ranked correctly,
    ties counting one half. None when either class has no weight."""
    y = labels.astype(bool)
    w = np.ones(len(y)) if weights is None else weights.astype(np.float64)
    w_pos, w_neg = float(w[y].sum()), float(w[~y].sum())
    if w_pos == 0 or w_neg == 0:
        return None
    # per distinct score: positive and negative weight; negatives strictly below come from a cumsum
    _, group = np.unique(probs, return_inverse=True)
    pos = np.bincount(group, weights=w * y)
    neg = np.bincount(group, weights=w * ~y)
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (w_pos * w_neg))


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
    """Combine per-seed paired NE_diffs (model vs baseline of the same seed) into a seed-level interval.

    A t-interval with K - 1 degrees of freedom over the K per-seed differences d_s: mean(d) +-
    t_{0.975, K-1} * sd(d) / sqrt(K); the p-value comes from the same t statistic. Rows enter
    only through each seed's own estimate d_s.
    """
    return paired_t_interval([x.ne_diff for x in per_seed])


def paired_t_interval(diffs: list[float] | np.ndarray) -> DiffInterval:
    """t-interval and two-sided p-value of the mean of paired per-seed differences ``diffs`` [K]."""
    d = np.asarray(diffs, dtype=np.float64)
    k = len(d)
    if k < 2:
        raise ValueError("seed_interval needs at least two seeds")
    se = float(d.std(ddof=1) / np.sqrt(k))
    t = sps.t.ppf(0.975, df=k - 1)
    mean = float(d.mean())
    if se > 0:
        p = float(2 * sps.t.sf(abs(mean) / se, df=k - 1))
    else:
        p = 1.0 if mean == 0 else 0.0
    return DiffInterval(mean, (mean - t * se, mean + t * se), p, "seeds", se)


def t_test_power(effect: float, sd: float, num_seeds: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test (K = ``num_seeds``) to detect a true mean ``effect``
    when per-seed differences spread with standard deviation ``sd`` (noncentral t)."""
    df = num_seeds - 1
    if sd <= 0:
        return 1.0 if effect != 0 else alpha
    crit = sps.t.ppf(1 - alpha / 2, df)
    nc = abs(effect) * np.sqrt(num_seeds) / sd
    p = float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))
    return 1.0 if np.isnan(p) else p  # scipy's nct gives NaN far in the tail, where power is 1


def power_summary(
    diffs: list[float] | np.ndarray, target: float = -0.001, power: float = 0.8, max_seeds: int = 10_000
) -> dict[str, float | int | None]:
    """From measured per-seed paired differences: the smallest |NE_diff| this many seeds detect with
    ``power`` (two-sided 5% t-test), and the seeds needed to detect ``target`` (e.g. -0.1%).

    Returns ``{"seeds", "sd", "mde", "target", "seeds_for_target"}`` (``seeds_for_target`` None when
    more than ``max_seeds`` would be needed).
    """
    from scipy.optimize import brentq

    d = np.asarray(diffs, dtype=np.float64)
    k, sd = len(d), float(d.std(ddof=1))
    if k < 2:
        raise ValueError("power_summary needs at least two seeds")
    if sd == 0:
        return {"seeds": k, "sd": 0.0, "mde": 0.0, "target": target, "seeds_for_target": 2}
    hi = sd * 50  # power(50 sd) is 1 for any K >= 2
    mde = float(brentq(lambda e: t_test_power(e, sd, k) - power, 0.0, hi))
    need: Optional[int] = None
    n = 2
    while n <= max_seeds:
        if t_test_power(target, sd, n) >= power:
            need = n
            break
        n = n + 1 if n < 64 else int(n * 1.25)
    return {"seeds": k, "sd": sd, "mde": mde, "target": target, "seeds_for_target": need}
