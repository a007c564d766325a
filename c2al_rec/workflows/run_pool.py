"""Train independent runs one after another, or several at once in child processes.

On a small CPU host two 1-rank runs side by side (1 thread each) do more work per second than one
2-rank run: there is no all-to-all or gradient all-reduce, and each process keeps its core busy.
Measured on the 2-core development machine with `launch/configs/experiment_synthetic.toml`
(1.6M rows, 781 steps): one 2-rank run 60 s; two concurrent 1-rank runs at the same global batch
71 s for both, 1.7x the runs per hour.

Each concurrent run is a fresh spawned process (no torch, thread or process-group state shared
with the parent or with an earlier run), so a run trains exactly as it would in the foreground.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from c2al_rec.config import Config, config_to_dict
from c2al_rec.config.errors import error_line


@dataclass(frozen=True)
class RunJob:
    """One training run of a workflow."""

    name: str
    """Shown in progress lines (e.g. ``c2al/seed_3``)."""
    run_dir: Path
    """The run directory; the run counts as done when it holds metrics.json."""
    cfg: Config
    """The run's config."""

    @property
    def done(self) -> bool:
        return (self.run_dir / "metrics.json").is_file()


def threads_per_run(cfg: Config, concurrent_runs: int, nproc_per_node: int) -> Config:
    """Give each rank of each concurrent run an equal share of the cores (unless the config sets it)."""
    if cfg.train.num_threads or concurrent_runs <= 1:
        return cfg
    n = max(1, (os.cpu_count() or 1) // (concurrent_runs * nproc_per_node))
    return replace(cfg, train=replace(cfg.train, num_threads=n))


def _train_in_child(cfg_dict: dict[str, Any], run_dir: str, nproc_per_node: int, log_path: str) -> float:
    """Spawned worker: train one run, its console output to ``log_path``; returns the wall time."""
    import sys

    from c2al_rec.config import load_config_dict
    from c2al_rec.train.launch import launch

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as log:
        sys.stdout = sys.stderr = log
        os.dup2(log.fileno(), 1)  # also what C++ and the elastic agent's children write
        os.dup2(log.fileno(), 2)
        t0 = time.perf_counter()
        launch(load_config_dict(cfg_dict), Path(run_dir), nproc_per_node=nproc_per_node)
        return time.perf_counter() - t0


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

    def run(self, jobs: list[RunJob]) -> dict[str, float]:
        """Train the jobs not yet done (in list order as far as workers allow); returns name -> wall seconds.

        Raises the first failure (naming the run) after the runs already started have ended.
        """
        todo = []
        for job in jobs:
            if job.done:
                print(f"[experiment] {job.name}: done, skipped", flush=True)
            else:
                todo.append(job)
        if not todo:
            return {}
        if self.concurrent_runs == 1:
            return {job.name: self._run_here(job) for job in todo}
        return self._run_concurrently(todo)

    def _log_path(self, job: RunJob) -> Path:
        return self.log_dir / f"{job.name.replace('/', '_')}.log"

    def _run_here(self, job: RunJob) -> float:
        from c2al_rec.train.launch import launch

        print(f"[experiment] training {job.name} ...", flush=True)
        t0 = time.perf_counter()
        launch(job.cfg, job.run_dir, nproc_per_node=self.nproc_per_node)
        wall = time.perf_counter() - t0
        print(f"[experiment] {job.name}: {wall:.0f}s", flush=True)
        return wall

    def _run_concurrently(self, todo: list[RunJob]) -> dict[str, float]:
        walls: dict[str, float] = {}
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.concurrent_runs, mp_context=ctx, max_tasks_per_child=1) as pool:
            futures: dict[Future, RunJob] = {}
            for job in todo:
                cfg = threads_per_run(job.cfg, self.concurrent_runs, self.nproc_per_node)
                args = (config_to_dict(cfg), str(job.run_dir), self.nproc_per_node, str(self._log_path(job)))
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
                    walls[job.name] = fut.result()
                    print(f"[experiment] {job.name}: {walls[job.name]:.0f}s ({len(walls)}/{len(todo)})", flush=True)
        return walls
