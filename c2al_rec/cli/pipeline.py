"""Run the whole C2AL workflow: data, baseline, discovery, C2AL, evaluation, export, predict.

    c2al-rec pipeline --config launch/configs/demo.toml --out runs/demo [--skip-done]
    c2al-rec pipeline --dataset movielens100k --out runs/ml100k

Stages (each writes into --out; a failed stage stops the pipeline and leaves earlier outputs;
the seconds each stage took go to --out/timings.json, kept across --skip-done reruns):
  1 data        generate / check the dataset                          data.path/schema.json
  2 baseline    train with the aux heads off (2 ranks)                baseline/metrics.json
  3 discover    rank cohort pairs on the baseline's predictions       cohorts.json
  4 candidates  train C2AL per [select] candidate (same seed and      lambda_<x>/metrics.json ...
                data order as the baseline)
  5 select      score every candidate on valid, apply the rule        selection.json
  6 evaluate    the chosen model vs baseline on the eval split        eval/eval.json, report.md
  7 export      TorchScript serving model of the chosen candidate     export/metadata.json (selection)
  8 predict     score the test split with the exported model          predictions.parquet

Selection rule ([select]): a candidate passes when none of its valid NE_diff intervals (overall, head,
tail) lies wholly above 0 (a group with no positives or no negatives fails); the baseline passes by
definition; the lowest valid NE_diff of select.objective among passing candidates is exported (ties
to the smaller lambda). --select.force=<lambda or name> overrides it with a warning. The test split
never chooses.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from c2al_rec.config import load_config
from c2al_rec.config.bundled import BUNDLED_DATASETS, bundled_config
from c2al_rec.workflows.pipeline import STAGES

from .options import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--dataset",
        choices=sorted(BUNDLED_DATASETS),
        default=None,
        help="shorthand for --config <the bundled config of that dataset> (launch/configs/)",
    )
    parser.add_argument("--out", required=True, help="output directory of the whole workflow")
    parser.add_argument("--skip-done", action="store_true", help="skip stages whose output already exists")
    parser.add_argument("--stop-after", choices=STAGES, default=None, help="stop after this stage")


def run(args: argparse.Namespace) -> int:
    config = args.config
    if args.dataset is not None:
        if config is not None:
            raise ValueError("give --config or --dataset, not both")
        config = str(bundled_config(BUNDLED_DATASETS[args.dataset]))
    if config is None:
        config = str(bundled_config(BUNDLED_DATASETS["synthetic"]))
    cfg = load_config(config, args.overrides)
    from c2al_rec.train.launch import preflight_config_only
    from c2al_rec.workflows.pipeline import Pipeline

    cfg = preflight_config_only(cfg)
    out = Path(args.out)
    t0 = time.perf_counter()
    _merge_timings(out, Pipeline(cfg, out, args.skip_done).run(args.stop_after))
    report = out / "report.md"
    if report.is_file():
        print()
        print(_ne_diff_table(out))
        print(f"report:         {report}")
        print(f"plots:          {', '.join(str(p) for p in sorted(out.glob('**/*.png')))}")
        selection = out / "selection.json"
        if selection.is_file():
            record = json.loads(selection.read_text())
            forced = " (FORCED by --select.force)" if record["forced"] else ""
            print(f"chosen model:   {record['chosen']}{forced}, by valid {record['objective']} NE_diff")
        print(f"serving model:  {out / 'export'}")
        print(f"predictions:    {out / 'predictions.parquet'}")
    print(f"[pipeline] finished in {time.perf_counter() - t0:.0f}s")
    return 0


def _merge_timings(out: Path, timings: dict[str, float]) -> None:
    """``<out>/timings.json``: seconds per stage; a stage skipped now keeps the time it took when it ran."""
    from c2al_rec.io import atomic_write_json

    path = out / "timings.json"
    stages = json.loads(path.read_text()).get("stages_s", {}) if path.is_file() else {}
    stages.update({name: round(s, 1) for name, s in timings.items()})
    atomic_write_json(path, {"stages_s": stages, "wall_s": round(sum(stages.values()), 1)})


def _ne_diff_table(out: Path) -> str:
    md = out / "eval" / "eval.md"
    return md.read_text() if md.is_file() else json.dumps(json.loads((out / "eval" / "eval.json").read_text()))
