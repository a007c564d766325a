"""Discover contrasting cohorts: score a baseline, rank cohort pairs per axis, write the spec.

    c2al-rec discover --checkpoint runs/baseline --data DATA [--split valid] \
        --axes user_value:quantiles=0.05,0.25,0.5,0.75,0.95 age_bucket:categorical --out cohorts.json

Writes the spec of the most disparate eligible (head, tail) pair over all axes to --out (the
cohort spec format of docs/formats.md), every axis' spec and ranked pairs to <out>.axes.json, and a
PNG of the head vs tail prediction densities. Loads a DCP checkpoint without running code from it:
its pickled metadata through an allow-list unpickler, other values with torch.load(weights_only=True).
"""

from __future__ import annotations

import argparse

from c2al_rec.config import DiscoverConfig

_D = DiscoverConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="baseline run directory or step_<N> directory")
    parser.add_argument("--which", default="latest", choices=["latest", "best"], help="checkpoint of a run directory")
    parser.add_argument("--data", required=True, help="dataset root (schema.json + splits)")
    parser.add_argument("--split", default=_D.split, help="split to score (default: valid)")
    parser.add_argument(
        "--axes", nargs="+", required=True, help="axis specs: name:quantiles=q1,q2,... | name:categorical"
    )
    parser.add_argument("--out", required=True, help="cohort spec JSON to write")
    parser.add_argument("--metric", default=_D.metric, choices=["js", "kl", "cosine", "wasserstein"], help="ranking")
    parser.add_argument("--min-rows", type=int, default=_D.min_rows, help="minimum rows in each cohort of the pair")
    parser.add_argument("--min-positives", type=int, default=_D.min_positives, help="minimum positives in each")
    parser.add_argument("--rare-share", type=float, default=_D.rare_share, help="rarer categorical values -> 'other'")
    parser.add_argument("--batch-size", type=int, default=4096, help="scoring batch size")


def run(args: argparse.Namespace) -> int:
    from c2al_rec.workflows.discover import DiscoverOptions, discover_cohorts, format_ranking

    outcome = discover_cohorts(
        DiscoverOptions(
            checkpoint=args.checkpoint,
            data=args.data,
            axes=args.axes,
            out=args.out,
            split=args.split,
            which=args.which,
            metric=args.metric,
            min_rows=args.min_rows,
            min_positives=args.min_positives,
            rare_share=args.rare_share,
            batch_size=args.batch_size,
        )
    )
    print(format_ranking(outcome))
    spec = outcome.spec
    print(f"wrote {', '.join(str(f) for f in outcome.files)} (axis {outcome.axis}: head {spec.head}, tail {spec.tail})")
    return 0
