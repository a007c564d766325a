"""Plot the in-training diagnostics (diagnostics.jsonl): the paper's Figure 5 and eq. 10-12 over steps."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .plots import save_figure  # noqa: E402


def plot_diagnostics(jsonl: Path, png: Path) -> Path:
    """Near-zero attention share and Gini per FM module, and aux-vs-primary gradient split, over steps."""
    rows = [json.loads(line) for line in Path(jsonl).read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for module in rows[0]["attention"]:
        axes[0].plot(steps, [100 * r["attention"][module]["near_zero_fraction"] for r in rows], label=module)
        axes[1].plot(steps, [r["attention"][module]["gini"] for r in rows], label=module)
    axes[0].set_title("FM attention: near-zero weights (%)")
    axes[1].set_title("FM attention: Gini of |w|")
    g = [r["gradients"]["all"] for r in rows]
    axes[2].plot(steps, [x["cosine"] for x in g], label="cos(G_aux, G_primary)")
    ratio = [x["norm_orthogonal"] / x["norm_aux"] if x["norm_aux"] else 0.0 for x in g]
    axes[2].plot(steps, ratio, label="|G_aux orthogonal| / |G_aux|")
    axes[2].set_title("aux gradient on the shared parameters")
    axes[0].set_ylabel("near-zero weights (%)")
    axes[1].set_ylabel("Gini coefficient (0 = uniform, 1 = concentrated)")
    axes[2].set_ylabel("cosine / norm ratio (unitless)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, png)
