"""Contrastive cohort discovery from a trained baseline: score a split, rank cohort pairs per axis, write the spec.

Shared by ``c2al-rec discover``, the pipeline and the experiment. Writes the spec of the most
disparate eligible (head, tail) pair over all axes to ``out``, every axis' spec and ranked pairs
to ``<out>.axes.json``, and a PNG of the head vs tail prediction densities.

Example::

    section = DiscoverConfig(axes=["user_value:quantiles=0.05,0.95"])   # or cfg.discover of a run config
    outcome = discover_cohorts(section, "runs/base", "data/synth", "cohorts.json")
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


def discover_cohorts(
    section: DiscoverConfig, checkpoint: str | Path, data: str | Path, out: str | Path, which: str = "latest"
) -> DiscoveryOutcome:
    """Score ``section.split`` with the baseline, rank cohort pairs per axis, write the best spec.

    Args:
        section: the ``[discover]`` section (axes, split, metric, eligibility, batch size).
        checkpoint: the baseline's run directory or one ``step_<N>`` directory.
        data: the dataset root to score.
        out: the cohort spec JSON to write.
        which: checkpoint of a run directory, ``latest`` or ``best``.

    Raises:
        ValueError: an axis is not in the schema, or no axis has an eligible pair (reasons named).
    """
    axes = [parse_axis_spec(a) for a in section.axes]
    schema = load_schema(data)
    known = {a.name: a for a in schema.axes}
    for axis in axes:
        if axis.name not in known:
            raise ValueError(
                f"discover.axes (--axes): '{axis.name}' is not an axis of {data} (schema.json axes: {sorted(known)})"
            )
    run = load_run(checkpoint, which, schema=schema)
    table = score_split(run, data, section.split, section.batch_size)
    probs = table.column("prob").to_numpy().astype(np.float64)
    labels = table.column("label").to_numpy()
    results = {
        axis.name: discover_axis(
            axis,
            table.column(axis.name).combine_chunks(),
            probs,
            labels,
            min_rows=section.min_rows,
            min_positives=section.min_positives,
            metric=section.metric,
            rare_share=section.rare_share,
        )
        for axis in axes
    }
    ranked = sorted(results.items(), key=lambda kv: kv[1].best_score, reverse=True)
    chosen = [(name, r) for name, r in ranked if r.spec is not None]
    if not chosen:
        reasons = "; ".join(f"{name}: {r.reason}" for name, r in ranked)
        raise ValueError(f"no axis has an eligible cohort pair ({reasons})")
    source = {"checkpoint": str(run.path), "data": str(Path(data).resolve()), "split": section.split}
    for _, r in chosen:
        r.spec.source = source
    best_name, best = chosen[0]
    out = Path(out)
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
        f"{best_name}: head {best.spec.head} vs tail {best.spec.tail} ({section.split})",
    )
    sensitive = {name: known[name].sensitive for name, _ in ranked}
    return DiscoveryOutcome(best.spec, best_name, ranked, sensitive, section.metric, [out, axes_json, png])


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
