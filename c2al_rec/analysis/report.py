"""Human-facing outputs of an evaluation: a markdown table and PNG bar charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")  # headless: plots go to files
import matplotlib.pyplot as plt  # noqa: E402

from c2al_rec.io import atomic_write_text  # noqa: E402

from .plots import EXCLUDES_ZERO, interval_color, save_figure  # noqa: E402


def _pct(x: Optional[float]) -> str:
    return "" if x is None else f"{100 * x:+.3f}%"


def _num(x: Optional[float], digits: int = 5) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def not_judged(g: dict[str, Any]) -> Optional[str]:
    """``"n/a (no positives)"`` for a group NE cannot judge (eval.json ``"ne": null``), else None."""
    return f"n/a ({g.get('reason') or 'undefined'})" if g.get("ne") is None else None


def markdown_table(result: dict[str, Any], sensitive: bool = False) -> str:
    """One row per group: rows, positive rate, NE (and Bayes NE), NE_diff with its 95% interval."""
    groups = result["groups"]
    has_base = any("ne_diff" in g for g in groups.values())
    has_bayes = any("bayes_ne" in g for g in groups.values())
    head = ["group", "rows", "pos. rate", "NE", "calibration", "AUC"]
    head += ["Bayes NE"] if has_bayes else []
    head += ["NE base", "NE_diff", "95% CI", "CI over", "p"] if has_base else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, g in groups.items():
        na = not_judged(g)
        if na is not None:  # one class only: no metric means anything, say why instead of a number
            rate = _num(g["positive_rate"], 4)
            lines.append("| " + " | ".join([name, str(g["rows"]), rate, na] + [""] * (len(head) - 4)) + " |")
            continue
        row = [
            name,
            str(g["rows"]),
            _num(g["positive_rate"], 4),
            _num(g["ne"]),
            _num(g["calibration"], 3),
            _num(g["auc"], 4),
        ]
        row += [_num(g.get("bayes_ne"))] if has_bayes else []
        if has_base:
            ci = g.get("ci95")
            row += [
                _num(g.get("ne_base")),
                _pct(g.get("ne_diff")),
                f"[{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "",
                g.get("ci_kind", ""),
                _num(g.get("p_value"), 3),
            ]
        lines.append("| " + " | ".join(row) + " |")
    notes = []
    if has_base and result.get("seeds", 1) == 1:
        notes.append(
            "One seed: the interval is row-level only (bootstrap over test rows) and does not include "
            "seed-to-seed variance, which is usually larger at these effect sizes. Run "
            "`c2al-rec experiment --seeds 5` for seed-level intervals."
        )
    if sensitive:
        notes.append(
            f"Axis '{result['axis']}' is a protected attribute: it is used for evaluation and auxiliary labels "
            "only, never as a model input. Review fairness implications before acting on per-group results."
        )
    return "\n".join(lines) + ("\n\n" + "\n\n".join(f"> {n}" for n in notes) if notes else "") + "\n"


def attention_table(attention: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows of FM attention statistics: ``{run: {module: weight_stats}}``."""
    lines = ["| run | module | near-zero | Gini | entropy (bits) | kurtosis |", "|---|---|---|---|---|---|"]
    for run, modules in attention.items():
        for module, s in modules.items():
            lines.append(
                f"| {run} | {module} | {100 * s['near_zero_fraction']:.2f}% | {s['gini']:.4f} | "
                f"{s['entropy_bits']:.3f} | {'n/a' if s['kurtosis'] is None else format(s['kurtosis'], '.3f')} |"
            )
    return lines


def plot_ne_diff(result: dict[str, Any], path: Path, title: str = "") -> Optional[Path]:
    """Bar chart of NE_diff per group with 95% intervals (like the paper's Figure 6)."""
    groups = {k: g for k, g in result["groups"].items() if g.get("ne_diff") is not None or not_judged(g)}
    if not any(g.get("ne_diff") is not None for g in groups.values()):
        return None
    names = list(groups)
    judged = {n: g for n, g in groups.items() if g.get("ne_diff") is not None}
    diffs = [100 * judged[n]["ne_diff"] if n in judged else 0.0 for n in names]
    lo = [100 * (judged[n]["ne_diff"] - judged[n]["ci95"][0]) if n in judged else 0.0 for n in names]
    hi = [100 * (judged[n]["ci95"][1] - judged[n]["ne_diff"]) if n in judged else 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(max(7.5, 0.9 * len(names)), 4))  # the title line fits
    # Colour says whether the interval excludes 0, never the sign of the point estimate alone;
    # Okabe-Ito blue vs grey (colour-blind safe), hatching repeats it for greyscale prints.
    colors = [interval_color(judged[n]["ci95"]) if n in judged else "white" for n in names]
    significant = [c == EXCLUDES_ZERO for c in colors]
    bars = ax.bar(range(len(names)), diffs, yerr=[lo, hi], color=colors, capsize=4, edgecolor="black")
    for bar, s in zip(bars, significant):
        bar.set_hatch("" if s else "//")
    ax.axhline(0, color="black", linewidth=0.8)
    for i, n in enumerate(names):  # a group NE cannot judge gets words where its bar would be
        if n not in judged:
            ax.text(i, 0, not_judged(groups[n]), rotation=90, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_xlabel("group (cohort)")
    ax.set_ylabel("NE_diff vs baseline (%), lower is better")
    kind = "seeds" if result.get("seeds", 1) > 1 else "rows"
    ax.set_title(
        (title or f"C2AL vs baseline by {result['axis']}")
        + f"\n95% interval over {kind}; blue = excludes 0, grey hatched = crosses 0"
    )
    fig.tight_layout()
    return save_figure(fig, path)


def write_markdown(path: Path, text: str) -> None:
    atomic_write_text(path, text)
