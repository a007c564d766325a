"""Evaluate a model per cohort (NE, calibration, AUC, Bayes NE) and against a baseline (NE_diff with CIs).

    c2al-rec evaluate --checkpoint runs/c2al --baseline runs/baseline --data DATA --cohorts cohorts.json --out eval/
    c2al-rec evaluate --checkpoint c2al_s0 --checkpoint c2al_s1 --baseline base_s0 --baseline base_s1 ...  (seeds)
    c2al-rec evaluate --predictions preds.parquet [--baseline-predictions base.parquet] --cohorts c.json --out eval/

Writes eval.json (DESIGN.md keys), eval.md and ne_diff.png. One seed gives a row-level interval only.
Loads DCP checkpoints: only your own (their metadata is pickled).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", action="append", default=[], help="model run / step dir (repeat per seed)")
    parser.add_argument("--baseline", action="append", default=[], help="baseline run / step dir, paired in order")
    parser.add_argument("--predictions", action="append", default=[], help="predictions Parquet from `predict`")
    parser.add_argument("--baseline-predictions", action="append", default=[], help="baseline predictions Parquet")
    parser.add_argument("--which", default="latest", choices=["latest", "best"], help="checkpoint of a run directory")
    parser.add_argument("--data", default=None, help="dataset root (needed with --checkpoint)")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--cohorts", default=None, help="cohort spec JSON (default: the model run's cohorts.json)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--batch-size", type=int, default=4096, help="scoring batch size")


def run(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from c2al_rec.cohorts.spec import load_cohort_spec
    from c2al_rec.io import atomic_write_json

    from .evaluate import evaluate_groups
    from .report import markdown_table, plot_ne_diff, write_markdown

    if bool(args.checkpoint) == bool(args.predictions):
        raise ValueError("give either --checkpoint (with --data) or --predictions")
    spec = load_cohort_spec(args.cohorts) if args.cohorts else None
    sensitive = False
    if args.checkpoint:
        if not args.data:
            raise ValueError("--checkpoint needs --data (the dataset root to score)")
        from c2al_rec.data.schema import load_schema
        from c2al_rec.distributed.unsharded import load_unsharded

        from .scoring import score_checkpoint

        schema = load_schema(args.data)

        def score(path: str):  # type: ignore[no-untyped-def]
            nonlocal spec
            loaded = load_unsharded(path, args.which, schema=schema)
            if spec is None:
                if loaded.spec is None:
                    raise ValueError(f"{path} has no cohort spec: pass --cohorts cohorts.json")
                spec = loaded.spec
            return score_checkpoint(loaded, args.data, args.split, args.batch_size)

        models = [score(p) for p in args.checkpoint]
        baselines = [score(p) for p in args.baseline] or None
        sensitive = any(a.sensitive for a in schema.axes if spec is not None and a.name == spec.axis)
    else:
        if spec is None:
            raise ValueError("--predictions needs --cohorts (the cohort spec JSON)")
        models = [pq.read_table(p) for p in args.predictions]
        baselines = [pq.read_table(p) for p in args.baseline_predictions] or None
    assert spec is not None
    result = evaluate_groups(models, spec, baselines, num_resamples=args.resamples)
    result["split"] = args.split
    result["sources"] = {
        "models": args.checkpoint or args.predictions,
        "baselines": args.baseline or args.baseline_predictions,
    }
    result["sensitive_axis"] = sensitive
    out = Path(args.out)
    atomic_write_json(out / "eval.json", result)
    write_markdown(out / "eval.md", markdown_table(result, sensitive))
    png = plot_ne_diff(result, out / "ne_diff.png")
    print(markdown_table(result, sensitive))
    print(f"wrote {out / 'eval.json'}, {out / 'eval.md'}" + (f", {png}" if png else ""))
    return 0
