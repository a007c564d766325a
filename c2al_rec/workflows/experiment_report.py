"""The experiment's report: a Table-1-style markdown with seed-level intervals and power, and a forest plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from c2al_rec.analysis.plots import EXCLUDES_ZERO, interval_color, plt, save_figure

GROUP_ORDER = ("overall", "head", "tail")


def _excludes_zero(ci: Optional[list[float]]) -> bool:
    return ci is not None and (ci[1] < 0 or ci[0] > 0)


def fmt_diff(g: Optional[dict[str, Any]]) -> str:
    """``-0.082% [-0.178, +0.014]`` (and `` *`` when the interval excludes 0); ``n/a (<reason>)`` for a
    group NE cannot judge (eval.json ``"ne": null``, e.g. no positives)."""
    if not g or g.get("ne_diff") is None:
        return f"n/a ({g['reason']})" if g and g.get("reason") else "n/a"
    lo, hi = g["ci95"]
    star = " *" if _excludes_zero(g["ci95"]) else ""
    return f"{100 * g['ne_diff']:+.3f}% [{100 * lo:+.3f}, {100 * hi:+.3f}]{star}"


def _groups(results: dict[str, Any]) -> list[str]:
    seen = [g for g in GROUP_ORDER if any(g in r for r in results.values())]
    return seen + sorted({g for r in results.values() for g in r} - set(seen))


def experiment_report(summary: dict[str, Any], wall: dict[str, float]) -> str:
    """Markdown: the spec used, NE_diff per variant and group, C2AL minus control, power, attention."""
    results, power, spec = summary["results"], summary["power"], summary["spec"]
    seeds = summary["seeds"]
    cuts = ", ".join(
        f"`{c['name']}` [{c.get('lower')}, {c.get('upper')})" if "values" not in c else f"`{c['name']}` {c['values']}"
        for c in spec["cohorts"]
    )
    base = results.get("c2al", {})
    lines = [
        "# C2AL experiment",
        "",
        f"{seeds} seeds, paired by seed (baseline and every variant of seed s start from the same shared "
        "parameters and read the same batches). NE_diff = (NE_variant - NE_baseline) / NE_baseline per seed; "
        "the 95% interval is a t-interval over the per-seed paired differences; * = it excludes 0.",
        "",
        f"Cohort spec (discovered once on baseline seed 0, split `{spec.get('source', {}).get('split', '?')}`, "
        f"used for every seed): axis **{spec['axis']}**, head `{spec['head']}`, tail `{spec['tail']}`; cohorts {cuts}.",
        "",
    ]
    if base:
        nan = float("nan")
        ne = base.get("overall", {})
        bayes, plr_h, plr_t = (
            ne.get("bayes_ne") or nan,
            base.get("head", {}).get("positive_rate", nan),
            base.get("tail", {}).get("positive_rate", nan),
        )
        lines += [
            f"Baseline NE overall {ne.get('ne_base', nan):.5f}, "
            + (f"Bayes NE {bayes:.5f}" if bayes == bayes else "Bayes NE n/a (real data: no true probability)")
            + " (eval split); "
            f"head PLR {plr_h:.4f}, tail PLR {plr_t:.4f}.",
            "",
        ]
    lines += ["| variant | overall NE_diff | head NE_diff | tail NE_diff |", "|---|---|---|---|"]
    for name, groups in results.items():
        lines.append(f"| {name} | " + " | ".join(fmt_diff(groups.get(g)) for g in GROUP_ORDER) + " |")
    lines += [
        "",
        "Variants: `c2al` = aux heads on the discovered cohorts; `random` = aux labels from random cohorts of the "
        "same sizes (control); `gradsim` = C2AL with gradient-similarity gating; `lambda_<x>` = lambda_head = "
        "lambda_tail = x; `selected` = per seed, the candidate the selection rule chose on the valid split (below), "
        "reported on the eval split; `noeffect` = C2AL vs baseline on data generated without planted cohort effects; "
        "`c2al_minus_random` = per-seed NE_diff of c2al minus that of random (paired by seed).",
        "",
        *_selection_lines(summary.get("selection")),
        "## Power",
        "",
        "Smallest |NE_diff| these seeds detect with 80% power (two-sided 5% t-test, from the measured spread of the "
        "per-seed differences), and the seeds it would take to detect -0.1%:",
        "",
        "| variant | group | sd of per-seed diffs | detectable at 80% power | seeds for -0.1% |",
        "|---|---|---|---|---|",
    ]
    for name, groups in power.items():
        for g in GROUP_ORDER:
            p = groups.get(g)
            if p:
                need = p["seeds_for_target"] if p["seeds_for_target"] is not None else "> 10000"
                lines.append(f"| {name} | {g} | {100 * p['sd']:.3f}% | {100 * p['mde']:.3f}% | {need} |")
    segments = [g for g in _groups(results) if g.startswith("segment:")]
    if segments:
        lines += [
            "",
            "## Segments",
            "",
            "| variant | " + " | ".join(segments) + " |",
            "|---" * (len(segments) + 1) + "|",
        ]
        for name, groups in results.items():
            lines.append(f"| {name} | " + " | ".join(fmt_diff(groups.get(g)) for g in segments) + " |")
    lines += ["", "![NE_diff per variant and group](forest.png)", ""]
    lines += _attention_lines(summary.get("attention") or {}, seeds)
    if wall:
        lines += [
            "",
            f"Training this sitting: {len(wall)} runs, median {np.median(list(wall.values())):.0f} s a run, "
            f"{sum(wall.values()) / 60:.1f} min of run time summed over runs (runs trained "
            f"{summary.get('config', {}).get('pipeline', {}).get('concurrent_runs', 1)} at a time).",
        ]
    timing = summary.get("timing") or {}
    if timing.get("wall_s") and timing.get("training_done_s"):
        after = timing["wall_s"] - timing["training_done_s"]
        lines += [
            "",
            f"Timing: {timing['wall_s'] / 60:.1f} min in all; the last training run ended at "
            f"{timing['training_done_s'] / 60:.1f} min, so {after:.0f} s ({100 * after / timing['wall_s']:.1f}%) came "
            f"after training (scoring valid and test runs beside training, then evaluation); "
            f"{timing.get('runs_trained_here')} of {timing.get('runs')} runs trained in this invocation.",
        ]
    if summary.get("command"):
        lines += ["", f"Command: `{summary['command']}`"]
    return "\n".join(lines) + "\n"


def _selection_lines(selection: Optional[dict[str, Any]]) -> list[str]:
    if not selection:
        return []
    counts = ", ".join(f"`{name}` {n}" for name, n in selection["counts"].items())
    per_seed = ", ".join(f"{r['seed']}: `{r['chosen']}`" for r in selection["per_seed"])
    lines = [
        "## Selection (valid split)",
        "",
        f"Per seed the `select` rule chose among the candidates on the `{selection.get('split', 'valid')}` split "
        f"(objective `{selection['objective']}`{', FORCED' if selection['forced'] else ''}). Rule: {selection['rule']}",
        "",
        f"Chosen (seeds): {counts}. Per seed: {per_seed}.",
        "",
        "Valid NE_diff (mean over seeds of each seed's row-level estimate) and how often each candidate passed:",
        "",
        "| candidate | overall | head | tail | passed (seeds) |",
        "|---|---|---|---|---|",
    ]
    names = list(selection["per_seed"][0]["candidates"]) if selection["per_seed"] else []
    for name in names:
        rows = [r["candidates"][name] for r in selection["per_seed"]]

        def mean(g: str) -> str:
            v = [r["valid"][g]["ne_diff"] for r in rows if r["valid"][g].get("ne_diff") is not None]
            return f"{100 * float(np.mean(v)):+.3f}%" if v else "n/a"

        passed = sum(r["passed"] for r in rows)
        lines.append(f"| {name} | {mean('overall')} | {mean('head')} | {mean('tail')} | {passed}/{len(rows)} |")
    return lines + [""]


def _attention_lines(attention: dict[str, Any], seeds: int) -> list[str]:
    if not attention:
        return []

    def cell(s: dict[str, Any], scale: float = 1.0, unit: str = "") -> str:
        if s["ci95"] is None:
            return f"{scale * s['mean']:.3f}{unit}"
        lo, hi = s["ci95"]
        return f"{scale * s['mean']:+.3f}{unit} [{scale * lo:+.3f}, {scale * hi:+.3f}]"

    lines = [
        f"## FM attention weights (eval split, mean over {seeds} seeds, 95% interval)",
        "",
        "| run | module | near-zero (%) | Gini | entropy (bits) | kurtosis |",
        "|---|---|---|---|---|---|",
    ]
    for run, modules in attention.items():
        for module, st in modules.items():
            lines.append(
                f"| {run} | {module} | {cell(st['near_zero_fraction'], 100)} | {cell(st['gini'])} | "
                f"{cell(st['entropy_bits'])} | {cell(st['kurtosis'])} |"
            )
    lines += ["", "![attention weights, seed 0](attention.png)"]
    return lines


def plot_forest(results: dict[str, Any], path: Path, title: str) -> Optional[Path]:
    """NE_diff (%) with 95% seed-level intervals, one row per variant and group; an interval that
    excludes 0 is drawn filled in blue, one that crosses 0 hollow in grey (colour-blind safe)."""
    rows = []
    for name, groups in results.items():
        for g in _groups(results):
            r = groups.get(g)
            if r and r.get("ne_diff") is not None and r.get("ci95") is not None:
                rows.append((f"{name} / {g}", 100 * r["ne_diff"], 100 * r["ci95"][0], 100 * r["ci95"][1]))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.5))
    for i, (_, mid, lo, hi) in enumerate(rows):
        color = interval_color((lo, hi))
        sig = color == EXCLUDES_ZERO
        ax.plot([lo, hi], [i, i], color=color, linewidth=2)
        ax.plot([mid], [i], "o", color=color, markerfacecolor=color if sig else "white", markersize=6)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("NE_diff vs baseline of the same seed (%)\n95% interval over seeds; negative = better")
    ax.set_ylabel("variant / group")
    ax.set_title(f"C2AL experiment: {title}\nfilled blue = interval excludes 0, hollow grey = crosses 0")
    fig.tight_layout()
    return save_figure(fig, path)
