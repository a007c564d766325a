"""Create and check datasets: synthetic planted-cohort data, public datasets; validate any dataset.

c2al-rec data check DIR [--split train]          read every row through the reader, print stats
c2al-rec data synthetic --rows N --out DIR --seed S [--max-table-size M ...] [--data.synthetic.<field>=value]
c2al-rec data <public dataset> --out DIR [--source PATH] [--seed S]     (movielens100k, adult, ...)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

from .options import add_field_flags, field_overrides

# `data synthetic`: short flag -> the config field it sets
SYNTHETIC_FLAGS = {
    "--out": "data.path",
    "--rows": "data.synthetic.rows",
    "--seed": "data.synthetic.seed",
    "--max-table-size": "data.synthetic.max_table_size",
    "--num-sparse": "data.synthetic.num_sparse",
    "--num-dense": "data.synthetic.num_dense",
    "--base-rate": "data.synthetic.base_rate",
    "--head-tail-plr-ratio": "data.synthetic.head_tail_plr_ratio",
    "--cohort-effect-scale": "data.synthetic.cohort_effect_scale",
}
SYNTHETIC_SWITCHES = {"--no-cohort-effects": ("data.synthetic.cohort_effects", False)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from c2al_rec.config import PUBLIC_DATASETS

    sub = parser.add_subparsers(dest="data_cmd", metavar="<command>", required=True)
    p = sub.add_parser("check", help="validate a dataset against its schema and print rows, rates, cohort sizes")
    p.add_argument("root", help="dataset root (holding schema.json)")
    p.add_argument("--split", default=None, help="one split to check (default: every split)")

    p = sub.add_parser(
        "synthetic",
        help="generate the planted-cohort synthetic CTR dataset",
        description="Generate the planted-cohort synthetic CTR dataset: the [data.synthetic] section, from "
        "--config, the flags below and --data.synthetic.<field>=value, written to --out (data.path).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_field_flags(p, SYNTHETIC_FLAGS, SYNTHETIC_SWITCHES, sections=("data.path", "data.synthetic"))

    for name, entry in PUBLIC_DATASETS.items():
        p = sub.add_parser(name, help=entry.title)
        p.add_argument("--out", required=True, help="dataset root to create")
        p.add_argument("--source", default=None, help=entry.source_help)
        if entry.seeded:
            p.add_argument("--seed", type=int, default=0, help="seed of the train/valid/test split")


def run(args: argparse.Namespace) -> int:
    if args.data_cmd == "check":
        return _check(args.root, args.split)
    t0 = time.perf_counter()
    if args.data_cmd == "synthetic":
        from c2al_rec.config import load_config
        from c2al_rec.data.synthetic import generate_synthetic

        data = load_config(args.config, field_overrides(args)).data
        if not data.path:
            raise ValueError("data synthetic needs --out DIR (data.path): the dataset root to create")
        if data.synthetic.rows <= 0:
            raise ValueError(f"data synthetic needs --rows N > 0 (data.synthetic.rows), got {data.synthetic.rows}")
        out = Path(data.path)
        schema = generate_synthetic(out, data.synthetic)
    else:
        from c2al_rec.data.public import convert_public

        out = Path(args.out)
        source = Path(args.source) if args.source else None
        schema = convert_public(args.data_cmd, out, source, seed=getattr(args, "seed", 0))
    print(f"wrote {out} in {time.perf_counter() - t0:.1f}s")
    return _check(out, None, schema)


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
