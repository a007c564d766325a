"""Evaluation flow: score runs (or read predictions) -> NE per cohort, NE_diff vs baselines -> eval.json/md/png.

The one implementation behind ``c2al-rec evaluate``, the pipeline's evaluation stage and the
experiment. Several model/baseline pairs (one per seed, paired in order) give seed-level intervals.

Example::

    result = evaluate_runs(["runs/c2al"], ["runs/base"], "data/synth", "test", out=Path("eval"))
    result["groups"]["head"]["ne_diff"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import pyarrow as pa

from c2al_rec.analysis.evaluate import evaluate_groups
from c2al_rec.analysis.report import markdown_table, plot_ne_diff
from c2al_rec.cohorts.spec import CohortSpec
from c2al_rec.data.schema import DatasetSchema, load_schema
from c2al_rec.io import atomic_write_json, atomic_write_text
from c2al_rec.runs import TrainedRun, load_run, score_split


class RunScorer:
    """Scores runs on one split of one dataset, each run once (the experiment reuses baselines).

    Args:
        data: dataset root.
        split: split to score.
        which: checkpoint of a run directory (``latest`` or ``best``).
    """

    def __init__(self, data: str | Path, split: str, which: str = "latest", batch_size: int = 4096) -> None:
        self.data, self.split, self.which, self.batch_size = str(data), split, which, batch_size
        self.schema: DatasetSchema = load_schema(data)
        self._tables: dict[str, pa.Table] = {}
        self._runs: dict[str, TrainedRun] = {}

    def run(self, path: str | Path) -> TrainedRun:
        """The run at ``path``, loaded unsharded (cached)."""
        key = str(path)
        if key not in self._runs:
            self._runs[key] = load_run(path, self.which, schema=self.schema)
        return self._runs[key]

    def __call__(self, path: str | Path) -> pa.Table:
        """The predictions table of the run at ``path`` on this split (cached)."""
        key = str(path)
        if key not in self._tables:
            self._tables[key] = score_split(self.run(path), self.data, self.split, self.batch_size, progress=False)
        return self._tables[key]


def evaluate_tables(
    models: Sequence[pa.Table],
    baselines: Optional[Sequence[pa.Table]],
    spec: CohortSpec,
    resamples: int = 1000,
    sensitive: bool = False,
    out: Optional[Path] = None,
) -> dict[str, Any]:
    """``eval.json`` of predictions tables (one per seed); with ``out``, writes eval.json, eval.md, ne_diff.png."""
    result = evaluate_groups(list(models), spec, list(baselines) if baselines else None, num_resamples=resamples)
    result["sensitive_axis"] = sensitive
    if out is not None:
        write_evaluation(result, Path(out))
    return result


def evaluate_runs(
    models: Sequence[str | Path],
    baselines: Optional[Sequence[str | Path]],
    data: str | Path,
    split: str = "test",
    spec: Optional[CohortSpec] = None,
    resamples: int = 1000,
    out: Optional[Path] = None,
    scorer: Optional[RunScorer] = None,
) -> dict[str, Any]:
    """Score each run on ``split`` and evaluate per cohort against the paired baselines.

    Args:
        models: run (or ``step_<N>``) directories, one per seed.
        baselines: the matching baseline runs, paired in order (None: no NE_diff).
        spec: cohort spec (default: the first model run's resolved spec).
        scorer: a shared ``RunScorer`` (caches scored runs); built from ``data``/``split`` when None.
    """
    scorer = scorer or RunScorer(data, split)
    if spec is None:
        spec = scorer.run(models[0]).spec
        if spec is None:
            raise ValueError(f"{models[0]} has no cohort spec: pass --cohorts cohorts.json")
    tables = [scorer(m) for m in models]
    base_tables = [scorer(b) for b in baselines] if baselines else None
    sensitive = any(a.sensitive for a in scorer.schema.axes if a.name == spec.axis)
    result = evaluate_tables(tables, base_tables, spec, resamples, sensitive)
    result["split"] = split
    result["sources"] = {"models": [str(m) for m in models], "baselines": [str(b) for b in baselines or []]}
    if out is not None:
        write_evaluation(result, Path(out))
    return result


def write_evaluation(result: dict[str, Any], out: Path) -> list[Path]:
    """``eval.json``, ``eval.md`` and ``ne_diff.png`` (when there is a baseline) into ``out``."""
    atomic_write_json(out / "eval.json", result)
    atomic_write_text(out / "eval.md", markdown_table(result, result.get("sensitive_axis", False)))
    png = plot_ne_diff(result, out / "ne_diff.png")
    return [out / "eval.json", out / "eval.md"] + ([png] if png else [])
