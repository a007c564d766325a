"""Plots shared by discovery and the reports (headless matplotlib, PNG files written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Okabe-Ito blue vs grey: colour-blind safe, and still distinct in greyscale.
EXCLUDES_ZERO, CROSSES_ZERO = "#0072B2", "#999999"


def interval_color(ci95: tuple[float, float] | list[float]) -> str:
    """Colour of an estimate by whether its 95% interval excludes 0 (never by the sign of the estimate)."""
    return EXCLUDES_ZERO if ci95[0] > 0 or ci95[1] < 0 else CROSSES_ZERO


def save_figure(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Save ``fig`` to ``path`` via a temp file + rename, and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_prediction_densities(head: np.ndarray, tail: np.ndarray, path: Path, title: str) -> Path:
    """Density of predicted probabilities for the head and tail cohorts (the paper's Figure 3)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    both = np.concatenate([head, tail])
    hi = float(np.quantile(both, 0.995)) if both.size else 1.0
    bins = np.linspace(0, hi, 60)
    for values, name in ((head, "head"), (tail, "tail")):
        ax.hist(
            values,
            bins=bins,
            density=True,
            histtype="step",
            linewidth=1.8,
            label=f"{name} (n={values.size}, mean {values.mean() if values.size else 0:.4f})",
        )
    ax.set_xlabel("predicted probability (baseline)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
