"""Validate a dataset by reading every row through the reader; rows, positive rates and cohort-axis statistics.

Example::

    report = check_dataset("data/synth")
    [(s.split, s.rows, s.positive_rate) for s in report.splits]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .dataset import Dataset
from .reader import ParquetReader
from .schema import SCHEMA_FILE, DatasetSchema, load_schema

CHECK_BATCH = 65_536
NUMERIC_QUANTILES = (0.05, 0.95)
MAX_CATEGORIES_SHOWN = 30


def _axis_stats(schema: DatasetSchema, split: Optional[str]) -> list[str]:
    lines = []
    dataset = Dataset(schema)
    label = dataset.read_columns(split, [schema.label]).column(0).to_numpy().astype(np.float64)
    for axis in schema.axes:
        col = dataset.read_columns(split, [axis.name]).column(0)
        flag = " [sensitive]" if axis.sensitive else ""
        lines.append(f"  axis {axis.name} ({axis.kind}){flag}:")
        if axis.kind == "numeric":
            t = col.type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
                raise ValueError(
                    f"{schema.root / SCHEMA_FILE}: axis '{axis.name}' is numeric but its column has type {t}"
                )
            x = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)  # nulls become NaN
            missing = np.isnan(x)
            if missing.any():
                # such rows fall in no cohort of this axis; the quantiles are over the others
                lines.append(f"    {int(missing.sum())} of {len(x)} rows are NaN or null (in no cohort)")
            if missing.all():
                continue
            lo, hi = np.quantile(x[~missing], NUMERIC_QUANTILES)
            # closed outer bins so that ties at the extremes (e.g. many zeros) stay visible
            bins = [
                (f"<= p{NUMERIC_QUANTILES[0] * 100:g} ({lo:.4g})", x <= lo),
                ("middle", (x > lo) & (x < hi)),
                (f">= p{NUMERIC_QUANTILES[1] * 100:g} ({hi:.4g})", x >= hi),
            ]
            for name, m in bins:
                rate = label[m].mean() if m.any() else float("nan")
                lines.append(f"    {name:<24} rows {m.sum():>9}  positive rate {rate:.4f}")
        else:
            # group in Arrow (no Python lists of the column): value -> rows, positives
            grouped = (
                pa.table({"v": pc.cast(col, pa.string()), "y": pa.array(label)})
                .group_by("v")
                .aggregate([("y", "sum"), ("y", "count")])
            )
            uniq = np.asarray(grouped.column("v").to_pylist(), dtype=object)
            counts = grouped.column("y_count").to_numpy()
            pos = grouped.column("y_sum").to_numpy()
            order = np.argsort(-counts, kind="stable")
            for i in order[:MAX_CATEGORIES_SHOWN]:
                value = "(null)" if uniq[i] is None else str(uniq[i])
                lines.append(f"    {value:<24} rows {counts[i]:>9}  positive rate {pos[i] / counts[i]:.4f}")
            if len(order) > MAX_CATEGORIES_SHOWN:
                lines.append(f"    ... {len(order) - MAX_CATEGORIES_SHOWN} more values")
    return lines


@dataclass
class SplitCheck:
    """What reading one split through the reader found."""

    split: Optional[str]
    rows: int
    positive_rate: float
    labels: np.ndarray
    """0/1 labels [N] (float64)."""
    true_prob: Optional[np.ndarray]
    """The generator's ground-truth probabilities [N] when the data has them."""
    axis_lines: list[str]
    """Cohort-axis statistics, one printable line each."""


@dataclass
class DatasetCheck:
    header: str
    splits: list[SplitCheck]


def check_dataset(
    root: str | Path, split: Optional[str] = None, schema: Optional[DatasetSchema] = None
) -> DatasetCheck:
    """Read every row of ``split`` (every split when None) through the reader, which raises a
    ValueError naming the file and column on bad data; collect rows, rates and cohort-axis stats."""
    schema = schema if schema is not None else load_schema(root)
    splits = [split] if split is not None else (list(schema.splits) if schema.splits else [None])
    header = (
        f"dataset {root}: {len(schema.dense)} dense, {len(schema.sparse)} sparse, axes {[a.name for a in schema.axes]}"
    )
    out = []
    for s in splits:
        reader = ParquetReader(root, schema, split=s, batch_size=CHECK_BATCH, shuffle=False, drop_last=False)
        labels, probs = [], []
        for batch in reader:
            labels.append(batch.labels.numpy().astype(np.float64))
            if batch.true_prob is not None:
                probs.append(batch.true_prob.numpy())
        y = np.concatenate(labels)
        out.append(
            SplitCheck(s, len(y), float(y.mean()), y, np.concatenate(probs) if probs else None, _axis_stats(schema, s))
        )
    return DatasetCheck(header, out)
