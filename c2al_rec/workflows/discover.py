"""Contrastive cohort discovery from a trained baseline: score a split, rank cohort pairs per axis, write the spec.

Shared by ``c2al-rec discover``, the pipeline and the experiment. Writes the spec of the most
disparate eligible (head, tail) pair over all axes to ``out``, every axis' spec and ranked pairs
to ``<out>.axes.json``, and a PNG of the head vs tail prediction densities.

Example::

    outcome = discover_cohorts(DiscoverOptions("runs/base", "data/synth", ["user_value:quantiles=0.05,0.95"],
                                               "cohorts.json"))
    print(format_ranking(outcome))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from c2al_rec.analysis.plots import plot_prediction_densities
from c2al_rec.cohorts.discovery import AxisResult, discover_axis, parse_axis_spec
from c2al_rec.cohorts.divergences import METRICS, disparity_score
from c2al_rec.cohorts.spec import CohortSpec
from c2al_rec.config import DiscoverConfig
from c2al_rec.data.schema import load_schema
from c2al_rec.io import atomic_write_json
from c2al_rec.runs import load_run, score_split


@dataclass
class DiscoverOptions:
    """One discovery: which baseline, which data, which axes, where the spec goes."""

    checkpoint: str | Path
    """Baseline run directory or one ``step_<N>`` directory."""
    data: str | Path
    """Dataset root to score."""
    axes: list[str]
    """Axis specs: ``name:quantiles=q1,q2,...`` or ``name:categorical``."""
    out: str | Path
    """Cohort spec JSON to write."""
    split: str = "valid"
    """Split the baseline is scored on (one the evaluation does not use)."""
    which: str = "latest"
    """Checkpoint of a run directory: ``latest`` or ``best``."""
    metric: str = "js"
    """Disparity metric that ranks pairs: js, kl, cosine or wasserstein."""
    min_rows: int = 1000
    """Minimum rows in each cohort of the chosen pair."""
    min_positives: int = 50
    """Minimum positives in each cohort of the chosen pair."""
    rare_share: float = 0.01
    """Categorical values under this share of rows merge into 'other'."""
    batch_size: int = 4096
    """Scoring batch size."""

    @classmethod
    def from_config(
        cls, d: DiscoverConfig, checkpoint: str | Path, data: str | Path, out: str | Path
    ) -> "DiscoverOptions":
        """The ``[discover]`` section of a run config, for the pipeline and the experiment."""
        return cls(
            checkpoint, data, list(d.axes), out, d.split, "latest", d.metric, d.min_rows, d.min_positives, d.rare_share
        )


@dataclass
class DiscoveryOutcome:
    """What discovery found and wrote."""

    spec: CohortSpec
    """The chosen spec (written to ``out``)."""
    axis: str
    """The axis of the chosen pair."""
    ranked: list[tuple[str, AxisResult]]
    """Every axis with its result, best first."""
    sensitive: dict[str, bool]
    """Axis name -> marked sensitive in the schema."""
    metric: str
    """The ranking metric."""
    files: list[Path]
    """Files written: the spec, ``<out>.axes.json`` and the densities PNG."""


def check_discover_axes(axes: list[str], data: str | Path) -> None:
    """Preflight of ``discover.axes`` for the pipeline and the experiment, run before the baseline trains.

    Args:
        axes: axis specs (``name:quantiles=...`` / ``name:categorical``).
        data: the dataset root (its schema.json must exist).

    Raises:
        ValueError: a spec does not parse, or names a column that is not an axis of the dataset.
    """
    schema = load_schema(data)
    known = sorted(a.name for a in schema.axes)
    for text in axes:
        name = parse_axis_spec(text).name
        if name not in known:
            raise ValueError(
                f"discover.axes: '{name}' is not an axis of {data} (schema.json axes: {known}); "
                "fix discover.axes before the baseline is trained"
            )


def discover_cohorts(opts: DiscoverOptions) -> DiscoveryOutcome:
    """Score ``opts.split`` with the baseline, rank cohort pairs per axis, write the best spec.

    Raises:
        ValueError: an axis is not in the schema, or no axis has an eligible pair (reasons named).
    """
    axes = [parse_axis_spec(a) for a in opts.axes]
    schema = load_schema(opts.data)
    known = {a.name: a for a in schema.axes}
    for axis in axes:
        if axis.name not in known:
            raise ValueError(f"--axes: '{axis.name}' is not an axis of {opts.data} (schema.json axes: {sorted(known)})")
    run = load_run(opts.checkpoint, opts.which, schema=schema)
    table = score_split(run, opts.data, opts.split, opts.batch_size)
    probs = table.column("prob").to_numpy().astype(np.float64)
    labels = table.column("label").to_numpy()
    results = {
        axis.name: discover_axis(
            axis,
            table.column(axis.name).combine_chunks(),
            probs,
            labels,
            min_rows=opts.min_rows,
            min_positives=opts.min_positives,
            metric=opts.metric,
            rare_share=opts.rare_share,
        )
        for axis in axes
    }
    ranked = sorted(results.items(), key=lambda kv: kv[1].best_score, reverse=True)
    chosen = [(name, r) for name, r in ranked if r.spec is not None]
    if not chosen:
        reasons = "; ".join(f"{name}: {r.reason}" for name, r in ranked)
        raise ValueError(f"no axis has an eligible cohort pair ({reasons})")
    source = {"checkpoint": str(run.path), "data": str(Path(opts.data).resolve()), "split": opts.split}
    for _, r in chosen:
        r.spec.source = source
    best_name, best = chosen[0]
    out = Path(opts.out)
    best.spec.save(out)
    axes_json = out.with_suffix(".axes.json")
    atomic_write_json(
        axes_json,
        {
            name: {
                "spec": r.spec.to_json() if r.spec else None,
                "best_score": r.best_score if r.spec else None,
                "reason": r.reason,
                "sensitive": known[name].sensitive,
                "pairs": r.pairs,
            }
            for name, r in ranked
        },
    )
    idx = best.spec.assign(table.column(best_name).combine_chunks())
    png = plot_prediction_densities(
        probs[idx == best.spec.head_index],
        probs[idx == best.spec.tail_index],
        out.with_name(out.stem + "_densities.png"),
        f"{best_name}: head {best.spec.head} vs tail {best.spec.tail} ({opts.split})",
    )
    sensitive = {name: known[name].sensitive for name, _ in ranked}
    return DiscoveryOutcome(best.spec, best_name, ranked, sensitive, opts.metric, [out, axes_json, png])


def format_ranking(outcome: DiscoveryOutcome, top_pairs: Optional[int] = 5) -> str:
    """The axes ranked by their best eligible pair, with each axis' top pairs and their divergences."""
    lines = [f"axes ranked by their best eligible pair ({outcome.metric}):"]
    for name, r in outcome.ranked:
        flag = "  [sensitive]" if outcome.sensitive.get(name) else ""
        if r.spec is None:
            lines.append(f"  {name}{flag}: no eligible pair ({r.reason})")
            continue
        lines.append(f"  {name}{flag}: head {r.spec.head} / tail {r.spec.tail}, score {r.best_score:.4f}")
        for p in r.pairs[:top_pairs]:
            mark = "" if p["eligible"] else f"  (ineligible: {p['ineligible_because']})"
            # every registered metric's ranking score (cosine as 1 - similarity, kl as the sum both ways)
            scores = " ".join(f"{name} {_score(p, name):.4f}" for name in METRICS)
            lines.append(
                f"      {p['a']:>10} vs {p['b']:<10} {scores} "
                f"rows {p['rows_a']}/{p['rows_b']} plr {p['plr_a'] or 0:.4f}/{p['plr_b'] or 0:.4f}{mark}"
            )
    return "\n".join(lines)


def _score(pair: dict, metric: str) -> float:
    """A pair's score under ``metric``; nan for a pair with an empty cohort (no metrics computed)."""
    try:
        return disparity_score(pair, metric)
    except KeyError:
        return float("nan")
