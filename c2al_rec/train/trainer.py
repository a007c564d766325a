"""The Trainer: owns build, train_step, evaluate, state_dict / load_state_dict and close.

One instance per rank. ``build()`` reads the schema and the cohort spec, builds the model on the
meta device, attaches the fused sparse optimizer, shards with DMP, and restores a checkpoint
when resuming; ``train()`` runs ``TrainPipelineSparseDist.progress`` step by step with metrics,
validation and checkpoints; ``close()`` writes ``metrics.json`` and tears down.

What a run records besides checkpoints (rank 0): the console lines, also in ``train.log`` with
the resolved config path, the data fingerprint and the final metrics; TensorBoard scalars every
``train.log_every`` steps (``train/loss_<primary|head|tail|total>`` averaged over the steps since
the last log, ``train/lr_dense``, ``train/lr_sparse``, ``train/grad_norm_dense`` of the step
logged, ``train/samples_per_s``, and torchrec's metrics as ``train/<metric>_window`` (the last
``log_every`` steps, at least 10 updates) and ``train/<metric>_lifetime`` (since the run or resume
started; with ``train.metrics_every`` > 1 both are estimates from every Nth step), for the
primary head, each aux head and each cohort) and at each validation (``valid/...``); the
flattened config against the final validation NE as TensorBoard hparams; the same to MLflow with
``train.track = "mlflow"``.

Example::

    ctx = init_distributed()
    trainer = Trainer(load_config("launch/configs/smoke.toml"), Path("runs/smoke"), ctx)
    trainer.build()
    metrics = trainer.train()
    trainer.close()
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.optim.clipping import GradientClipping, GradientClippingOptimizer
from torchrec.optim.keyed import CombinedOptimizer

from c2al_rec.cohorts.random_control import randomize_spec
from c2al_rec.cohorts.spec import CohortSpec, resolve_quantiles
from c2al_rec.cohorts.spec_file import load_cohort_spec
from c2al_rec.config import Config, config_to_dict
from c2al_rec.config.errors import unwrap_checkpoint_failure
from c2al_rec.data.dataset import Dataset
from c2al_rec.data.reader import ParquetReader
from c2al_rec.data.schema import DatasetSchema, load_schema
from c2al_rec.distributed import checkpoint as ckpt_io
from c2al_rec.distributed.backend import DistContext, set_cpu_threads
from c2al_rec.distributed.sharding import apply_sparse_optimizer, make_dense_optimizer, shard_model
from c2al_rec.io import atomic_write_json
from c2al_rec.io.owned_dir import open_for_append
from c2al_rec.modules.model import build_run_model
from c2al_rec.runs.provenance import check_fingerprint, write_run_files

from .metrics import TrainMetrics
from .schedule import lr_factor
from .task import CohortTarget, TrainTask
from .tracking import RunLog, RunTracker

logger = logging.getLogger("c2al_rec.train")


class Trainer:
    """Distributed C2AL / baseline trainer for one rank.

    Args:
        cfg: the resolved run config.
        run_dir: the run directory (``c2al-rec train --help`` lists its files).
        ctx: this rank's distributed context (``init_distributed()``).
    """

    def __init__(self, cfg: Config, run_dir: Path, ctx: DistContext) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ctx = ctx
        self.step = 0  # optimizer steps done
        self.epoch = 0
        self.batches_in_epoch = 0  # GLOBAL batches of this epoch consumed by optimizer steps
        self.samples = 0
        self.best: Optional[dict[str, Any]] = None
        self.train_seconds = 0.0
        self.last_eval: Optional[dict[str, Any]] = None
        self.tracker: Optional[RunTracker] = None
        self.run_log: Optional[RunLog] = None
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_steps = 0

    # ------------------------------------------------------------------------------- build
    def build(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        set_cpu_threads(ctx, cfg.train.num_threads)
        self.data_root = Path(cfg.data.path)
        self.schema: DatasetSchema = load_schema(self.data_root)
        self.fingerprint = Dataset(self.schema).fingerprint()
        self.resume_from = self._find_resume_checkpoint()
        self.spec = self._load_cohort_spec()
        target = None
        if self.spec is not None:
            target = CohortTarget(self.spec.axis, self.spec.head_index, self.spec.tail_index, cfg.cohorts)
        torch.manual_seed(cfg.train.seed)
        model = build_run_model(cfg, self.schema, torch.device("meta"))
        compile_dense = cfg.train.compile_dense == "on" or (
            cfg.train.compile_dense == "auto" and ctx.device.type == "cuda"
        )
        task = TrainTask(model, target, torch.bfloat16 if cfg.train.bf16 else None, ctx.device.type, compile_dense)
        self.task = task  # DMP shards its tables in place; the flags below reach the live module
        apply_sparse_optimizer(task, cfg.train.sparse_optimizer, cfg.train.sparse_lr, ctx.device)
        self.dmp = shard_model(task, ctx, cfg.data.batch_size)
        self.dense_optimizer = make_dense_optimizer(
            self.dmp, cfg.train.dense_optimizer, cfg.train.dense_lr, cfg.train.weight_decay
        )
        dense: Any = self.dense_optimizer
        self.clipper: Optional[GradientClippingOptimizer] = None
        if cfg.train.grad_clip > 0:
            dense = GradientClippingOptimizer(dense, clipping=GradientClipping.NORM, max_gradient=cfg.train.grad_clip)
            self.clipper = dense  # it computes the (pre-clip) dense gradient norm every step anyway
        self.optimizer = CombinedOptimizer([("sparse", self.dmp.fused_optimizer), ("dense", dense)])
        self.pipeline = TrainPipelineSparseDist(self.dmp, self.optimizer, ctx.device, execute_all_batches=True)
        # the window spans the last log_every steps (at least 10 updates); updates come every metrics_every steps
        self.metrics = self._new_metrics(window_batches=max(10, -(-cfg.train.log_every // cfg.train.metrics_every)))
        self.loss_check = FiniteLossCheck(
            ["primary", "head", "tail"] if cfg.cohorts.enabled else ["primary"],
            every=cfg.train.log_every or 100,
            device=ctx.device,
        )
        self.total_steps = self._planned_steps()
        # Restore first: a checkpoint that cannot be loaded leaves --out as it was (no run files in it)
        if self.resume_from is not None:
            restored = self._restore(self.resume_from)
        elif cfg.checkpoint.init_from:
            restored = self._init_from(cfg.checkpoint.init_from)
        else:
            restored = None
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_run_files(self.run_dir, cfg, self.fingerprint, ctx.world_size)
            if self.spec is not None:
                self.spec.save(self.run_dir / "cohorts.json")
            self.run_log = RunLog(self.run_dir)
            self.run_log.line(f"config: {(self.run_dir / 'config.toml').resolve()} (resolved)")
            self.run_log.line(f"data: {self.data_root} {_fingerprint_summary(self.fingerprint)}")
            self.run_log.line(f"ranks: {ctx.world_size} ({ctx.device.type}); planned steps: {self.total_steps}")
            self.tracker = RunTracker(self.run_dir, cfg, resume=self.resume_from is not None)
        if restored is not None:
            self._log(restored)

    def _find_resume_checkpoint(self) -> Optional[Path]:
        resume = self.cfg.checkpoint.resume
        if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0" and self._step_dirs():
            resume = "auto"  # a restarted attempt continues this run's own checkpoints, whatever it started from
        if resume != "auto":
            self._refuse_later_checkpoints(resume)
        if resume == "never":
            return None
        if resume == "auto":
            # newest intact checkpoint: damaged newer ones are skipped with a logged warning
            return ckpt_io.latest_checkpoint(self.run_dir)
        return ckpt_io.resolve_checkpoint(resume)

    def _step_dirs(self) -> list[tuple[int, Path]]:
        root = ckpt_io.checkpoint_dir(self.run_dir)
        if not root.is_dir():
            return []
        return sorted((int(m.group(1)), p) for p in root.iterdir() if (m := ckpt_io.STEP_RE.match(p.name)))

    def _refuse_later_checkpoints(self, resume: str) -> None:
        """Checkpoints past the step this run starts from belong to another run (or a future this run
        abandons): its own checkpoints would be pruned in their favour and ``latest`` would name them."""
        start = 0
        if resume != "never":
            m = ckpt_io.STEP_RE.match(Path(resume).name)
            start = int(m.group(1)) if m else ckpt_io.read_train_state(ckpt_io.resolve_checkpoint(resume))["step"]
        later = [p.name for step, p in self._step_dirs() if step > start]
        if later:
            raise ValueError(
                f"run directory {self.run_dir} holds checkpoints past step {start} ({', '.join(later)}) that this run "
                "would mix with: resume with checkpoint.resume=auto, clear it with --overwrite, or choose another --out"
            )

    def _load_cohort_spec(self) -> Optional[CohortSpec]:
        """The run's cohort spec, quantiles resolved on the train split (reused as-is on resume)."""
        cfg = self.cfg.cohorts
        resolved_path = self.run_dir / "cohorts.json"
        if self.resume_from is not None and resolved_path.is_file():
            return load_cohort_spec(resolved_path)
        if not cfg.spec:
            return None
        spec = load_cohort_spec(cfg.spec)
        axis_names = [a.name for a in self.schema.axes]
        if spec.axis not in axis_names:
            raise ValueError(
                f"cohort spec {cfg.spec}: axis '{spec.axis}' is not an axis of dataset {self.data_root} "
                f"(schema.json axes: {axis_names})"
            )
        if not spec.resolved:
            table = Dataset(self.schema).read_columns(self.cfg.data.train_split, [spec.axis, self.schema.label])
            values = table.column(spec.axis).to_numpy(zero_copy_only=False).astype(np.float64)
            labels = table.column(self.schema.label).to_numpy(zero_copy_only=False)
            spec = resolve_quantiles(spec, values, labels)
        if cfg.random_control:
            column = Dataset(self.schema).read_columns(self.cfg.data.train_split, [spec.axis]).column(spec.axis)
            spec = randomize_spec(spec, column, seed=self.cfg.train.seed)
        return spec

    def _new_metrics(self, window_batches: int) -> TrainMetrics:
        return TrainMetrics(
            world_size=self.ctx.world_size,
            rank=self.ctx.rank,
            batch_size=self.cfg.data.batch_size,
            aux=self.cfg.cohorts.enabled,
            num_segments=len(self.spec.cohorts) if self.spec is not None else 0,
            window_batches=window_batches,
        )

    def _reader(self, split: str, *, train: bool, epoch: int = 0, start_batch: int = 0) -> ParquetReader:
        cohort_fns = {self.spec.axis: self.spec.assign} if self.spec is not None else {}
        return ParquetReader(
            self.data_root,
            self.schema,
            split,
            self.cfg.data.batch_size,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
            seed=self.cfg.train.seed,
            epoch=epoch,
            shuffle=train,
            shuffle_buffer=self.cfg.data.shuffle_buffer,
            drop_last=True,
            start_batch=start_batch,
            cohort_fns=cohort_fns,
        )

    def _planned_steps(self) -> int:
        per_epoch = len(self._reader(self.cfg.data.train_split, train=True))
        total = per_epoch * self.cfg.train.epochs
        if self.cfg.train.max_steps:
            total = min(total, self.cfg.train.max_steps)
        if total == 0:
            raise ValueError(
                f"data.path {self.data_root}: the train split has fewer rows than one global batch "
                f"({self.cfg.data.batch_size} x {self.ctx.world_size} ranks)"
            )
        return total

    # ------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """DCP-saveable state: the sharded model and both optimizers."""
        return {"model": self.dmp.state_dict(), "optim": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dmp.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])

    def train_state(self) -> dict[str, Any]:
        """The small JSON part of a checkpoint: progress, data position, provenance."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "samples": self.samples,
            "world_size": self.ctx.world_size,
            "seed": self.cfg.train.seed,
            "best": self.best,
            "fingerprint": self.fingerprint,
            "schema": self.schema.to_dict(),
            "config": config_to_dict(self.cfg),
            "cohort_spec": self.spec.to_json() if self.spec is not None else None,
            "train_seconds": self.train_seconds,
        }

    def _restore(self, ckpt: Path) -> str:
        """Load ``ckpt`` (model, optimizers, RNG, progress); returns the line to log."""
        state_json = ckpt_io.read_train_state(ckpt)
        check_fingerprint(state_json["fingerprint"], self.fingerprint, self.cfg.checkpoint.force, ckpt)
        # Adam-style state is created lazily at the first step; without it the load target has no
        # optimizer-state keys and DCP would silently restore nothing into the dense optimizer.
        self.dense_optimizer.init_state()
        state = self.state_dict()
        ckpt_io.load_checkpoint(ckpt, state)
        self.load_state_dict(state)
        rng = ckpt_io.load_rng(ckpt, self.ctx.rank)
        if rng is not None:
            torch.set_rng_state(rng)
        self.step = state_json["step"]
        self.epoch = state_json["epoch"]
        self.batches_in_epoch = state_json["batches_in_epoch"]
        self.samples = state_json["samples"]
        self.best = state_json.get("best")
        self.train_seconds = state_json.get("train_seconds", 0.0)
        return (
            f"resumed from {ckpt} (saved at {state_json['world_size']} ranks, now {self.ctx.world_size}): "
            f"step {self.step}, epoch {self.epoch}, global batch {self.batches_in_epoch}"
        )

    def _init_from(self, source: str) -> str:
        """Start from another run's model weights (not its optimizer); aux heads start fresh. Returns
        the line to log."""
        ckpt = ckpt_io.resolve_checkpoint(source)
        model_state = {k: v for k, v in self.dmp.state_dict().items() if ".aux_heads." not in k}
        ckpt_io.load_checkpoint(ckpt, {"model": model_state})
        self.dmp.load_state_dict(model_state, strict=False)
        return f"initialised model weights from {ckpt}"

    def save_checkpoint(self) -> Path:
        protect = self.best["checkpoint"] if self.best else None
        try:
            path = ckpt_io.save_checkpoint(
                self.run_dir, self.step, self.state_dict(), self.train_state(), self.cfg.checkpoint.keep, protect
            )
        except BaseException as e:  # DCP gathers the ranks' write errors into a (Base) CheckpointException
            error = _checkpoint_write_error(e, ckpt_io.checkpoint_dir(self.run_dir), self.step)
            if error is e:
                raise
            raise error from None
        if self.ctx.is_main:
            self._log(f"checkpoint {path} ({ckpt_io.directory_size(path) / 2**20:.1f} MiB)")
        return path

    # ------------------------------------------------------------------------------- steps
    def _set_lr(self) -> None:
        factor = lr_factor(self.step, self.cfg.train.warmup_steps, self.cfg.train.decay, self.total_steps)
        for group in self.dense_optimizer.param_groups:
            group["lr"] = self.cfg.train.dense_lr * factor

    def train_step(self, batches: Iterator[Any]) -> dict[str, torch.Tensor]:
        """One optimizer step through the pipeline; raises StopIteration at the end of the epoch."""
        self._set_lr()
        every = self.cfg.train.diagnostics_every
        self.task.diagnose = bool(every) and self.cfg.cohorts.enabled and (self.step + 1) % every == 0
        try:
            out = self.pipeline.progress(batches)
        finally:
            self.task.diagnose = False
        self.step += 1
        if self.task.last_diagnostics is not None:
            self._write_diagnostics(self.task.last_diagnostics)
            self.task.last_diagnostics = None
        self.batches_in_epoch += self.ctx.world_size
        self.samples += self.cfg.data.batch_size * self.ctx.world_size
        if self.step % self.cfg.train.metrics_every == 0:  # the same steps on every rank: compute is collective
            self._update_metrics(self.metrics, out)
        self.loss_check.record(self.step, out)
        for k, v in out.items():  # summed on the device; one host sync per log line
            if k.startswith("loss_"):
                self._loss_sums[k] = self._loss_sums[k] + v if k in self._loss_sums else v.clone()
        self._loss_steps += 1
        return out

    def _write_diagnostics(self, diagnostics: dict[str, Any]) -> None:
        """Append this step's gradient / attention diagnostics (rank 0's batch) to diagnostics.jsonl."""
        if self.ctx.is_main:
            path = self.run_dir / "diagnostics.jsonl"
            try:
                with open_for_append(path) as f:
                    f.write(json.dumps({"step": self.step, **diagnostics}) + "\n")
            except OSError as e:  # a failed write (a full disk) names no file
                e.filename = e.filename or str(path)
                raise

    def _update_metrics(self, metrics: TrainMetrics, out: dict[str, torch.Tensor]) -> None:
        logits = {k[len("logit_") :]: v for k, v in out.items() if k.startswith("logit_")}
        aux = {t: out[f"{t}_label"] for t in ("head", "tail")} if self.cfg.cohorts.enabled else None
        metrics.update(logits, out["labels"], out["weights"], aux, out.get("segment"))

    def _done(self) -> bool:
        return self.step >= self.total_steps or self.epoch >= self.cfg.train.epochs

    def train(self) -> dict[str, Any]:
        """Run until max_steps / epochs; returns the final metrics (also in metrics.json)."""
        cfg = self.cfg.train
        progress = _Progress(self.total_steps, self.step, enabled=self.ctx.is_main)
        window_start, window_samples = time.perf_counter(), 0
        while not self._done():
            reader = self._reader(
                self.cfg.data.train_split, train=True, epoch=self.epoch, start_batch=self.batches_in_epoch
            )
            if self.ctx.is_main and reader.dropped_rows:
                self._log(f"epoch {self.epoch}: dropping the last incomplete round ({reader.dropped_rows} rows)")
            batches = iter(reader)
            while not self._done():
                t0 = time.perf_counter()
                try:
                    out = self.train_step(batches)
                except StopIteration:
                    self.epoch += 1
                    self.batches_in_epoch = 0
                    break
                self.train_seconds += time.perf_counter() - t0
                _maybe_inject_fault(self.step, self.ctx.rank)
                window_samples += self.cfg.data.batch_size * self.ctx.world_size
                progress.update(self.step, out["loss_primary"])
                if self.loss_check.full():
                    self.loss_check.check()
                if cfg.log_every and self.step % cfg.log_every == 0:
                    rate = window_samples / max(1e-9, time.perf_counter() - window_start)
                    self._log_train(rate, progress)
                    window_start, window_samples = time.perf_counter(), 0
                evaluated = False
                if cfg.eval_every and self.step % cfg.eval_every == 0 and not self._done():
                    self.evaluate()
                    evaluated = True
                every = self.cfg.checkpoint.every_steps
                if (every and self.step % every == 0 and not self._done()) or evaluated:
                    self._checkpoint_and_mark_best()
                    window_start, window_samples = time.perf_counter(), 0  # samples/s counts training only
            self._reset_pipeline()
        progress.close()
        self.loss_check.check()  # before validation: a diverged run fails naming the step, not the NE
        self.evaluate()
        self._checkpoint_and_mark_best()
        self._check_final_validation()
        return self.final_metrics()

    def _check_dense_parameters(self) -> None:
        """The dense weights are finite (a finite loss can still take an overflowing step)."""
        params = list(self.dense_optimizer.params.values())
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            raise NonFiniteLossError(
                f"training diverged: the dense parameters hold nan/inf after step {self.step} (the loss was still "
                "finite); lower train.dense_lr or set train.grad_clip. No checkpoint was written for this step"
            )

    def _check_final_validation(self) -> None:
        """A run whose final validation NE is nan / inf does not end as a success (no metrics.json)."""
        assert self.last_eval is not None
        if not self.ctx.is_main:
            return  # torchrec's metrics are computed on rank 0 only
        ne = self.last_eval["primary"].get("ne")
        if ne is None or not math.isfinite(ne):
            raise ValueError(
                f"validation at step {self.step} on split '{self.cfg.data.valid_split}': primary NE is {ne} (does the "
                "split hold both labels?); the checkpoint was kept, metrics.json was not written"
            )

    def _reset_pipeline(self) -> None:
        """Drop read-ahead batches (the next epoch / resume starts from the consumed position)."""
        self.pipeline.reset()

    def _checkpoint_and_mark_best(self) -> None:
        self.loss_check.check()  # never checkpoint the weights a non-finite loss has updated
        self._check_dense_parameters()
        path = self.save_checkpoint()
        ne = (self.last_eval or {}).get("primary", {}).get("ne")
        if ne is not None and not math.isfinite(ne):
            ne = None  # a nan / inf validation NE is never the best
        if self.last_eval is not None and self.last_eval.get("step") == self.step and ne is not None:
            if self.best is None or ne < self.best["ne"]:
                self.best = {"checkpoint": path.name, "ne": ne, "step": self.step}
                if self.ctx.is_main:
                    ckpt_io.write_best_marker(self.run_dir, path, ne, self.step)
                    # the previous best may now be outside the newest K: prune again
                    ckpt_io.prune_checkpoints(self.run_dir, self.cfg.checkpoint.keep, path.name)

    # ------------------------------------------------------------------------------- eval
    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Validate on the valid split (all ranks, equal batch counts); returns metrics."""
        self.pipeline.detach()
        self.dmp.eval()
        metrics = self._new_metrics(window_batches=10**6)
        num_cohorts = len(self.spec.cohorts) if self.spec is not None else 0
        counts = torch.zeros(3, num_cohorts + 1, dtype=torch.float64)  # rows, positives, weight per cohort
        reader = self._reader(self.cfg.data.valid_split, train=False)
        for i, batch in enumerate(reader):
            if self.cfg.train.eval_batches and i >= self.cfg.train.eval_batches:
                break
            _, out = self.dmp(batch.to(self.ctx.device))
            self._update_metrics(metrics, out)
            if "segment" in out:
                seg = out["segment"].cpu()
                seg = torch.where(seg < 0, num_cohorts, seg)
                counts[0].index_add_(0, seg, torch.ones_like(seg, dtype=torch.float64))
                counts[1].index_add_(0, seg, out["labels"].cpu().double())
        result = metrics.compute()
        if dist.is_initialized():
            dist.all_reduce(counts)
        if self.spec is not None:
            segs = result.pop("segments")
            result["cohorts"] = {
                self.spec.axis: {
                    c.name: {
                        "ne": segs[i],
                        "rows": int(counts[0, i]),
                        "positive_rate": float(counts[1, i] / counts[0, i]) if counts[0, i] else None,
                    }
                    for i, c in enumerate(self.spec.cohorts)
                }
            }
        result["step"] = self.step
        self.last_eval = result
        self.dmp.train()
        if self.ctx.is_main:
            self._log(f"validation at step {self.step}: " + _fmt(result["primary"]))
            if self.tracker is not None:
                scalars = {f"valid/{k}": v for k, v in result["primary"].items()}
                scalars.update({f"valid/{t}_ne": v["ne"] for t, v in result.get("aux", {}).items()})
                for axis, cohorts in result.get("cohorts", {}).items():
                    scalars.update({f"valid/cohort_ne/{axis}:{name}": c["ne"] for name, c in cohorts.items()})
                self.tracker.scalars(scalars, self.step)
        return result

    def final_metrics(self) -> dict[str, Any]:
        """metrics.json content from the last validation and throughput.

        Keys: ``primary`` (ne, calibration, auc), ``aux`` (head / tail ne), ``cohorts`` (per axis and
        cohort: ne, rows, positive_rate), ``steps``, ``samples``, ``samples_per_s``, and more.
        """
        assert self.last_eval is not None
        out: dict[str, Any] = {k: v for k, v in self.last_eval.items() if k != "step"}
        out.update(
            steps=self.step,
            samples=self.samples,
            samples_per_s=self.samples / self.train_seconds if self.train_seconds else None,
            world_size=self.ctx.world_size,
            cohort_axis=self.spec.axis if self.spec is not None else None,
            c2al=self.cfg.cohorts.enabled,
        )
        return out

    # ------------------------------------------------------------------------------- close
    def close(self, metrics: Optional[dict[str, Any]] = None) -> None:
        """Write diagnostics.png and metrics.json, the hparams and tracker artifacts; release the logs.

        metrics.json claims a finished run: if anything after it fails (train.log, TensorBoard or MLflow
        on a full disk), it is removed again and the error propagates.
        """
        written: Optional[Path] = None
        try:
            if self.ctx.is_main:
                if (self.run_dir / "diagnostics.jsonl").is_file():
                    from c2al_rec.analysis.diagnostics_plot import plot_diagnostics

                    plot_diagnostics(self.run_dir / "diagnostics.jsonl", self.run_dir / "diagnostics.png")
                if metrics is not None:
                    if self.run_log is not None:
                        self.run_log.line("final metrics: " + json.dumps(metrics, sort_keys=True))
                    atomic_write_json(self.run_dir / "metrics.json", metrics)
                    written = self.run_dir / "metrics.json"
                if self.tracker is not None and metrics is not None:
                    primary = metrics.get("primary", {})
                    final = {f"valid/{k}": primary.get(k) for k in ("ne", "calibration", "auc")}
                    final["samples_per_s"] = metrics.get("samples_per_s")
                    files = [self.run_dir / n for n in ("metrics.json", "config.toml", "cohorts.json", "train.log")]
                    self.tracker.finish(final, files)
            self.shutdown("FINISHED")
        except BaseException:
            if written is not None:
                written.unlink(missing_ok=True)
            raise

    def shutdown(self, status: str = "FAILED") -> None:
        """Close TensorBoard / MLflow (``status``: FINISHED or FAILED) and detach train.log; idempotent."""
        tracker, run_log = self.tracker, self.run_log
        self.tracker = self.run_log = None  # released once, even when closing fails (a full disk)
        try:
            if tracker is not None:
                tracker.close(status)
        finally:
            if run_log is not None:
                run_log.close()

    def _log(self, msg: str) -> None:
        if self.ctx.is_main:
            print(f"[train] {msg}", flush=True)
            if self.run_log is not None:
                self.run_log.line(f"[train] {msg}")

    def _log_train(self, rate: float, progress: "_Progress") -> None:
        views = self.metrics.compute_views()  # collective: every rank calls it
        losses = {k: v / max(1, self._loss_steps) for k, v in self._loss_sums.items()}
        self._loss_sums, self._loss_steps = {}, 0
        grad_norm = self._dense_grad_norm()
        if not self.ctx.is_main:
            return
        loss = {k[len("loss_") :]: float(v) for k, v in losses.items()}
        lr_dense = self.dense_optimizer.param_groups[0]["lr"] if self.dense_optimizer.param_groups else None
        lr_sparse = _first_lr(self.dmp.fused_optimizer)
        window, lifetime = views["window"], views["lifetime"]
        line = f"step {self.step}/{self.total_steps} samples/s {rate:,.0f} loss {loss.get('total', float('nan')):.4f}"
        for name, view in (("window", window), ("lifetime", lifetime)):
            line += f" | {name}: " + _fmt({k: v for k, v in view["primary"].items() if k != "auc" or name == "window"})
            if "aux" in view:
                line += "".join(f" {t}_ne {v['ne']:.4f}" for t, v in view["aux"].items() if v["ne"] is not None)
        progress.write(f"[train] {line}")
        if self.run_log is not None:
            self.run_log.line(f"[train] {line}")
        if self.tracker is None:
            return
        scalars: dict[str, Optional[float]] = {f"train/loss_{k}": v for k, v in loss.items()}
        scalars.update({"train/lr_dense": lr_dense, "train/lr_sparse": lr_sparse, "train/samples_per_s": rate})
        scalars["train/grad_norm_dense"] = grad_norm
        for name, view in (("window", window), ("lifetime", lifetime)):
            for k, v in view["primary"].items():
                if k != "auc" or name == "window":  # torchrec keeps AUC over its window only
                    scalars[f"train/{k}_{name}"] = v
            for t, v in view.get("aux", {}).items():
                scalars[f"train/{t}_ne_{name}"] = v["ne"]
            for cohort, ne in zip(self._segment_names(), view.get("segments", [])):
                scalars[f"train/cohort_ne_{name}/{cohort}"] = ne
        self.tracker.scalars(scalars, self.step)

    def _segment_names(self) -> list[str]:
        """Names of the segmented-NE groups: the spec's cohorts, then rows in none of them."""
        if self.spec is None:
            return []
        return [f"{self.spec.axis}:{c.name}" for c in self.spec.cohorts] + [f"{self.spec.axis}:none"]

    def _dense_grad_norm(self) -> Optional[float]:
        """The last step's dense gradient norm (before clipping): the clipping optimizer's, or computed now."""
        if self.clipper is not None:
            norm = self.clipper.last_total_grad_norm
            return float(norm) if norm is not None else None
        grads = [p.grad for p in self.dense_optimizer.params.values() if p.grad is not None]
        if not grads:
            return None
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))


class NonFiniteLossError(ValueError):
    """Training produced a nan / inf loss (or weights); raised on every rank at the same step."""


class FiniteLossCheck:
    """Per-step losses kept on the device and checked every ``every`` steps, not every step.

    ``record`` writes the step's losses into a [every, L] buffer (one small device op, no host sync);
    ``check`` looks at the buffered steps with one host sync and one all_reduce, so that every rank
    stops at the same check, naming the first bad step and loss over all ranks.

    Args:
        names: the losses to watch (``loss_<name>`` in the step's outputs).
        every: steps between checks (the log cadence).
        device: where the losses live.
    """

    _NONE = 2**62  # "no bad step" in the all_reduce(MIN)

    def __init__(self, names: list[str], every: int, device: torch.device) -> None:
        self.names = names
        self.buffer = torch.zeros(max(1, every), len(names), device=device)
        self.steps: list[int] = []

    def record(self, step: int, out: dict[str, torch.Tensor]) -> None:
        torch.stack([out[f"loss_{k}"].detach() for k in self.names], out=self.buffer[len(self.steps)])
        self.steps.append(step)

    def full(self) -> bool:
        return len(self.steps) == len(self.buffer)

    def check(self) -> None:
        """Raise NonFiniteLossError naming the first step and loss that was nan / inf (all ranks agree).

        Collective under a process group: every rank calls it at the same step.
        """
        if not self.steps:
            return
        bad = ~torch.isfinite(self.buffer[: len(self.steps)])  # [n, L]
        steps = torch.tensor(self.steps, device=bad.device)
        first = torch.where(bad, steps[:, None], torch.full_like(steps[:, None], self._NONE)).amin(0)  # [L]
        if dist.is_initialized():
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        first_steps = first.tolist()
        self.steps = []
        step = min(first_steps)
        if step == self._NONE:
            return
        which = [name for name, s in zip(self.names, first_steps) if s == step]
        raise NonFiniteLossError(
            f"training diverged: the {'/'.join(which)} loss is nan or inf at step {step}; lower train.dense_lr / "
            "train.sparse_lr, set train.grad_clip, or check the data. Checkpoints written before are kept"
        )


# What torch's zip writer (torch.save, DCP's tensor entries) makes of a failed write: no errno survives.
_TORCH_WRITE_FAILED = re.compile(r"PytorchStreamWriter failed|file write failed|unexpected pos \d+ vs \d+")


def _checkpoint_write_error(e: BaseException, root: Path, step: int) -> BaseException:
    """The error to raise for a failed checkpoint save: an OS error names ``root`` and the step.

    A full disk reaches us as a CheckpointException holding each rank's OSError (DCP), an OSError
    naming no file (a failed write(2)), or a RuntimeError of torch's zip writer that lost the errno;
    each becomes one OSError. Anything else (a bug, an interrupt) is returned as it is.
    """
    inner = unwrap_checkpoint_failure(e) or e
    where = f"writing checkpoint step_{step}"
    if isinstance(inner, OSError):
        if inner.filename is None:
            inner.filename = str(root)
        inner.add_note(where)
        return inner
    if isinstance(inner, RuntimeError) and _TORCH_WRITE_FAILED.search(str(inner)):
        torch_says = f"torch's writer: {str(inner).splitlines()[0].strip()}"
        if root.is_dir() and shutil.disk_usage(root).free < 2**20:  # the errno is lost, the cause is plain
            error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root))
            error.add_note(f"{where} ({torch_says})")
            return error
        return OSError(f"{root}: {torch_says}; {where}")
    return e


def _maybe_inject_fault(step: int, rank: int) -> None:
    """Fault injection for the restart test: SIGKILL this rank at a step, on the first attempt only.

    Set C2AL_FAULT_KILL_AT_STEP and C2AL_FAULT_KILL_RANK; torchelastic's restart count keeps the
    restarted job from killing itself again.
    """
    at = os.environ.get("C2AL_FAULT_KILL_AT_STEP")
    if at is None or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    if step == int(at) and rank == int(os.environ.get("C2AL_FAULT_KILL_RANK", "0")):
        print(f"[train] fault injection: SIGKILL rank {rank} at step {step}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def _first_lr(optimizer: Any) -> Optional[float]:
    groups = getattr(optimizer, "param_groups", None) or []
    return float(groups[0]["lr"]) if groups and "lr" in groups[0] else None


def _fingerprint_summary(fingerprint: dict[str, Any]) -> str:
    files = fingerprint.get("files", [])
    size = sum(f.get("bytes", 0) for f in files)
    return f"({len(files)} Parquet files, {size / 2**20:.1f} MiB, schema hash {fingerprint.get('schema_hash')})"


def _fmt(metrics: dict[str, Optional[float]]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None and not math.isnan(v))


class _Progress:
    """tqdm bar on a terminal, nothing extra otherwise (periodic log lines carry the progress)."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def update(self, step: int, loss: torch.Tensor) -> None:
        if self.bar is not None:  # the float() is a host sync: only for the bar on a terminal
            self.bar.n = step
            self.bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
            self.bar.refresh()

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
