"""Train independent runs one after another, or several at once in child processes.

On a small CPU host two 1-rank runs side by side (1 thread each) do more work per second than one
2-rank run: there is no all-to-all or gradient all-reduce, and each process keeps its core busy.
Measured on the 2-core development machine with `launch/configs/experiment_synthetic.toml`
(1.6M rows, 781 steps): one 2-rank run 60 s; two concurrent 1-rank runs at the same global batch
71 s for both, 1.7x the runs per hour.

Each concurrent run is a fresh spawned process (no torch, thread or process-group state shared
with the parent or with an earlier run), so a run trains exactly as it would in the foreground.

A job may also ask for its run to be scored (``ScoreSpec``): the same worker scores it on each split
as soon as its training ends (inference mode, large batches), so scoring overlaps the training of
other runs instead of queueing behind all of them. Predictions go to ``<ScoreSpec.out_dir>/<split>.parquet``
(column ``prob`` only, in the split's file order; the label and axis columns are read once by the caller).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from c2al_rec.config import Config, config_to_dict
from c2al_rec.config.errors import error_line


@dataclass(frozen=True)
class ScoreSpec:
    """Which splits to score a finished run on, and where the predictions go."""

    data: str
    """Dataset root."""
    splits: tuple[str, ...]
    """Splits to score, e.g. ``("valid", "test")``."""
    out_dir: Path
    """Writes ``<split>.parquet`` (a float32 ``prob`` column) per split, and ``attention.json`` when asked."""
    attention_split: Optional[str] = None
    """Also write FM attention statistics on this split (None: not)."""
    batch_size: int = 16384
    """Rows per scoring batch (no gradients are kept, so a large batch is cheap)."""

    def path(self, split: str) -> Path:
        return self.out_dir / f"{split}.parquet"

    @property
    def done(self) -> bool:
        files = [self.path(s) for s in self.splits]
        if self.attention_split is not None:
            files.append(self.out_dir / "attention.json")
        return all(f.is_file() for f in files)


def score_run(run_dir: Path, spec: ScoreSpec, num_threads: int = 0) -> None:
    """Score the newest checkpoint of ``run_dir`` on ``spec.splits`` (and its attention), writing ``spec``'s files."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from c2al_rec.io import atomic_write_json
    from c2al_rec.runs import load_run, score_split

    if num_threads:
        torch.set_num_threads(num_threads)
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        run = load_run(run_dir, "latest")
        for split in spec.splits:
            if spec.path(split).is_file():
                continue
            prob = score_split(run, spec.data, split, spec.batch_size, progress=False).column("prob")
            tmp = spec.path(split).with_suffix(".parquet.tmp")
            pq.write_table(pa.table({"prob": prob}), tmp)
            os.replace(tmp, spec.path(split))
        if spec.attention_split is not None and not (spec.out_dir / "attention.json").is_file():
            from c2al_rec.analysis.attention import attention_stats_for_checkpoint

            stats = attention_stats_for_checkpoint(run, spec.data, spec.attention_split)
            atomic_write_json(spec.out_dir / "attention.json", stats)


@dataclass(frozen=True)
class RunJob:
    """One training run of a workflow."""

    name: str
    """Shown in progress lines (e.g. ``c2al/seed_3``)."""
    run_dir: Path
    """The run directory; the run counts as done when it holds metrics.json."""
    cfg: Config
    """The run's config."""
    score: Optional[ScoreSpec] = None
    """Score the run right after training (None: not)."""

    @property
    def trained(self) -> bool:
        return (self.run_dir / "metrics.json").is_file()

    @property
    def done(self) -> bool:
        return self.trained and (self.score is None or self.score.done)


def threads_per_run(cfg: Config, concurrent_runs: int, nproc_per_node: int) -> Config:
    """Give each rank of each concurrent run an equal share of the cores (unless the config sets it)."""
    if cfg.train.num_threads or concurrent_runs <= 1:
        return cfg
    n = max(1, (os.cpu_count() or 1) // (concurrent_runs * nproc_per_node))
    return replace(cfg, train=replace(cfg.train, num_threads=n))


def _train_in_child(
    cfg_dict: dict[str, Any], run_dir: str, nproc_per_node: int, log_path: str, score: Optional[ScoreSpec]
) -> tuple[float, float, float]:
    """Spawned worker: train one run (unless trained already) and score it, its console output to ``log_path``.

    Returns what ``_train_and_score`` returns.
    """
    import sys

    from c2al_rec.config import load_config_dict

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as log:
        sys.stdout = sys.stderr = log
        os.dup2(log.fileno(), 1)  # also what C++ and the elastic agent's children write
        os.dup2(log.fileno(), 2)
        cfg = load_config_dict(cfg_dict)
        return _train_and_score(cfg, Path(run_dir), nproc_per_node, score)


def _train_and_score(
    cfg: Config, run_dir: Path, nproc_per_node: int, score: Optional[ScoreSpec]
) -> tuple[float, float, float]:
    """Train (unless trained already), then score. Returns (training seconds, 0 when trained already;
    scoring seconds; ``time.time()`` when training ended, comparable across processes)."""
    from c2al_rec.train.launch import launch

    t0 = time.perf_counter()
    if not (run_dir / "metrics.json").is_file():
        launch(cfg, run_dir, nproc_per_node=nproc_per_node)
    t1, trained_at = time.perf_counter(), time.time()
    if score is not None:
        score_run(run_dir, score, cfg.train.num_threads)
    return t1 - t0, time.perf_counter() - t1, trained_at


class RunPool:
    """Trains :class:`RunJob` s, skipping those already done.

    Args:
        nproc_per_node: local ranks of every run.
        concurrent_runs: runs trained at once (1: in this process, in order).
        log_dir: where the console output of concurrent runs goes (``<name>.log``; the run's own
            train.log is in its run directory either way).

    Example::

        pool = RunPool(nproc_per_node=1, concurrent_runs=2, log_dir=out / "logs")
        walls = pool.run([RunJob("baseline/seed_0", out / "baseline" / "seed_0", cfg)])
    """

    def __init__(self, nproc_per_node: int, concurrent_runs: int, log_dir: Path) -> None:
        if concurrent_runs < 1:
            raise ValueError(f"concurrent_runs must be >= 1, got {concurrent_runs}")
        self.nproc_per_node, self.concurrent_runs, self.log_dir = nproc_per_node, concurrent_runs, Path(log_dir)
        self.training_done_at: float = 0.0
        """``time.time()`` when the last run that this pool trained finished training (0: none)."""
        self.score_wall: dict[str, float] = {}
        """Job name -> seconds its scoring took (jobs scored by this pool)."""

    def run(self, jobs: list[RunJob], on_done: Optional[Callable[[RunJob], None]] = None) -> dict[str, float]:
        """Train (and score) the jobs not yet done, in list order as far as workers allow.

        Args:
            jobs: the runs.
            on_done: called in this process with each job as soon as it is trained and scored (also for
                jobs done already), e.g. to evaluate it while other runs still train.

        Returns:
            name -> training wall seconds of the runs trained now.

        Raises the first failure (naming the run) after the runs already started have ended.
        """
        todo = []
        for job in jobs:
            if job.done:
                print(f"[experiment] {job.name}: done, skipped", flush=True)
                if on_done is not None:
                    on_done(job)
            else:
                todo.append(job)
        if not todo:
            return {}
        if self.concurrent_runs == 1:
            walls = {}
            for job in todo:
                walls[job.name] = self._run_here(job)
                if on_done is not None:
                    on_done(job)
            return {k: v for k, v in walls.items() if v > 0}
        return self._run_concurrently(todo, on_done)

    def _log_path(self, job: RunJob) -> Path:
        return self.log_dir / f"{job.name.replace('/', '_')}.log"

    def _finished(self, job: RunJob, train_s: float, score_s: float, trained_at: float) -> None:
        if train_s > 0:
            self.training_done_at = max(self.training_done_at, trained_at)
        if job.score is not None:
            self.score_wall[job.name] = score_s

    def _run_here(self, job: RunJob) -> float:
        print(f"[experiment] {'training' if not job.trained else 'scoring'} {job.name} ...", flush=True)
        train_s, score_s, trained_at = _train_and_score(job.cfg, job.run_dir, self.nproc_per_node, job.score)
        self._finished(job, train_s, score_s, trained_at)
        print(f"[experiment] {job.name}: {train_s:.0f}s training, {score_s:.0f}s scoring", flush=True)
        return train_s

    def _run_concurrently(self, todo: list[RunJob], on_done: Optional[Callable[[RunJob], None]]) -> dict[str, float]:
        walls: dict[str, float] = {}
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.concurrent_runs, mp_context=ctx, max_tasks_per_child=1) as pool:
            futures: dict[Future, RunJob] = {}
            for job in todo:
                cfg = threads_per_run(job.cfg, self.concurrent_runs, self.nproc_per_node)
                log = str(self._log_path(job))
                args = (config_to_dict(cfg), str(job.run_dir), self.nproc_per_node, log, job.score)
                futures[pool.submit(_train_in_child, *args)] = job
            print(
                f"[experiment] training {len(todo)} runs, {self.concurrent_runs} at a time (logs in {self.log_dir})",
                flush=True,
            )
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    job = futures[fut]
                    error = fut.exception()
                    if error is not None:
                        for other in pending:
                            other.cancel()
                        wait(pending)
                        log = self._log_path(job)
                        line = error_line(error)  # a user error (a full disk, bad data) stays one line
                        if line is not None:
                            message = f"training {job.name} failed: {line} (its console output: {log})"
                            raise ValueError(message) from error
                        raise RuntimeError(f"training {job.name} failed (its console output: {log})") from error
                    train_s, score_s, trained_at = fut.result()
                    self._finished(job, train_s, score_s, trained_at)
                    walls[job.name] = train_s
                    print(
                        f"[experiment] {job.name}: {train_s:.0f}s training, {score_s:.0f}s scoring "
                        f"({len(walls)}/{len(todo)})",
                        flush=True,
                    )
                    if on_done is not None:
                        on_done(job)
        return {k: v for k, v in walls.items() if v > 0}
