"""FM attention-weight statistics: how dense and diverse the attention Y is (the paper's Figures 2 and 5).

For each FM module's Y ([B, n, k], or a static [n, k]): fraction of near-zero weights
(|w| < eps), entropy of the |w| histogram, excess kurtosis, Gini coefficient of |w|, and a
histogram. C2AL's claim: Y becomes denser (fewer near-zero weights, lower Gini) and more diverse.

Example::

    stats = attention_stats_for_checkpoint(loaded, data_root, "test", rows=4096)
    stats["over_arch.layers.0.modules.0"]["near_zero_fraction"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from scipy import stats as sps

from c2al_rec.data.reader import ParquetReader

from .plots import save_figure

NEAR_ZERO_EPS = 1e-2
HIST_BINS = 60


def weight_stats(weights: np.ndarray, eps: float = NEAR_ZERO_EPS) -> dict[str, Any]:
    """Distribution statistics of a flat sample of attention weights."""
    w = weights.astype(np.float64).ravel()
    a = np.abs(w)
    hist, edges = np.histogram(w, bins=HIST_BINS)
    p = hist[hist > 0] / hist.sum()
    sorted_a = np.sort(a)
    n = a.size
    gini = float((2 * np.arange(1, n + 1) - n - 1) @ sorted_a / (n * sorted_a.sum())) if sorted_a.sum() > 0 else 0.0
    return {
        "count": int(n),
        "mean": float(w.mean()),
        "std": float(w.std()),
        "mean_abs": float(a.mean()),
        "near_zero_fraction": float((a < eps).mean()),
        "near_zero_eps": eps,
        "entropy_bits": float(-(p * np.log2(p)).sum()),
        # undefined for identical weights (zero variance): None, not scipy's cancellation noise
        "kurtosis": float(sps.kurtosis(w)) if w.std() > 0 else None,
        "gini": gini,
        "histogram": {"counts": hist.tolist(), "edges": edges.tolist()},
    }


@torch.no_grad()
def collect_attention(model: torch.nn.Module, batches: Any, max_rows: int) -> dict[str, np.ndarray]:
    """Run ``model`` on batches with attention recording on; return Y samples per FM module."""
    model.record_attention(True)
    collected: dict[str, list[np.ndarray]] = {}
    rows = 0
    try:
        for batch in batches:
            model(batch.dense_features, batch.sparse_features)
            for name, y in model.fm_attention_weights().items():
                collected.setdefault(name, []).append(y.float().numpy().reshape(-1))
            rows += batch.batch_size
            if rows >= max_rows:
                break
    finally:
        model.record_attention(False)
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def attention_stats_for_checkpoint(loaded: Any, data_root: str | Path, split: str, rows: int = 4096) -> dict[str, Any]:
    """Per FM module statistics of Y on the first ``rows`` rows of ``split``."""
    reader = ParquetReader(data_root, loaded.schema, split, min(rows, 1024), shuffle=False, drop_last=False)
    samples = collect_attention(loaded.model, reader, rows)
    return {name: weight_stats(w) for name, w in samples.items()}


def plot_attention_comparison(
    runs: dict[str, dict[str, Any]], path: Path, title: str = "FM attention weights"
) -> Optional[Path]:
    """Overlaid weight histograms per FM module for several runs (e.g. baseline vs C2AL)."""
    import matplotlib.pyplot as plt

    modules = sorted({m for stats in runs.values() for m in stats})
    if not modules:
        return None
    ncols = min(3, len(modules))
    nrows = -(-len(modules) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.8 * nrows), squeeze=False)
    for ax in axes.flat[len(modules) :]:
        ax.set_visible(False)
    for ax, module in zip(axes.flat, modules):
        for run, stats in runs.items():
            if module not in stats:
                continue
            s = stats[module]
            edges = np.array(s["histogram"]["edges"])
            counts = np.array(s["histogram"]["counts"], dtype=np.float64)
            density = counts / counts.sum() / np.diff(edges)
            ax.stairs(density, edges, label=f"{run}: near-0 {100 * s['near_zero_fraction']:.1f}%, gini {s['gini']:.3f}")
        ax.set_title(module.replace("over_arch.dhen.", ""), fontsize=9)
        ax.set_xlabel("weight value")
        ax.set_ylabel("density (log scale)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


# Layers around each FM attention (the paper's Figure 4): what produces Y, and what reads G.
LAYERS_AROUND_ATTENTION = {
    "before: compression W_c": "compress.proj.weight",
    "before: attention MLP (last layer)": "attention_mlp.2.weight",
    "after: output MLP (first layer)": "out_mlp.0.weight",
}


def layer_weight_stats(model: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """Weight statistics of the layers before and after every FM attention of ``model``."""
    out: dict[str, dict[str, Any]] = {}
    for module_name, fm in model.fm_modules().items():
        params = dict(fm.named_parameters())
        for label, param in LAYERS_AROUND_ATTENTION.items():
            if param in params:
                out[f"{module_name} | {label}"] = weight_stats(params[param].detach().float().numpy())
    return out
