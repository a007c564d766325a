"""Evaluation groups (overall, head, tail, every segment of the axis) and NE_diff against a baseline.

Input: predictions tables (``prob``, ``label`` [, ``weight``, ``true_prob``, axis columns]) from
``score_split`` or a ``predict`` output; one (model, baseline) pair per seed, paired in order.
Output: ``eval.json``: ``{"groups": {"<group>": {"rows", "positive_rate", "ne", "calibration", "auc",
"ne_base", "ne_diff", "ci95", "ci_kind", "p_value", "bayes_ne"}}}`` (docs/formats.md). A group
whose labels are all one class has ``"ne": null`` and a ``"reason"`` (``"no positives"``, ...): no
NE, NE_diff or interval exists for it, and readers show "n/a (<reason>)".
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pyarrow as pa

from c2al_rec.cohorts.spec import CohortSpec

from .stats import DiffInterval, auc, calibration, ne_diff, normalized_entropy, paired_bootstrap, seed_interval

nan = float("nan")


def group_masks(table: pa.Table, spec: CohortSpec) -> dict[str, np.ndarray]:
    """``overall``, ``head``, ``tail`` and ``segment:<cohort>`` row masks."""
    if spec.axis not in table.column_names:
        raise ValueError(f"predictions have no column '{spec.axis}' (the cohort axis); columns: {table.column_names}")
    idx = spec.assign(table.column(spec.axis))
    masks = {"overall": np.ones(table.num_rows, bool), "head": idx == spec.head_index, "tail": idx == spec.tail_index}
    masks.update({f"segment:{c.name}": idx == i for i, c in enumerate(spec.cohorts)})
    return masks


def _columns(table: pa.Table) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    for name in ("prob", "label"):
        if name not in table.column_names:
            raise ValueError(f"predictions have no '{name}' column (columns: {table.column_names})")
    prob = table.column("prob").to_numpy().astype(np.float64)
    label = table.column("label").to_numpy().astype(np.float64)
    weight = table.column("weight").to_numpy().astype(np.float64) if "weight" in table.column_names else None
    return prob, label, weight


def undefined_reason(label: np.ndarray, weight: Optional[np.ndarray]) -> Optional[str]:
    """Why NE cannot judge a group (``"no rows"``, ``"no positives"``, ``"no negatives"``), or None.

    NE divides by the entropy of the group's positive rate, which is 0 when every label is equal:
    any number printed there would be an artefact of the clipping, not a measurement.
    """
    w = np.ones_like(label) if weight is None else weight
    if len(label) == 0 or w.sum() <= 0:
        return "no rows"
    if (w * label).sum() <= 0:
        return "no positives"
    if (w * (1 - label)).sum() <= 0:
        return "no negatives"
    return None


def group_metrics(prob: np.ndarray, label: np.ndarray, weight: Optional[np.ndarray]) -> dict[str, Any]:
    """rows, positive rate, NE, calibration, AUC of one group; a group NE cannot judge gets ``None``
    for the metrics that need both classes (``calibration`` needs positives) and a ``reason``."""
    reason = undefined_reason(label, weight)
    w = np.ones_like(label) if weight is None else weight
    out: dict[str, Any] = {
        "rows": int(len(label)),
        "positive_rate": float((w * label).sum() / w.sum()) if reason != "no rows" else None,
        "ne": normalized_entropy(prob, label, weight) if reason is None else None,
        "calibration": calibration(prob, label, weight) if reason in (None, "no negatives") else None,
        "auc": auc(prob, label, weight) if reason is None else None,
    }
    if reason is not None:
        out["reason"] = reason
    return out


def evaluate_groups(
    models: list[pa.Table],
    spec: CohortSpec,
    baselines: Optional[list[pa.Table]] = None,
    num_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``eval.json`` dict: per group metrics of the (first-seed) model, plus NE_diff vs baseline.

    Args:
        models: one predictions table per seed (same rows in the same order).
        baselines: the matching baseline tables, paired with ``models`` in order.
    """
    if baselines is not None and len(baselines) != len(models):
        raise ValueError(f"{len(models)} --checkpoint but {len(baselines)} --baseline: pass one baseline per seed")
    masks = group_masks(models[0], spec)
    cols = [_columns(t) for t in models]
    base_cols = [_columns(t) for t in baselines] if baselines else None
    for k, (p, y, _) in enumerate(cols):
        if len(y) != len(cols[0][1]) or not np.array_equal(y, cols[0][1]):
            raise ValueError(f"seed {k}: predictions are not on the same rows as seed 0 (labels differ)")
        if base_cols is not None and not np.array_equal(base_cols[k][1], y):
            raise ValueError(f"seed {k}: baseline predictions are not on the same rows as the model's")
    true_prob = models[0].column("true_prob").to_numpy() if "true_prob" in models[0].column_names else None
    groups: dict[str, Any] = {}
    for name, mask in masks.items():
        prob, label, weight = cols[0]
        w = None if weight is None else weight[mask]
        g = group_metrics(prob[mask], label[mask], w)
        if len(models) > 1 and g["ne"] is not None:
            g["ne_seeds"] = [normalized_entropy(c[0][mask], c[1][mask], w) for c in cols]
            g["ne"] = float(np.mean(g["ne_seeds"]))
        if true_prob is not None and g["ne"] is not None:
            g["bayes_ne"] = normalized_entropy(true_prob[mask], label[mask], w)
        if base_cols is not None and g["ne"] is not None:
            base_ne = [normalized_entropy(b[0][mask], b[1][mask], w) for b in base_cols]
            if len(cols) == 1:  # one seed: an interval over rows
                diff: DiffInterval = paired_bootstrap(
                    prob[mask], base_cols[0][0][mask], label[mask], w, num_resamples=num_resamples, seed=seed
                )
                per_seed = [diff]
            else:  # several seeds: a t-interval over the per-seed point estimates (no row resampling needed)
                per_seed = [
                    DiffInterval(
                        ne_diff(normalized_entropy(c[0][mask], c[1][mask], w), nb), (nan, nan), nan, "rows", nan
                    )
                    for c, nb in zip(cols, base_ne)
                ]
                diff = seed_interval(per_seed)
            g.update(
                ne_base=float(np.mean(base_ne)),
                ne_diff=diff.ne_diff,
                ci95=list(diff.ci95),
                ci_kind=diff.ci_kind,
                p_value=diff.p_value,
            )
            if len(per_seed) > 1:
                g["ne_diff_seeds"] = [d.ne_diff for d in per_seed]
        groups[name] = g
    return {"groups": groups, "axis": spec.axis, "head": spec.head, "tail": spec.tail, "seeds": len(models)}
