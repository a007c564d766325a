"""Evaluate a model per cohort (NE, calibration, AUC, Bayes NE) and against a baseline (NE_diff).

    c2al-rec evaluate --checkpoint runs/c2al --baseline runs/baseline --data DATA --cohorts cohorts.json --out eval/
    c2al-rec evaluate --checkpoint c2al_s0 --checkpoint c2al_s1 --baseline base_s0 --baseline base_s1 ...  (seeds)
    c2al-rec evaluate --predictions preds.parquet [--baseline-predictions base.parquet] --cohorts c.json --out eval/

Writes eval.json, eval.md and ne_diff.png. One seed gives a row-level interval only.
Loads DCP checkpoints without running code from them: their pickled metadata through an allow-list
unpickler, other values with torch.load(weights_only=True).
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
    from c2al_rec.analysis.report import markdown_table
    from c2al_rec.cohorts.spec_file import load_cohort_spec
    from c2al_rec.workflows.evaluate import RunScorer, evaluate_runs, evaluate_tables, write_evaluation

    if bool(args.checkpoint) == bool(args.predictions):
        raise ValueError("give either --checkpoint (with --data) or --predictions")
    spec = load_cohort_spec(args.cohorts) if args.cohorts else None
    out = Path(args.out)
    if args.checkpoint:
        if not args.data:
            raise ValueError("--checkpoint needs --data (the dataset root to score)")
        scorer = RunScorer(args.data, args.split, args.which, args.batch_size)
        result = evaluate_runs(
            args.checkpoint, args.baseline or None, args.data, args.split, spec, args.resamples, out, scorer
        )
    else:
        import pyarrow.parquet as pq

        if spec is None:
            raise ValueError("--predictions needs --cohorts (the cohort spec JSON)")
        models = [pq.read_table(p) for p in args.predictions]
        baselines = [pq.read_table(p) for p in args.baseline_predictions] or None
        result = evaluate_tables(models, baselines, spec, args.resamples)
        result["split"] = args.split
        result["sources"] = {"models": args.predictions, "baselines": args.baseline_predictions}
        write_evaluation(result, out)
    print(markdown_table(result, result["sensitive_axis"]))
    written = [out / "eval.json", out / "eval.md"] + ([out / "ne_diff.png"] if (out / "ne_diff.png").is_file() else [])
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
