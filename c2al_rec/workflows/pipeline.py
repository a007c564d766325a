"""The whole C2AL workflow over one output directory, stage by stage (``STAGES``).

data -> baseline -> discover -> candidates -> select -> evaluate -> export -> predict; each stage
writes its outputs (``Pipeline.paths``), a failed stage stops the pipeline and leaves earlier
outputs, and ``skip_done`` skips stages whose outputs exist. ``c2al-rec pipeline --help`` lists them.

Selection: every ``[select]`` candidate (the baseline, each C2AL lambda, optionally gradsim and
aux-projection widths) trains from the baseline's seed and data order; each is scored on the valid
split against the baseline (NE per group, NE_diff with an interval over rows), the rule picks one
(``c2al_rec.workflows.selection``), and only that model is evaluated on ``pipeline.eval_split``,
exported and served. ``eval/eval.json`` is the exported model's evaluation against the baseline.

Example::

    Pipeline(load_config("launch/configs/demo.toml"), Path("runs/demo"), skip_done=True).run()
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from c2al_rec.config import SELECTION_SPLIT, Config, dump_toml
from c2al_rec.io import atomic_write_json, atomic_write_text
from c2al_rec.io.owned_dir import OwnedDir

from .selection import BASELINE, JUDGED_GROUPS, Candidate, candidate_list, choose, format_selection, score_valid

STAGES = ["data", "baseline", "discover", "candidates", "select", "evaluate", "export", "predict"]


class Pipeline:
    """The stages over one output directory.

    Args:
        cfg: run config (data, model, train... plus the [discover], [pipeline] and [select] sections).
        out: output directory.
        skip_done: skip a stage whose outputs exist.
    """

    def __init__(self, cfg: Config, out: Path, skip_done: bool = False) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.skip_done = skip_done
        self.candidates: list[Candidate] = candidate_list(cfg)
        self.paths = {
            "data": Path(cfg.data.path) / "schema.json",
            "baseline": self.out / "baseline" / "metrics.json",
            "discover": self.out / "cohorts.json",
            "candidates": self.out / self.candidate_dirs()[self.candidates[-1].name] / "metrics.json",
            "select": self.out / "selection.json",
            "evaluate": self.out / "eval" / "eval.json",
            "export": self.out / "export" / "metadata.json",
            "predict": self.out / "predictions.parquet",
        }

    def candidate_dirs(self) -> dict[str, str]:
        """Candidate name -> its run directory under ``out``. With ``pipeline.init_c2al_from_baseline`` the
        baseline candidate is ``baseline_continued`` (the baseline trained on for the C2AL runs' steps)."""
        continued = self.cfg.pipeline.init_c2al_from_baseline
        return {
            c.name: ("baseline_continued" if continued else "baseline") if c.is_baseline else c.name
            for c in self.candidates
        }

    @property
    def reference(self) -> Path:
        """The run every NE_diff is taken against: the baseline candidate's."""
        return self.out / self.candidate_dirs()[BASELINE]

    def _done(self, name: str) -> bool:
        if name == "candidates":
            return all((self.out / d / "metrics.json").is_file() for d in self.candidate_dirs().values())
        return self.paths[name].exists()

    def run(self, stop_after: str | None = None) -> dict[str, float]:
        # the directory's manifest lists every output before a stage writes it (c2al_rec.io.owned_dir)
        runs = [self.out / d for d in self.candidate_dirs().values()]
        OwnedDir.open(self.out, "pipeline", ["pipeline.toml", "report.md", *self.paths.values(), *runs])
        atomic_write_text(self.out / "pipeline.toml", dump_toml(self.cfg))
        timings: dict[str, float] = {}
        stages: dict[str, Callable[[], None]] = {name: getattr(self, f"stage_{name}") for name in STAGES}
        n = len(STAGES)
        for i, name in enumerate(STAGES, 1):
            if self.skip_done and self._done(name):
                print(f"[pipeline] {i}/{n} {name}: done already ({self.paths[name]}), skipped", flush=True)
                continue
            print(f"[pipeline] {i}/{n} {name} ...", flush=True)
            t0 = time.perf_counter()
            try:
                stages[name]()
            except (ValueError, FileNotFoundError) as e:  # bad input: one clear line from the CLI
                raise ValueError(f"pipeline stage {i}/{n} '{name}' failed: {e}") from e
            except Exception:  # a bug or a crash: keep the traceback, say which stage
                print(f"[pipeline] stage {i}/{n} '{name}' failed; earlier outputs are intact", file=sys.stderr)
                raise
            timings[name] = time.perf_counter() - t0
            print(f"[pipeline] {i}/{n} {name} finished in {timings[name]:.1f}s -> {self.paths[name]}", flush=True)
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
        from .discover import discover_cohorts, format_ranking

        outcome = discover_cohorts(self.cfg.discover, self.out / "baseline", self.cfg.data.path, self.paths["discover"])
        print(format_ranking(outcome), flush=True)

    def stage_candidates(self) -> None:
        """Train every candidate but the baseline (which is trained already, unless it is continued):
        the same seed and data order as the baseline, so the candidates differ only in their aux loss."""
        dirs = self.candidate_dirs()
        init = self.cfg.pipeline.init_c2al_from_baseline
        for cand in self.candidates:
            if cand.is_baseline and not init:
                continue
            if self.skip_done and (self.out / dirs[cand.name] / "metrics.json").is_file():
                print(f"[pipeline] candidate {cand.name}: trained already, skipped", flush=True)
                continue
            print(f"[pipeline] training candidate {cand.name} (lambda {cand.lam:g}) ...", flush=True)
            cfg = cand.config(self.cfg, str(self.paths["discover"]))
            if init:
                cfg = replace(cfg, checkpoint=replace(cfg.checkpoint, init_from=str(self.out / "baseline")))
            self._train(dirs[cand.name], cfg)

    def stage_select(self) -> None:
        """Score every candidate on the valid split and apply the rule; prints the table, writes selection.json."""
        from c2al_rec.cohorts.spec_file import load_cohort_spec

        from .evaluate import RunScorer

        spec = load_cohort_spec(self.paths["discover"])
        scorer = RunScorer(self.cfg.data.path, SELECTION_SPLIT, batch_size=16384)
        base = scorer(self.reference)
        tables = {name: scorer(self.out / d) for name, d in self.candidate_dirs().items()}
        valid = score_valid(tables, base, spec, self.cfg.pipeline.resamples)
        record = choose(valid, self.candidates, self.cfg.select.objective, self.cfg.select.force)
        record["runs"] = self.candidate_dirs()
        print(format_selection(record), flush=True)
        atomic_write_json(self.paths["select"], record)

    def selection(self) -> dict[str, Any]:
        """The select stage's record (``selection.json``)."""
        return json.loads(self.paths["select"].read_text())

    def chosen_run(self) -> Path:
        return self.out / self.candidate_dirs()[self.selection()["chosen"]]

    def stage_evaluate(self) -> None:
        from .report import write_pipeline_report

        runs = {name: self.out / d for name, d in self.candidate_dirs().items()}
        write_pipeline_report(
            self.cfg, self.out, self.paths["discover"], self.chosen_run(), self.reference, self.selection(), runs
        )

    def card_selection(self) -> dict[str, Any]:
        """``metadata.json`` ``selection``: the record with the chosen model's figures on the eval split."""
        record = self.selection()
        groups = json.loads(self.paths["evaluate"].read_text())["groups"]
        record["test"] = {
            g: {k: (groups.get(g) or {}).get(k) for k in ("ne", "ne_diff", "ci95")} for g in JUDGED_GROUPS
        }
        record["test_split"] = self.cfg.pipeline.eval_split
        return record

    def stage_export(self) -> None:
        from c2al_rec.export.exporter import export_checkpoint

        export_checkpoint(
            self.cfg.export,
            self.chosen_run(),
            self.out / "export",
            data=self.cfg.data.path,
            split=self.cfg.pipeline.eval_split,
            selection=self.card_selection(),
        )

    def stage_predict(self) -> None:
        from c2al_rec.serve.artifact import load_exported
        from c2al_rec.serve.predictor import input_files, predict_files

        model = load_exported(self.out / "export")
        predict_files(model, input_files(self.cfg.data.path, self.cfg.pipeline.eval_split), self.paths["predict"])
