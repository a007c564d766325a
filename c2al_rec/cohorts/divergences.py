"""Disparity between two cohorts' distributions of predicted probabilities.

KL (both ways) and Jensen-Shannon on smoothed histograms over shared bins, cosine similarity of
the histograms, and the 1-D Wasserstein distance of the raw samples (scipy).

Example::

    d = prediction_disparity(probs[idx == a], probs[idx == b])
    d["js"], d["kl_ab"], d["cosine"], d["wasserstein"]
"""

from __future__ import annotations

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


def prediction_disparity(
    probs_a: np.ndarray, probs_b: np.ndarray, edges: np.ndarray | None = None, alpha: float = 0.5
) -> dict[str, float]:
    """Disparity metrics between two samples of predicted probabilities.

    Returns:
        ``kl_ab`` = KL(a || b), ``kl_ba``, ``js`` (Jensen-Shannon distance, base 2, in [0, 1]),
        ``cosine`` (similarity of the histograms, 1 = same shape), ``wasserstein`` (on the raw
        probabilities).
    """
    if probs_a.size == 0 or probs_b.size == 0:
        raise ValueError("prediction_disparity needs two non-empty samples")
    if edges is None:
        edges = histogram_bins(np.concatenate([probs_a, probs_b]))
    ha, hb = smoothed_histogram(probs_a, edges, alpha), smoothed_histogram(probs_b, edges, alpha)
    return {
        "kl_ab": float(rel_entr(ha, hb).sum()),
        "kl_ba": float(rel_entr(hb, ha).sum()),
        "js": float(jensenshannon(ha, hb, base=2)),
        "cosine": float(ha @ hb / (np.linalg.norm(ha) * np.linalg.norm(hb))),
        "wasserstein": float(wasserstein_distance(probs_a, probs_b)),
    }


def disparity_score(pair: dict[str, float], metric: str) -> float:
    """Higher = more disparate. Cosine enters as 1 - similarity; KL as the sum of both directions."""
    if metric == "js":
        return pair["js"]
    if metric == "kl":
        return pair["kl_ab"] + pair["kl_ba"]
    if metric == "cosine":
        return 1.0 - pair["cosine"]
    if metric == "wasserstein":
        return pair["wasserstein"]
    raise ValueError(f"--metric: unknown '{metric}' (expected js, kl, cosine or wasserstein)")
