"""The whole C2AL workflow over one output directory, stage by stage (``STAGES``).

data -> baseline -> discover -> c2al -> evaluate -> export -> predict; each stage writes one
output (``Pipeline.paths``), a failed stage stops the pipeline and leaves earlier outputs, and
``skip_done`` skips stages whose output exists. ``c2al-rec pipeline --help`` lists the outputs.

Example::

    Pipeline(load_config("launch/configs/demo.toml"), Path("runs/demo"), skip_done=True).run()
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from c2al_rec.config import Config, dump_toml
from c2al_rec.io import atomic_write_text

STAGES = ["data", "baseline", "discover", "c2al", "evaluate", "export", "predict"]


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
        atomic_write_text(self.out / "pipeline.toml", dump_toml(self.cfg))
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
        from c2al_rec.data.sources import ensure_dataset

        ensure_dataset(self.cfg.data)

    def _train(self, name: str, cfg: Config) -> None:
        from c2al_rec.train.launch import launch

        # The pipeline owns its output directory: with skip_done an interrupted stage continues
        # from its newest checkpoint; without it the stage is redone from scratch.
        cfg = replace(cfg, checkpoint=replace(cfg.checkpoint, resume="auto" if self.skip_done else "never"))
        launch(cfg, self.out / name, nproc_per_node=self.cfg.pipeline.nproc_per_node, overwrite=not self.skip_done)

    def stage_baseline(self) -> None:
        from .discover import check_discover_axes

        check_discover_axes(self.cfg.discover.axes, self.cfg.data.path)  # fail before training, not after
        # The baseline keeps the configured spec (if any) for per-cohort reporting, with no aux loss.
        cohorts = replace(self.cfg.cohorts, enabled=False)
        self._train("baseline", replace(self.cfg, cohorts=cohorts))

    def stage_discover(self) -> None:
        from .discover import DiscoverOptions, discover_cohorts, format_ranking

        opts = DiscoverOptions.from_config(
            self.cfg.discover, self.out / "baseline", self.cfg.data.path, self.paths["discover"]
        )
        print(format_ranking(discover_cohorts(opts)), flush=True)

    def stage_c2al(self) -> None:
        cohorts = replace(self.cfg.cohorts, enabled=True, spec=str(self.paths["discover"]))
        checkpoint = self.cfg.checkpoint
        if self.cfg.pipeline.init_c2al_from_baseline:
            checkpoint = replace(checkpoint, init_from=str(self.out / "baseline"))
        self._train("c2al", replace(self.cfg, cohorts=cohorts, checkpoint=checkpoint))

    def stage_evaluate(self) -> None:
        from .report import write_pipeline_report

        write_pipeline_report(self.cfg, self.out, self.paths["discover"])

    def stage_export(self) -> None:
        from c2al_rec.export.exporter import ExportOptions, export_checkpoint

        e = self.cfg.export
        export_checkpoint(
            ExportOptions(
                checkpoint=self.out / "c2al",
                out=self.out / "export",
                quantize=e.quantize,
                data=self.cfg.data.path,
                split=self.cfg.pipeline.eval_split,
                parity_rows=e.parity_rows,
                max_abs_diff=e.parity_max_abs_diff,
                ne_tolerance=e.parity_ne_tolerance,
                pt2=e.pt2,
            )
        )

    def stage_predict(self) -> None:
        from c2al_rec.serve.artifact import load_exported
        from c2al_rec.serve.predictor import input_files, predict_files

        model = load_exported(self.out / "export")
        predict_files(model, input_files(self.cfg.data.path, self.cfg.pipeline.eval_split), self.paths["predict"])
