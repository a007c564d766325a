"""Run the whole C2AL workflow: data -> baseline -> discovery -> C2AL -> evaluation -> export -> serving.

    c2al-rec pipeline --config launch/configs/demo.toml --out runs/demo [--skip-done]
    c2al-rec pipeline --dataset movielens100k --out runs/ml100k

Stages (each writes into --out; a failed stage stops the pipeline and leaves earlier outputs):
  1 data       generate / check the dataset                       data.path/schema.json
  2 baseline   train with the aux heads off (2 ranks)             baseline/metrics.json
  3 discover   rank cohort pairs on the baseline's predictions    cohorts.json
  4 c2al       train with the discovered head / tail cohorts      c2al/metrics.json
  5 evaluate   NE / NE_diff per cohort, attention comparison      eval/eval.json, report.md
  6 export     TorchScript serving model (aux heads stripped)     export/metadata.json
  7 predict    score the test split with the exported model       predictions.parquet
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .config import Config, dump_toml, load_config

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "launch" / "configs"
DATASETS = {"synthetic": "demo.toml", "movielens100k": "movielens100k.toml", "adult": "adult.toml"}
STAGES = ["data", "baseline", "discover", "c2al", "evaluate", "export", "predict"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .config_cli import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default=None,
        help="shorthand for --config launch/configs/<dataset config>",
    )
    parser.add_argument("--out", required=True, help="output directory of the whole workflow")
    parser.add_argument("--skip-done", action="store_true", help="skip stages whose output already exists")
    parser.add_argument("--stop-after", choices=STAGES, default=None, help="stop after this stage")


class Pipeline:
    """The seven stages over one output directory.

    Args:
        cfg: run config (data, model, train... plus the [discover] and [pipeline] sections).
        out: output directory.
        skip_done: skip a stage whose output exists.
    """

    def __init__(self, cfg: Config, out: Path, skip_done: bool = False) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.skip_done = skip_done
        self.paths = {
            "data": Path(cfg.data.path) / "schema.json",
            "baseline": self.out / "baseline" / "metrics.json",
            "discover": self.out / "cohorts.json",
            "c2al": self.out / "c2al" / "metrics.json",
            "evaluate": self.out / "eval" / "eval.json",
            "export": self.out / "export" / "metadata.json",
            "predict": self.out / "predictions.parquet",
        }

    def run(self, stop_after: str | None = None) -> dict[str, float]:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "pipeline.toml").write_text(dump_toml(self.cfg))
        timings: dict[str, float] = {}
        stages: dict[str, Callable[[], None]] = {
            "data": self.stage_data,
            "baseline": self.stage_baseline,
            "discover": self.stage_discover,
            "c2al": self.stage_c2al,
            "evaluate": self.stage_evaluate,
            "export": self.stage_export,
            "predict": self.stage_predict,
        }
        for i, name in enumerate(STAGES, 1):
            if self.skip_done and self.paths[name].exists():
                print(f"[pipeline] {i}/7 {name}: done already ({self.paths[name]}), skipped", flush=True)
                continue
            print(f"[pipeline] {i}/7 {name} ...", flush=True)
            t0 = time.perf_counter()
            try:
                stages[name]()
            except (ValueError, FileNotFoundError) as e:  # bad input: one clear line from the CLI
                raise ValueError(f"pipeline stage {i}/7 '{name}' failed: {e}") from e
            except Exception:  # a bug or a crash: keep the traceback, say which stage
                print(f"[pipeline] stage {i}/7 '{name}' failed; earlier outputs are intact", file=sys.stderr)
                raise
            timings[name] = time.perf_counter() - t0
            print(f"[pipeline] {i}/7 {name} finished in {timings[name]:.1f}s -> {self.paths[name]}", flush=True)
            if name == stop_after:
                break
        return timings

    # ----------------------------------------------------------------------------------- stages
    def stage_data(self) -> None:
        from .data.synthetic import ensure_dataset

        ensure_dataset(self.cfg.data)

    def _train(self, name: str, cfg: Config) -> None:
        from .train.launch import launch

        launch(cfg, self.out / name, nproc_per_node=self.cfg.pipeline.nproc_per_node)

    def stage_baseline(self) -> None:
        # The baseline keeps the configured spec (if any) for per-cohort reporting, with no aux loss.
        cohorts = replace(self.cfg.cohorts, enabled=False)
        self._train("baseline", replace(self.cfg, cohorts=cohorts))

    def stage_discover(self) -> None:
        from .cohorts.cli import run as discover

        d = self.cfg.discover
        args = argparse.Namespace(
            checkpoint=str(self.out / "baseline"),
            which="latest",
            data=self.cfg.data.path,
            split=d.split,
            axes=d.axes,
            out=str(self.paths["discover"]),
            metric=d.metric,
            min_rows=d.min_rows,
            min_positives=d.min_positives,
            rare_share=d.rare_share,
            batch_size=4096,
        )
        discover(args)

    def stage_c2al(self) -> None:
        cohorts = replace(self.cfg.cohorts, enabled=True, spec=str(self.paths["discover"]))
        checkpoint = self.cfg.checkpoint
        if self.cfg.pipeline.init_c2al_from_baseline:
            checkpoint = replace(checkpoint, init_from=str(self.out / "baseline"))
        self._train("c2al", replace(self.cfg, cohorts=cohorts, checkpoint=checkpoint))

    def stage_evaluate(self) -> None:
        from .analysis.pipeline_report import write_pipeline_report

        write_pipeline_report(self.cfg, self.out, self.paths["discover"])

    def stage_export(self) -> None:
        from .export.exporter import export_checkpoint

        e = self.cfg.export
        export_checkpoint(
            self.out / "c2al",
            self.out / "export",
            e.quantize,
            "latest",
            self.cfg.data.path,
            self.cfg.pipeline.eval_split,
            e.parity_rows,
            e.parity_max_abs_diff,
            e.parity_ne_tolerance,
        )

    def stage_predict(self) -> None:
        from .serve.artifact import load_exported
        from .serve.predictor import input_files, predict_files

        model = load_exported(self.out / "export")
        predict_files(model, input_files(self.cfg.data.path, self.cfg.pipeline.eval_split), self.paths["predict"])


def run(args: argparse.Namespace) -> int:
    config = args.config
    if args.dataset is not None:
        if config is not None:
            raise ValueError("give --config or --dataset, not both")
        config = str(REPO_CONFIGS / DATASETS[args.dataset])
    if config is None:
        config = str(REPO_CONFIGS / DATASETS["synthetic"])
    cfg = load_config(config, args.overrides)
    from .train.launch import preflight_config_only

    cfg = preflight_config_only(cfg)
    out = Path(args.out)
    t0 = time.perf_counter()
    Pipeline(cfg, out, args.skip_done).run(args.stop_after)
    report = out / "report.md"
    if report.is_file():
        print()
        print(_ne_diff_table(out))
        print(f"report:         {report}")
        print(f"plots:          {', '.join(str(p) for p in sorted(out.glob('**/*.png')))}")
        print(f"serving model:  {out / 'export'}")
        print(f"predictions:    {out / 'predictions.parquet'}")
    print(f"[pipeline] finished in {time.perf_counter() - t0:.0f}s")
    return 0


def _ne_diff_table(out: Path) -> str:
    md = out / "eval" / "eval.md"
    return md.read_text() if md.is_file() else json.dumps(json.loads((out / "eval" / "eval.json").read_text()))
