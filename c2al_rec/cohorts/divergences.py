"""Disparity between two cohorts' distributions of predicted probabilities.

KL (both ways) and Jensen-Shannon on smoothed histograms over shared bins, cosine similarity of
the histograms, and the 1-D Wasserstein distance of the raw samples (scipy). Each metric registers
under its ``discover.metric`` name (``@register_metric``; the names are ``DISPARITY_METRICS`` in
``c2al_rec.config``); a pair records every metric's fields and is ranked by one metric's score.

Example::

    d = prediction_disparity(probs[idx == a], probs[idx == b])
    d["js"], d["kl_ab"], d["cosine"], d["wasserstein"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from scipy.stats import wasserstein_distance

DEFAULT_BINS = 50


def histogram_bins(probs: np.ndarray, num_bins: int = DEFAULT_BINS) -> np.ndarray:
    """Shared bin edges for predicted probabilities: quantiles of the logit of all rows.

    CTR predictions crowd near 0; equal-width bins on [0, 1] would put almost all mass in the
    first bin, so edges follow the pooled distribution (unique edges, at least 2 bins).
    """
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    logit = np.log(p) - np.log1p(-p)
    edges = np.unique(np.quantile(logit, np.linspace(0, 1, num_bins + 1)))
    if edges.size < 3:
        edges = np.array([logit.min() - 1, logit.mean(), logit.max() + 1])
    edges[0], edges[-1] = -np.inf, np.inf
    return edges


def smoothed_histogram(probs: np.ndarray, edges: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Additively smoothed (Laplace/Jeffreys, ``alpha`` per bin) normalised histogram."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    counts, _ = np.histogram(np.log(p) - np.log1p(-p), bins=edges)
    smoothed = counts + alpha
    return smoothed / smoothed.sum()


@dataclass(frozen=True)
class DisparityMetric:
    """One registered disparity metric: the fields it adds to a cohort pair, and its ranking score."""

    compute: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], dict[str, float]]
    """``(hist_a, hist_b, probs_a, probs_b) -> {field: value}``: the fields recorded in the pair."""
    score: Callable[[dict[str, float]], float]
    """The pair's fields -> its disparity (higher = more disparate): what ``discover.metric`` ranks by."""


METRICS: dict[str, DisparityMetric] = {}
"""Disparity metric name (``discover.metric``) -> its implementation, in the order pairs record them."""


def register_metric(
    name: str, score: Callable[[dict[str, float]], float]
) -> Callable[[Callable[..., dict[str, float]]], Callable[..., dict[str, float]]]:
    """Decorator: register ``compute(hist_a, hist_b, probs_a, probs_b) -> fields`` under ``name``
    (a name of ``DISPARITY_METRICS``), ranked by ``score(fields)``."""

    def register(compute: Callable[..., dict[str, float]]) -> Callable[..., dict[str, float]]:
        if name in METRICS:
            raise ValueError(f"disparity metric '{name}' is registered twice")
        METRICS[name] = DisparityMetric(compute, score)
        return compute

    return register


# Registration order is the order of the fields in a recorded pair (kl_ab, kl_ba, js, cosine, wasserstein).
@register_metric("kl", score=lambda pair: pair["kl_ab"] + pair["kl_ba"])
def _kl(ha: np.ndarray, hb: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> dict[str, float]:
    """KL both ways on the smoothed histograms; ranked by their sum."""
    return {"kl_ab": float(rel_entr(ha, hb).sum()), "kl_ba": float(rel_entr(hb, ha).sum())}


@register_metric("js", score=lambda pair: pair["js"])
def _js(ha: np.ndarray, hb: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> dict[str, float]:
    """Jensen-Shannon distance (base 2, in [0, 1]) of the smoothed histograms."""
    return {"js": float(jensenshannon(ha, hb, base=2))}


@register_metric("cosine", score=lambda pair: 1.0 - pair["cosine"])
def _cosine(ha: np.ndarray, hb: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> dict[str, float]:
    """Cosine similarity of the histograms (1 = same shape); ranked as 1 - similarity."""
    return {"cosine": float(ha @ hb / (np.linalg.norm(ha) * np.linalg.norm(hb)))}


@register_metric("wasserstein", score=lambda pair: pair["wasserstein"])
def _wasserstein(ha: np.ndarray, hb: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> dict[str, float]:
    """1-D Wasserstein distance of the raw probabilities."""
    return {"wasserstein": float(wasserstein_distance(probs_a, probs_b))}


def prediction_disparity(
    probs_a: np.ndarray, probs_b: np.ndarray, edges: np.ndarray | None = None, alpha: float = 0.5
) -> dict[str, float]:
    """Every registered disparity metric between two samples of predicted probabilities.

    Returns:
        The metrics' fields: ``kl_ab`` = KL(a || b), ``kl_ba``, ``js`` (Jensen-Shannon distance,
        base 2, in [0, 1]), ``cosine`` (similarity of the histograms, 1 = same shape),
        ``wasserstein`` (on the raw probabilities).
    """
    if probs_a.size == 0 or probs_b.size == 0:
        raise ValueError("prediction_disparity needs two non-empty samples")
    if edges is None:
        edges = histogram_bins(np.concatenate([probs_a, probs_b]))
    ha, hb = smoothed_histogram(probs_a, edges, alpha), smoothed_histogram(probs_b, edges, alpha)
    out: dict[str, float] = {}
    for metric in METRICS.values():
        out.update(metric.compute(ha, hb, probs_a, probs_b))
    return out


def disparity_score(pair: dict[str, float], metric: str) -> float:
    """Higher = more disparate, by the registered metric ``metric`` (cosine as 1 - similarity, KL as
    the sum of both directions)."""
    if metric not in METRICS:
        raise ValueError(f"discover.metric: unknown '{metric}' (expected one of {tuple(METRICS)})")
    return METRICS[metric].score(pair)
