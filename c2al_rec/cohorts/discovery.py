"""Contrastive cohort discovery: split rows along an axis, compare the baseline's prediction
distributions pairwise, pick the most disparate (head, tail) pair that is large enough.

Example::

    axis = parse_axis_spec("user_value:quantiles=0.05,0.25,0.5,0.75,0.95")
    result = discover_axis(axis, axis_column, probs, labels, min_rows=1000, min_positives=50)
    result.spec.save("cohorts.json")
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .divergences import disparity_score, histogram_bins, prediction_disparity
from .spec import Cohort, CohortSpec, quantile_cohorts

OTHER = "other"


@dataclass
class AxisSpec:
    """A command-line axis: ``name:quantiles=q1,q2,...`` or ``name:categorical``."""

    name: str
    kind: str
    quantiles: list[float] = field(default_factory=list)


def parse_axis_spec(text: str) -> AxisSpec:
    """Parse ``user_value:quantiles=0.05,0.95`` / ``gender:categorical``; errors name the spec."""
    name, _, rest = text.partition(":")
    if not name or not rest:
        raise ValueError(f"--axes '{text}': expected name:quantiles=q1,q2,... or name:categorical")
    if rest == "categorical":
        return AxisSpec(name, "categorical")
    if rest.startswith("quantiles="):
        try:
            qs = [float(q) for q in rest[len("quantiles=") :].split(",")]
        except ValueError:
            raise ValueError(f"--axes '{text}': quantiles must be numbers in (0, 1)") from None
        if not qs or any(not 0 < q < 1 for q in qs) or sorted(set(qs)) != qs:
            raise ValueError(f"--axes '{text}': quantiles must be increasing numbers in (0, 1)")
        return AxisSpec(name, "numeric", qs)
    raise ValueError(f"--axes '{text}': expected name:quantiles=q1,q2,... or name:categorical")


def categorical_cohorts(column: pa.Array, rare_share: float) -> list[Cohort]:
    """One cohort per value; values under ``rare_share`` of the non-null rows merge into 'other'."""
    as_str = pc.cast(column, pa.string()) if not pa.types.is_string(column.type) else column
    counts = pc.value_counts(pc.drop_null(as_str)).to_pylist()
    total = sum(c["counts"] for c in counts)
    common = sorted((c["values"] for c in counts if c["counts"] >= rare_share * total), key=str)
    rare = sorted(c["values"] for c in counts if c["counts"] < rare_share * total)
    cohorts = [Cohort(str(v), values=[str(v)]) for v in common]
    if rare:
        name = OTHER if OTHER not in common else f"{OTHER}_merged"
        cohorts.append(Cohort(name, values=[str(v) for v in rare]))
    return cohorts


@dataclass
class AxisResult:
    """Discovery outcome for one axis."""

    spec: Optional[CohortSpec]
    """The chosen spec (None when no pair met the limits)."""
    pairs: list[dict[str, Any]]
    """Every cohort pair with its metrics, sizes, positive rates and eligibility."""
    best_score: float
    """Disparity of the chosen pair under the ranking metric (-inf when none)."""
    reason: str = ""
    """Why no pair was chosen."""


def discover_axis(
    axis: AxisSpec,
    column: pa.Array,
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    min_rows: int = 1000,
    min_positives: int = 50,
    metric: str = "js",
    rare_share: float = 0.01,
) -> AxisResult:
    """Build the axis' cohorts, score every pair, choose (head, tail).

    Args:
        column: the raw axis column, row-aligned with ``probs`` / ``labels`` [N].
        probs: the baseline's predicted probabilities [N].
        labels: 0/1 labels [N].
    Raises:
        ValueError: fewer than two usable cohorts on the axis.
    """
    if axis.kind == "numeric":
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        cohorts = quantile_cohorts(values, axis.quantiles, merge_ties=True)
    else:
        cohorts = categorical_cohorts(column, rare_share)
    spec = CohortSpec(axis=axis.name, kind=axis.kind, cohorts=cohorts, head="", tail="")
    idx = spec.assign(column)
    sizes = np.bincount(idx[idx >= 0], minlength=len(cohorts))
    if (sizes > 0).sum() < 2:
        raise ValueError(f"axis '{axis.name}': fewer than two non-empty cohorts ({[c.name for c in cohorts]})")
    edges = histogram_bins(probs)
    pairs = []
    for i, j in itertools.combinations(range(len(cohorts)), 2):
        mi, mj = idx == i, idx == j
        rows_a, rows_b = int(mi.sum()), int(mj.sum())
        pos_a, pos_b = int(labels[mi].sum()), int(labels[mj].sum())
        pair: dict[str, Any] = {"a": cohorts[i].name, "b": cohorts[j].name}
        if rows_a and rows_b:
            pair.update(prediction_disparity(probs[mi], probs[mj], edges))
        pair.update(
            rows_a=rows_a,
            rows_b=rows_b,
            plr_a=pos_a / rows_a if rows_a else None,
            plr_b=pos_b / rows_b if rows_b else None,
            positives_a=pos_a,
            positives_b=pos_b,
        )
        failed = []
        if min(rows_a, rows_b) < min_rows:
            failed.append(f"min_rows={min_rows} (rows {rows_a}, {rows_b})")
        if min(pos_a, pos_b) < min_positives:
            failed.append(f"min_positives={min_positives} (positives {pos_a}, {pos_b})")
        pair["eligible"] = not failed
        pair["score"] = disparity_score(pair, metric) if rows_a and rows_b else float("-inf")
        if failed:
            pair["ineligible_because"] = "; ".join(failed)
        pairs.append(pair)
    pairs.sort(key=lambda p: p["score"], reverse=True)
    eligible = [p for p in pairs if p["eligible"]]
    selection = {"metric": metric, "min_rows": min_rows, "min_positives": min_positives}
    if not eligible:
        limits = {
            reason.split(" ")[0] for p in pairs for reason in p.get("ineligible_because", "").split("; ") if reason
        }
        return AxisResult(None, pairs, float("-inf"), f"no cohort pair meets {' and '.join(sorted(limits))}")
    best = eligible[0]
    head, tail = (best["a"], best["b"]) if best["plr_a"] >= best["plr_b"] else (best["b"], best["a"])
    spec.head, spec.tail, spec.selection, spec.pairs = head, tail, selection, pairs
    return AxisResult(spec, pairs, best["score"])
