"""Discover contrasting cohorts: score a baseline, rank cohort pairs per axis, write the spec.

    c2al-rec discover --checkpoint runs/baseline --data DATA [--split valid] \
        --axes user_value:quantiles=0.05,0.25,0.5,0.75,0.95 age_bucket:categorical --out cohorts.json

Settings come from the [discover] section: --config FILE, the short flags below (each sets one field),
then --discover.<field>=value. Writes the spec of the most disparate eligible (head, tail) pair over
all axes to --out (the cohort spec format of docs/formats.md), every axis' spec and ranked pairs to
<out>.axes.json, and a PNG of the head vs tail prediction densities. Loads a DCP checkpoint without
running code from it: its pickled metadata through an allow-list unpickler, other values with
torch.load(weights_only=True).
"""

from __future__ import annotations

import argparse

from .options import add_field_flags, field_overrides

# short flag -> the config field it sets
FIELD_FLAGS = {
    "--data": "data.path",
    "--split": "discover.split",
    "--axes": "discover.axes",
    "--metric": "discover.metric",
    "--min-rows": "discover.min_rows",
    "--min-positives": "discover.min_positives",
    "--rare-share": "discover.rare_share",
    "--batch-size": "discover.batch_size",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="baseline run directory or step_<N> directory")
    parser.add_argument("--which", default="latest", choices=["latest", "best"], help="checkpoint of a run directory")
    parser.add_argument("--out", required=True, help="cohort spec JSON to write")
    add_field_flags(parser, FIELD_FLAGS, sections=("discover", "data.path"))


def run(args: argparse.Namespace) -> int:
    from c2al_rec.config import load_config
    from c2al_rec.workflows.discover import discover_cohorts, format_ranking

    cfg = load_config(args.config, field_overrides(args))
    if not cfg.data.path:
        raise ValueError("discover needs the dataset root: --data DIR (or data.path in --config)")
    outcome = discover_cohorts(cfg.discover, args.checkpoint, cfg.data.path, args.out, which=args.which)
    print(format_ranking(outcome))
    spec = outcome.spec
    print(f"wrote {', '.join(str(f) for f in outcome.files)} (axis {outcome.axis}: head {spec.head}, tail {spec.tail})")
    return 0
