"""Training throughput, like with like: this trainer vs plain PyTorch, C2AL on vs off, and the levers.

python -m benchmarks.train_throughput [--quick] [--json PATH] [--data DIR] [--threads N]

On planted-cohort synthetic data (generated into a temporary directory unless ``--data`` names a
dataset with the synthetic schema), same data, batch size per rank, precision and threads on both
sides of every ratio:
- ``trainer``: the real :class:`c2al_rec.train.trainer.Trainer` (DMP + fused RowWiseAdagrad inside
  backward + ``TrainPipelineSparseDist``), C2AL off (the baseline model);
- ``plain``: what a competent PyTorch user writes: one ``nn.EmbeddingBag(mode="sum"|"mean",
  sparse=True)`` per table, ``torch.optim.Adagrad`` on the sparse gradients, the same DenseArch /
  OverArch / primary head modules and the same dense optimizer (DDP with 2 processes);
- ``*_bf16``: the same under bf16 autocast of the dense part, on both sides (one line for a user);
- ``*_compiled``: ``train.compile_dense = "on"`` vs the plain model's dense part under ``torch.compile``;
- C2AL cost group (``c2al/``), against a baseline trainer in the same group: ``trainer_c2al``: C2AL on
  (cohort spec, aux heads of the default ``aux_head``, aux loss, per-cohort metrics);
  ``trainer_c2al_aux128``: aux heads of ``large_aux_head`` units on a ``large_aux_projection``-wide
  projection of h (``model.aux_projection``), ``trainer_c2al_aux128_on_h`` the same heads reading h itself;
  ``trainer_again``: a second baseline trainer, the A/A control (its ratio shows the noise floor);
- levers, each against ``trainer_c2al``: ``trainer_c2al_separate_heads`` (the three heads' first layers
  as separate GEMMs, as before they shared one) and ``trainer_c2al_sampled_metrics``
  (``train.metrics_every = metrics_every``).
In-process cases (1 rank) run interleaved after ``warmup`` untimed steps: each round times
``steps_per_round`` steps of every case, in an order rotated each round. Rates are medians over rounds;
ratios are medians of the per-round ratios (paired by round, so drift of the machine cancels), each with
a 95% bootstrap interval. The C2AL cost group is built and measured ``cost_repeats`` times with fresh
trainers (two instances of one config can differ by ~1%: see the A/A control); its ratios pool the
rounds of all repeats, their intervals resample repeats and then rounds within them, and each repeat's
median is listed too. With ``two_procs`` the trainer and plain cases (fp32 and bf16) are also launched
with 1 and 2 local processes (``elastic_launch``, threads split between them), alternated, best of
``proc_rounds``.
With ``--record`` writes ``benchmarks/results/train_throughput.md``; ``--json PATH`` writes ``{"benchmark", "config",
"results", "ratios"}``. Ratios: ``trainer_vs_plain_fp32`` and ``trainer_vs_plain_bf16`` (each the
minimum over 1 and 2 processes), ``trainer_vs_plain_pytorch`` (the smaller; goal >= 1.5),
``c2al_vs_baseline`` and ``c2al_vs_baseline_aux128`` (goal >= 0.97), ``c2al_vs_baseline_aux128_on_h``,
``aa_control``, ``two_procs_vs_one`` and the ``lever_*`` ratios; ``results["ratio_intervals"]`` holds the
in-process ratios' intervals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from benchmarks.common import (
    COHORT_SPEC,
    RESULTS_DIR,
    base_parser,
    command_line,
    cpu_bf16_isa,
    finish,
    machine,
    model_config,
    production_model,
    results_header,
    trainer_config,
    write_json,
)
from c2al_rec.config import (
    Config,
    ModelConfig,
    SyntheticConfig,
    config_to_dict,
    load_config_dict,
)
from c2al_rec.data import ParquetReader, load_schema
from c2al_rec.data.synthetic import generate_synthetic
from c2al_rec.io import relative_paths
from c2al_rec.modules.mlp import mlp
from c2al_rec.modules.model import AUX_HEADS, C2ALModel, DenseArch, OverArch
from c2al_rec.train.loss import c2al_loss

REPO = Path(__file__).resolve().parent.parent
NE_TOLERANCE = 0.001


def _benchmark_model() -> dict:
    """The production-shaped model with the default aux heads (``ModelConfig.aux_head``)."""
    return dict(production_model(), aux_head=list(ModelConfig().aux_head))


@dataclass
class Options:
    """Benchmark options (``--quick`` shrinks them)."""

    rows: int = 400_000
    """Synthetic rows generated (all splits; ~80% train)."""
    num_sparse: int = 26
    """Sparse features (one table each)."""
    max_table_size: int = 1_000_000
    """Largest table (user_id); the others are smaller (synthetic generator's sizes)."""
    batch_size: int = 2048
    """Batch size per rank, for every case."""
    model: dict = field(default_factory=_benchmark_model)
    """ModelConfig fields (production-shaped, sized for a 2-core machine; default aux heads)."""
    large_aux_head: list = field(default_factory=lambda: [128])
    """Aux head hidden sizes of the ``trainer_c2al_aux128`` cases."""
    large_aux_projection: int = 32
    """``model.aux_projection`` of ``trainer_c2al_aux128`` (``trainer_c2al_aux128_on_h`` has 0)."""
    metrics_every: int = 50
    """``train.metrics_every`` of the sampled-metrics lever (a typical ``log_every``)."""
    sparse_lr: float = 0.05
    """Embedding learning rate (RowWiseAdagrad in the trainer, Adagrad in the baseline)."""
    dense_lr: float = 1e-3
    """Dense learning rate (Adam in both)."""
    warmup: int = 3
    """Untimed steps per case before the rounds (compiled cases compile here)."""
    steps_per_round: int = 1
    """Timed steps per case per round (one: the paired steps of two cases run a second apart)."""
    rounds: int = 40
    """Interleaved rounds; medians over rounds are reported (per-step ratios spread by up to +-25% on a shared VM)."""
    cost_repeats: int = 3
    """Times the C2AL cost group is built afresh and measured (>= 1; its ratios pool the rounds of all repeats)."""
    eval_batches: int = 16
    """Validation batches for the NE checks (bf16 and compiled vs fp32 eager, after equal steps)."""
    levers: bool = True
    """Also measure the levers (compiled dense part, heads' shared GEMM, sampled metrics)."""
    two_procs: bool = True
    """Also launch trainer and plain with 1 and 2 processes (slower)."""
    proc_warmup: int = 6
    """Untimed steps per launch before timing."""
    proc_steps: int = 12
    """Timed steps per launch."""
    proc_rounds: int = 2
    """Alternated launches per case and world size (best of them is kept)."""
    threads: int = 0
    """torch threads per in-process case (0: all cores); launched processes split the cores."""
    data: str = ""
    """Existing dataset root (synthetic schema, with a user_value axis) instead of generating one."""


# --quick: the work a smoke run does (tests/test_benchmarks_quick.py keeps it small): no launches, no
# compile levers, one C2AL cost build, a handful of steps on a small table
QUICK = dict(
    rows=20_000,
    max_table_size=20_000,
    batch_size=256,
    warmup=1,
    steps_per_round=2,
    rounds=2,
    cost_repeats=1,
    eval_batches=2,
    levers=False,
    two_procs=False,
    proc_steps=3,
    proc_rounds=1,
)


def make_dataset(opts: Options, root: Path) -> Path:
    """Generate the benchmark's synthetic dataset into ``root``."""
    generate_synthetic(
        root, SyntheticConfig(rows=opts.rows, num_sparse=opts.num_sparse, max_table_size=opts.max_table_size, seed=1)
    )
    return root


def make_config(
    opts: Options,
    root: Path,
    *,
    c2al: bool,
    bf16: bool = False,
    compiled: bool = False,
    aux_head: Optional[list] = None,
    aux_projection: int = 0,
    metrics_every: int = 1,
    threads: Optional[int] = None,
) -> Config:
    """The trainer config of a case (C2AL on: the p5/p95 user-value spec with aux heads)."""
    model = dict(opts.model, **({"aux_head": list(aux_head)} if aux_head is not None else {}))
    model["aux_projection"] = aux_projection
    return trainer_config(
        str(root), opts.batch_size, model, c2al, opts.sparse_lr, opts.dense_lr, eval_batches=opts.eval_batches,
        bf16=bf16, compile_dense="on" if compiled else "off", metrics_every=metrics_every,
        num_threads=opts.threads if threads is None else threads,
    )  # fmt: skip


class PlainModel(nn.Module):
    """The plain-PyTorch baseline: ``nn.EmbeddingBag(sparse=True)`` per table + the same dense modules.

    Args:
        schema: the dataset schema (one table per sparse feature, in schema order).
        cfg: the model config (embedding_dim, dense arch, DHEN, primary head).
        bf16: run the dense part under bf16 autocast (as the trainer's ``train.bf16``).
        compiled: ``torch.compile`` the dense part (as the trainer's ``train.compile_dense``).
    """

    def __init__(self, schema: Any, cfg: ModelConfig, bf16: bool = False, compiled: bool = False) -> None:
        super().__init__()
        d = cfg.embedding_dim
        self.names = [f.name for f in schema.sparse]
        self.bags = nn.ModuleList(
            nn.EmbeddingBag(f.num_embeddings, d, mode=f.pooling, sparse=True, include_last_offset=True)
            for f in schema.sparse
        )
        self.dense_arch = DenseArch(len(schema.dense), cfg.dense_arch, d)
        self.over_arch = OverArch(len(self.names) + (1 if schema.dense else 0), cfg)
        self.primary_head = mlp(self.over_arch.repr_dim, cfg.primary_head, 1)
        self.bf16 = bf16
        self.dense_part = torch.compile(self._dense_part) if compiled else self._dense_part

    def _dense_part(self, tokens: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext():
            x = torch.cat([tokens, self.dense_arch(dense)], dim=1)  # [B, n, d]
            return self.primary_head(self.over_arch(x)).squeeze(-1)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        """dense [B, D], kjt -> {"primary": logits [B]}."""
        jts = kjt.to_dict()
        tokens = [bag(jts[n].values(), jts[n].offsets()) for n, bag in zip(self.names, self.bags)]
        return {"primary": self.dense_part(torch.stack(tokens, dim=1), dense)}


class PlainTrainer:
    """The competent default training loop: Adagrad (sparse grads) for embeddings, Adam for the rest.

    Args:
        opts: benchmark options (model, learning rates, batch size).
        root: dataset root.
        bf16: bf16 autocast of the dense part.
        compiled: torch.compile of the dense part.
        rank: this process's rank (with ``world_size`` > 1 the model is wrapped in DDP; gloo
            all-reduces the sparse embedding gradients too).
        world_size: processes in the job.
    """

    def __init__(
        self, opts: Options, root: Path, bf16: bool = False, compiled: bool = False, rank: int = 0, world_size: int = 1
    ) -> None:
        torch.manual_seed(0)
        self.schema = load_schema(root)
        model: nn.Module = PlainModel(self.schema, model_config(opts.model), bf16=bf16, compiled=compiled)
        sparse = list(model.bags.parameters())
        ids = {id(p) for p in sparse}
        dense = [p for p in model.parameters() if id(p) not in ids]
        self.sparse_opt = torch.optim.Adagrad(sparse, lr=opts.sparse_lr)
        self.dense_opt = torch.optim.Adam(dense, lr=opts.dense_lr)
        if world_size > 1:
            model = nn.parallel.DistributedDataParallel(model)
        self.model = model
        reader = ParquetReader(
            root, self.schema, "train", opts.batch_size, rank=rank, world_size=world_size, seed=0, shuffle=True
        )
        self.batches = iter(reader)

    def train_step(self) -> None:
        batch = next(self.batches)
        self.sparse_opt.zero_grad(set_to_none=True)
        self.dense_opt.zero_grad(set_to_none=True)
        logits = self.model(batch.dense_features, batch.sparse_features)
        loss, _ = c2al_loss(logits, batch.labels, batch.weights)
        loss.backward()
        self.sparse_opt.step()
        self.dense_opt.step()


def _separate_heads_forward(self: C2ALModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``C2ALModel.forward_from_tokens`` with each head's first layer as its own GEMM (the lever's 'before')."""
    h = self.over_arch(x)
    out = {"primary": self.primary_head(h).squeeze(-1)}
    if self.has_aux_heads:
        for name in AUX_HEADS:
            out[name] = self.aux_heads[name](h).squeeze(-1)
    return out


def build_trainer(cfg: Config, run_dir: Path, separate_heads: bool = False) -> tuple[Any, Iterator[Any]]:
    """A built Trainer (this process's group; 1 rank when not launched) and its train batch iterator."""
    from c2al_rec.distributed.backend import init_distributed
    from c2al_rec.train.trainer import Trainer

    trainer = Trainer(cfg, run_dir, init_distributed())
    trainer.build()
    if separate_heads:
        model = trainer.task.model
        model.forward_from_tokens = _separate_heads_forward.__get__(model)  # type: ignore[method-assign]
    return trainer, iter(trainer._reader(cfg.data.train_split, train=True))


def _timed(step: Callable[[], object], steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - t0


def trainer_rate(cfg: Config, run_dir: Path, warmup: int, steps: int, rounds: int = 1) -> float:
    """Median samples/s of the real training step (1 rank, in this process) after ``warmup`` steps."""
    trainer, batches = build_trainer(cfg, run_dir)
    try:
        _timed(lambda: trainer.train_step(batches), warmup)
        rates = [
            steps * cfg.data.batch_size / _timed(lambda: trainer.train_step(batches), steps) for _ in range(rounds)
        ]
    finally:
        trainer.close()
    return statistics.median(rates)


def _rank_worker(kind: str, payload: dict, run_dir: str, warmup: int, steps: int) -> float:
    """One rank of a launched case: global samples/s over ``steps`` steady-state steps.

    ``kind`` "trainer": ``payload`` is the run config; "plain": ``{"opts", "root", "bf16"}``.
    """
    import torch.distributed as dist

    from c2al_rec.distributed.backend import destroy_distributed, init_distributed, set_cpu_threads

    closer: Callable[[], object] = lambda: None  # noqa: E731
    if kind == "trainer":
        cfg = load_config_dict(payload)
        trainer, batches = build_trainer(cfg, Path(run_dir))
        step: Callable[[], object] = lambda: trainer.train_step(batches)  # noqa: E731
        closer, batch_size = trainer.close, cfg.data.batch_size
    else:
        ctx = init_distributed()
        set_cpu_threads(ctx)
        opts = Options(**payload["opts"])
        plain = PlainTrainer(opts, Path(payload["root"]), payload["bf16"], rank=ctx.rank, world_size=ctx.world_size)
        step, batch_size = plain.train_step, opts.batch_size

        def closer() -> None:
            # DDP's reducer holds the process group: freed only after destroy_process_group, its gloo
            # threads were seen to hang in the join of ~ProcessGroupGloo; free it while the group is up
            plain.model = None
            gc.collect()
            dist.barrier()

    try:
        _timed(step, warmup)
        dist.barrier()
        t0 = time.perf_counter()
        _timed(step, steps)
        dist.barrier()
        return steps * batch_size * dist.get_world_size() / (time.perf_counter() - t0)
    finally:
        closer()
        destroy_distributed()


def launched_rate(kind: str, payload: dict, run_dir: Path, nproc: int, warmup: int, steps: int) -> float:
    """Samples/s (all ranks) of a trainer or plain case with ``nproc`` local processes (elastic_launch)."""
    from c2al_rec.distributed.launch import launch_local

    out = launch_local(
        _rank_worker, (kind, payload, str(run_dir), warmup, steps), nproc, f"bench-{os.getpid()}-{kind}-{nproc}"
    )
    return float(out[0])


def _launched_with_retry(
    kind: str, payload: Callable[[], dict], run_dir: Path, nproc: int, opts: Options, label: str, failures: list[str]
) -> float:
    """``launched_rate``, launched once more (in a fresh directory) if a rank dies; the failure is recorded.

    A rank of the plain baseline (2 processes, bf16) died 3 times in 2 runs of 16 launches with glibc's
    "malloc(): unaligned tcache chunk detected" inside backward (torch's sparse-gradient DDP path): one such
    crash should not cost the run.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        return launched_rate(kind, payload(), run_dir, nproc, opts.proc_warmup, opts.proc_steps)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        failures.append(f"{label}: rank {rank} exited with {failure.exitcode} ({failure.signal_name()})")
        print(f"[train_throughput] launched {label} failed ({failures[-1]}); launching it once more", flush=True)
        return launched_rate(
            kind, payload(), run_dir.with_name(run_dir.name + "-retry"), nproc, opts.proc_warmup, opts.proc_steps
        )


def _interleaved(opts: Options, steppers: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Samples/s per case per round, cases rotated each round so none always follows another."""
    every = max(1, opts.rounds // 10)
    for step in steppers.values():
        _timed(step, opts.warmup)
    rates: dict[str, list[float]] = {k: [] for k in steppers}
    names = list(steppers)
    for r in range(opts.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rates[name].append(opts.steps_per_round * opts.batch_size / _timed(steppers[name], opts.steps_per_round))
        if (r + 1) % every == 0 or r + 1 == opts.rounds:
            line = ", ".join(f"{name} {statistics.median(rates[name]):,.0f}" for name in names)
            print(f"[train_throughput] round {r + 1}/{opts.rounds}, median samples/s so far: {line}", flush=True)
    return rates


def gemm_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """This machine's 1-thread rate of a square ``n`` GEMM at ``dtype``, GFLOP/s (best of ``repeats``):
    the limit a 1-thread training step's matmuls can approach."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
        a @ b  # warm-up: packing buffers, kernel selection
        best = min(_timed(lambda: a @ b, 1) for _ in range(repeats))
    finally:
        torch.set_num_threads(threads)
    return 2 * n**3 / best / 1e9


def measure_mfu(opts: Options, root: Path, work: Path) -> dict[str, Any]:
    """Model FLOP/s of the 1-process, 1-thread training step (baseline trainer) over the 1-thread GEMM
    rate at the same precision: ``mfu_fp32`` and, where the CPU has bf16 matrix instructions, ``mfu_bf16``."""
    out: dict[str, Any] = {"gemm_n": 2048, "threads": 1, "bf16_isa": cpu_bf16_isa()}
    precisions = {"fp32": (torch.float32, False)}
    if out["bf16_isa"] not in ("none", "unknown"):
        precisions["bf16"] = (torch.bfloat16, True)
    for name, (dtype, bf16) in precisions.items():
        cfg = make_config(opts, root, c2al=False, bf16=bf16, threads=1)
        trainer, batches = build_trainer(cfg, work / f"mfu-{name}")
        try:
            _timed(lambda: trainer.train_step(batches), opts.warmup)
            steps = opts.rounds * opts.steps_per_round
            step_s = _timed(lambda: trainer.train_step(batches), steps) / steps
            gflops = step_gflops(trainer, batches)
        finally:
            trainer.close()
        gemm = gemm_gflops(dtype)
        out[name] = {
            "step_gflop": gflops,
            "step_s": step_s,
            "step_gflop_per_s": gflops / step_s,
            "gemm_gflop_per_s": gemm,
            "mfu": gflops / step_s / gemm,
        }
        print(f"[train_throughput] mfu {name}: {gflops / step_s:.1f} of {gemm:.1f} GFLOP/s", flush=True)
    return out


def step_gflops(trainer: Any, batches: Iterator[Any]) -> float:
    """Model GFLOPs of one training forward + backward of ``trainer``'s task on its next batch.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, and the FM op by its registered
    formula); embedding lookups, elementwise and copy work count 0. Outside the pipeline (detached
    first), so the task runs its plain forward. The fused sparse optimizer updates embedding rows in
    this backward and dense ``.grad`` is left filled: call it after the measurements.
    """
    from torch.utils.flop_counter import FlopCounterMode

    trainer.pipeline.detach()
    batch = next(batches).to(trainer.ctx.device)
    with FlopCounterMode(display=False) as counter:
        loss, _ = trainer.task(batch)
        loss.backward()
    return counter.get_total_flops() / 1e9


def _group(
    opts: Options, root: Path, work: Path, cases: dict[str, Any], count_flops: bool = False
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, float]]:
    """Build every case of a group, run them interleaved, validate the trainers (and with ``count_flops``
    count one step's FLOPs); free them all. Returns (samples/s per round, validation NE, GFLOPs per step)
    by case."""
    steppers: dict[str, Callable[[], object]] = {}
    trainers, batches_of = {}, {}
    for name, case in cases.items():
        if isinstance(case, PlainTrainer):
            steppers[name] = case.train_step
        else:
            cfg, separate = case
            trainer, batches = build_trainer(cfg, work / f"run-{name}", separate_heads=separate)
            trainers[name], batches_of[name] = trainer, batches
            steppers[name] = lambda t=trainer, b=batches: t.train_step(b)
    rates = _interleaved(opts, steppers)
    ne = {name: t.evaluate()["primary"]["ne"] for name, t in trainers.items()}
    gflops = {name: step_gflops(t, batches_of[name]) for name, t in trainers.items()} if count_flops else {}
    for t in trainers.values():
        t.close()
    return rates, ne, gflops


def run(opts: Options) -> dict:
    """Run every case; returns ``{"benchmark", "config", "results", "ratios"}``."""
    if opts.cost_repeats < 1:
        raise ValueError(f"train_throughput: cost_repeats must be >= 1, got {opts.cost_repeats}")
    load_before = os.getloadavg()[0]
    tmp = tempfile.TemporaryDirectory(prefix="c2al-bench-train-")
    work = Path(tmp.name)
    try:
        root = Path(opts.data) if opts.data else make_dataset(opts, work / "data")
        cfg = lambda **kw: (make_config(opts, root, **kw), False)  # noqa: E731
        headline = {
            "trainer": cfg(c2al=False),
            "plain": PlainTrainer(opts, root),
            "trainer_bf16": cfg(c2al=False, bf16=True),
            "plain_bf16": PlainTrainer(opts, root, bf16=True),
        }
        rates, ne, _ = _group(opts, root, work, headline)
        del headline
        c2al_cost = {
            "trainer": cfg(c2al=False),
            "trainer_again": cfg(c2al=False),
            "trainer_c2al": cfg(c2al=True),
            "trainer_c2al_aux128": cfg(
                c2al=True, aux_head=opts.large_aux_head, aux_projection=opts.large_aux_projection
            ),
            "trainer_c2al_aux128_on_h": cfg(c2al=True, aux_head=opts.large_aux_head),
        }
        repeat_ratios: dict[str, list[float]] = {}
        for repeat in range(opts.cost_repeats):  # fresh trainers each time: instances can differ by ~1% (A/A)
            print(f"[train_throughput] C2AL cost group, repeat {repeat + 1}/{opts.cost_repeats}", flush=True)
            got, got_ne, got_gflops = _group(opts, root, work / f"c2al-{repeat}", c2al_cost, count_flops=repeat == 0)
            if repeat == 0:
                cost_ne, cost_gflops = got_ne, got_gflops
            got = {f"c2al/{k}": v for k, v in got.items()}
            for k, v in got.items():
                rates.setdefault(k, []).extend(v)
            for key in C2AL_RATIOS:
                repeat_ratios.setdefault(key, []).append(statistics.median(per_round_ratios(got, key)))
        del c2al_cost
        # what C2AL adds to a step's model FLOPs: noise-free, unlike the timed ratios
        c2al_flops = {k: v / cost_gflops["trainer"] - 1 for k, v in cost_gflops.items() if k.startswith("trainer_c2al")}
        ne.update({k: v for k, v in cost_ne.items() if k.startswith("trainer_c2al")})
        if opts.levers:
            levers = {
                "trainer": cfg(c2al=False),
                "trainer_compiled": cfg(c2al=False, compiled=True),
                "plain_compiled": PlainTrainer(opts, root, compiled=True),
                "trainer_c2al": cfg(c2al=True),
                "trainer_c2al_separate_heads": (make_config(opts, root, c2al=True), True),
                "trainer_c2al_sampled_metrics": cfg(c2al=True, metrics_every=opts.metrics_every),
            }
            lever_rates, lever_ne, _ = _group(opts, root, work, levers)
            del levers
            rates.update({f"levers/{k}": v for k, v in lever_rates.items()})
            ne["trainer_compiled"] = lever_ne["trainer_compiled"]
        threads = opts.threads or (os.cpu_count() or 1)
        mfu = measure_mfu(opts, root, work)

        results: dict[str, Any] = {f"{k}_samples_per_s": statistics.median(v) for k, v in rates.items()}
        results["mfu"] = mfu
        results["rounds_samples_per_s"] = rates
        results["threads"] = threads
        results["steps_per_case"] = opts.warmup + opts.rounds * opts.steps_per_round
        results["valid_ne"] = ne
        results["c2al_repeat_ratios"] = repeat_ratios
        results["step_gflops"] = cost_gflops
        results["c2al_extra_flops"] = c2al_flops
        results["ne_rel_change_vs_fp32"] = {k: (v - ne["trainer"]) / ne["trainer"] for k, v in ne.items()}
        ratios: dict[str, Optional[float]] = {
            "mfu_fp32": mfu["fp32"]["mfu"],
            "mfu_bf16": mfu["bf16"]["mfu"] if "bf16" in mfu else None,
            "trainer_vs_plain_fp32_2procs": None,
            "trainer_vs_plain_bf16_2procs": None,
            "two_procs_vs_one": None,
        }
        results["ratio_intervals"] = {}
        for key in PAIRED:
            per_round = per_round_ratios(rates, key)
            if per_round is not None:
                ratios[key] = statistics.median(per_round)
                repeats = opts.cost_repeats if key in C2AL_RATIOS else 1
                results["ratio_intervals"][key] = median_interval(per_round, repeats)
        if opts.two_procs:
            launched: dict[str, list[float]] = {}
            plain_payload = lambda bf16: {"opts": dataclasses.asdict(opts), "root": str(root), "bf16": bf16}  # noqa: E731
            cases = {
                "trainer": ("trainer", lambda: config_to_dict(make_config(opts, root, c2al=False, threads=0))),
                "plain": ("plain", lambda: plain_payload(False)),
                "trainer_bf16": (
                    "trainer",
                    lambda: config_to_dict(make_config(opts, root, c2al=False, bf16=True, threads=0)),
                ),
                "plain_bf16": ("plain", lambda: plain_payload(True)),
            }
            failures: list[str] = []
            for r in range(opts.proc_rounds):
                for nproc in (1, 2):
                    for name, (kind, payload) in cases.items():
                        rate = _launched_with_retry(
                            kind,
                            payload,
                            work / f"{name}-{nproc}-{r}",
                            nproc,
                            opts,
                            f"{name} x{nproc} round {r}",
                            failures,
                        )
                        launched.setdefault(f"{name}_{nproc}proc", []).append(rate)
                        print(
                            f"[train_throughput] launched {name} x{nproc} round {r}: {rate:,.0f} samples/s", flush=True
                        )
            # best of rounds: a launch is long, and a burst of other load can slow one launch by 10x
            best = {k: max(v) for k, v in launched.items()}
            results["launched_rounds_samples_per_s"] = launched
            results["launched_failures"] = failures
            results["launched_best_samples_per_s"] = best
            ratios["trainer_vs_plain_fp32_2procs"] = best["trainer_2proc"] / best["plain_2proc"]
            ratios["trainer_vs_plain_bf16_2procs"] = best["trainer_bf16_2proc"] / best["plain_bf16_2proc"]
            ratios["two_procs_vs_one"] = best["trainer_2proc"] / best["trainer_1proc"]
        for precision in ("fp32", "bf16"):
            values = [ratios[f"trainer_vs_plain_{precision}_{n}"] for n in ("1proc", "2procs")]
            ratios[f"trainer_vs_plain_{precision}"] = min(v for v in values if v is not None)
        ratios["trainer_vs_plain_pytorch"] = min(ratios["trainer_vs_plain_fp32"], ratios["trainer_vs_plain_bf16"])  # type: ignore[type-var]
        results["load_average_1min"] = [load_before, os.getloadavg()[0]]
    finally:
        tmp.cleanup()
    config = {**dataclasses.asdict(opts), "machine": machine(), "spec": _repo_relative(COHORT_SPEC)}
    return {"benchmark": "train_throughput", "config": config, "results": results, "ratios": ratios}


def _repo_relative(path: Path) -> str:
    """``path`` relative to the repository (recorded results never carry this machine's absolute paths)."""
    return str(relative_paths(str(Path(path).resolve()), REPO))


def run_mfu_only(opts: Options) -> dict[str, Any]:
    """``--only mfu``: the GEMM rates and the 1-thread step's model FLOP/s, nothing else."""
    with tempfile.TemporaryDirectory(prefix="c2al-bench-mfu-") as tmp:
        work = Path(tmp)
        root = Path(opts.data) if opts.data else make_dataset(opts, work / "data")
        return measure_mfu(opts, root, work)


# in-process ratios: median over rounds of case a / case b in the same round
PAIRED = {
    "trainer_vs_plain_fp32_1proc": ("trainer", "plain"),
    "trainer_vs_plain_bf16_1proc": ("trainer_bf16", "plain_bf16"),
    "c2al_vs_baseline": ("c2al/trainer_c2al", "c2al/trainer"),
    "c2al_vs_baseline_aux128": ("c2al/trainer_c2al_aux128", "c2al/trainer"),
    "c2al_vs_baseline_aux128_on_h": ("c2al/trainer_c2al_aux128_on_h", "c2al/trainer"),
    "aa_control": ("c2al/trainer_again", "c2al/trainer"),
    "lever_aux_projection": ("c2al/trainer_c2al_aux128", "c2al/trainer_c2al_aux128_on_h"),
    "lever_compile_trainer": ("levers/trainer_compiled", "levers/trainer"),
    "trainer_vs_plain_compiled": ("levers/trainer_compiled", "levers/plain_compiled"),
    "lever_heads_one_gemm": ("levers/trainer_c2al", "levers/trainer_c2al_separate_heads"),
    "lever_sampled_metrics": ("levers/trainer_c2al_sampled_metrics", "levers/trainer_c2al"),
}


# the ratios measured in the C2AL cost group (pooled over its repeats)
C2AL_RATIOS = (
    "c2al_vs_baseline",
    "c2al_vs_baseline_aux128",
    "c2al_vs_baseline_aux128_on_h",
    "aa_control",
    "lever_aux_projection",
)


def per_round_ratios(rounds: dict[str, list[float]], key: str) -> Optional[list[float]]:
    """The per-round ratios behind a ``PAIRED`` ratio (None when its cases did not run)."""
    a, b = PAIRED[key]
    if a not in rounds or b not in rounds:
        return None
    return [x / y for x, y in zip(rounds[a], rounds[b])]


def median_interval(
    values: list[float], repeats: int = 1, confidence: float = 0.95, resamples: int = 4000
) -> Optional[list[float]]:
    """Percentile-bootstrap interval of the median of ``values`` (None with fewer than 3 values).

    With ``repeats`` > 1, ``values`` are that many equal runs of rounds, one after the other (one per
    fresh build of a group): the bootstrap resamples runs, then rounds within each, so the interval
    carries the differences between builds as well as between rounds.
    """
    import numpy as np
    from scipy.stats import bootstrap

    if len(values) < 3 or min(values) == max(values):
        return None
    if repeats <= 1:
        ci = bootstrap(
            (np.asarray(values),), np.median, confidence_level=confidence, method="percentile", rng=0
        ).confidence_interval
        return [float(ci.low), float(ci.high)]
    runs = np.asarray(values).reshape(repeats, -1)  # [repeats, rounds]
    rng = np.random.default_rng(0)
    picked = runs[rng.integers(0, repeats, (resamples, repeats))]  # [resamples, repeats, rounds]
    rounds = rng.integers(0, runs.shape[1], picked.shape)
    medians = np.median(np.take_along_axis(picked, rounds, axis=2).reshape(resamples, -1), axis=1)
    alpha = (1 - confidence) / 2
    return [float(np.quantile(medians, alpha)), float(np.quantile(medians, 1 - alpha))]


RATIO_LINES = [
    ("mfu_fp32", "report", "1-process 1-thread training step's model FLOP/s / 1-thread fp32 2048 GEMM FLOP/s"),
    ("mfu_bf16", "report", "the same under bf16 autocast / 1-thread bf16 2048 GEMM"),
    ("trainer_vs_plain_pytorch", "report", "the smaller of fp32 and bf16 below"),
    ("trainer_vs_plain_fp32", "report", "min over 1 and 2 processes"),
    ("trainer_vs_plain_bf16", "report", "min over 1 and 2 processes; both sides under bf16 autocast"),
    ("trainer_vs_plain_fp32_1proc", "", ""),
    ("trainer_vs_plain_fp32_2procs", "", ""),
    ("trainer_vs_plain_bf16_1proc", "", ""),
    ("trainer_vs_plain_bf16_2procs", "", ""),
    ("trainer_vs_plain_compiled", "", "both dense parts under torch.compile, 1 process"),
    ("c2al_vs_baseline", ">= 0.97", "default aux heads"),
    ("c2al_vs_baseline_aux128", ">= 0.97", "aux_head [128] on a projection of h (model.aux_projection)"),
    ("c2al_vs_baseline_aux128_on_h", "", "aux_head [128] reading h itself"),
    ("aa_control", "", "A/A control: a second baseline trainer in the C2AL group / the first (noise floor)"),
    ("two_procs_vs_one", "", "trainer, 2 processes x 1 thread vs 1 process x 2 threads"),
    ("lever_compile_trainer", "", "trainer compile_dense on / off"),
    ("lever_heads_one_gemm", "", "C2AL trainer, heads' first layers as one GEMM / separate"),
    ("lever_sampled_metrics", "", "C2AL trainer, metrics every 50th step / every step"),
    ("lever_aux_projection", "", "C2AL trainer, aux_head [128] on a projection of h / on h"),
]


def _markdown(out: dict, command: str) -> str:
    r, q, c = out["results"], out["ratios"], out["config"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        *results_header("Training throughput", c, command),
        "",
        f"Torch threads in-process: {r['threads']}. Every in-process case did {r['steps_per_case']} steps on the same "
        f"data ({c['rounds']} rounds of {c['steps_per_round']} step(s) per case, order rotated each round); the "
        f"`c2al/` rows pool {c.get('cost_repeats', 1)} fresh builds of their group (their NE is the first build's). "
        "Rates are medians over rounds, ratios medians of per-round ratios with 95% bootstrap intervals. Load average "
        f"(1 min) before / after: {r['load_average_1min'][0]:.1f} / {r['load_average_1min'][1]:.1f}.",
        "",
        "| case | samples/s (median) | per round (min .. max) | validation NE vs fp32 trainer |",
        "| --- | ---: | --- | ---: |",
    ]
    for name, per_round in r["rounds_samples_per_s"].items():
        per = f"{min(per_round):,.0f} .. {max(per_round):,.0f}"
        key = _ne_key(name)
        ne = r["ne_rel_change_vs_fp32"].get(key) if key else None
        lines.append(
            f"| {name} | {r[f'{name}_samples_per_s']:,.0f} | {per} | {'' if ne is None else f'{100 * ne:+.4f}%'} |"
        )
    for name, per_round in r.get("launched_rounds_samples_per_s", {}).items():
        per = "launches: " + ", ".join(f"{x:,.0f}" for x in per_round)
        lines.append(f"| launched {name} (best) | {r['launched_best_samples_per_s'][name]:,.0f} | {per} | |")
    for failure in r.get("launched_failures", []):
        lines.append(f"\nA launch failed and was launched once more: {failure}")
    lines += [
        "",
        "| ratio | value | 95% interval | per-round range | goal | what |",
        "| --- | ---: | --- | --- | --- | --- |",
    ]
    intervals = r.get("ratio_intervals", {})
    for key, goal, what in RATIO_LINES:
        if key in q:
            per = per_round_ratios(r["rounds_samples_per_s"], key) if key in PAIRED else None
            spread = f"{min(per):.3f} .. {max(per):.3f}" if per else ""
            interval = _interval(intervals.get(key))
            repeats = r.get("c2al_repeat_ratios", {}).get(key)
            if repeats and len(repeats) > 1:
                what += f"{'; ' if what else ''}repeats: " + ", ".join(f"{v:.3f}" for v in repeats)
            lines.append(f"| `{key}` | {fmt(q[key])} | {interval} | {spread} | {goal} | {what} |")
    lines += ["", *_notes(out)]
    return "\n".join(lines)


def _flops_text(out: dict) -> str:
    extra = out["results"].get("c2al_extra_flops")
    if not extra:
        return ""
    gflops = out["results"]["step_gflops"]["trainer"]
    parts = ", ".join(f"`{case}` +{100 * v:.1f}%" for case, v in extra.items())
    return (
        f"In model FLOPs of a training step (FlopCounterMode; baseline {gflops:.1f} GFLOP) that is {parts}: a step "
        "whose time followed its FLOPs would give C2AL on / off = 1 / (1 + that share)."
    )


def _interval(ci: Optional[list[float]], missing: str = "") -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else missing


def _interval_text(out: dict, key: str) -> str:
    return _interval(out["results"].get("ratio_intervals", {}).get(key), "(no interval)")


def _ne_key(name: str) -> Optional[str]:
    """The ``valid_ne`` key of a case row (None: its group's NE is not kept: a repeat of a headline case)."""
    group, _, case = name.rpartition("/")
    if not group:
        return case
    if (group == "c2al" and case.startswith("trainer_c2al")) or (group == "levers" and case == "trainer_compiled"):
        return case
    return None


def _mfu_note(out: dict) -> list[str]:
    """How close the 1-thread step runs to this machine's GEMM limit, and the command that measured it."""
    m = out["results"].get("mfu")
    if not m:
        return []
    parts = [
        f"{p}: {m[p]['step_gflop_per_s']:.1f} of {m[p]['gemm_gflop_per_s']:.1f} GFLOP/s = {m[p]['mfu']:.3f}"
        for p in ("fp32", "bf16")
        if p in m
    ]
    cmd = f" (measured by `{m['command']}`)" if m.get("command") else ""
    return [
        f"- Model FLOP utilisation of the 1-process, 1-thread training step (FlopCounterMode's model FLOPs per step / "
        f"step time, over the 1-thread rate of a square {m['gemm_n']} GEMM at the same precision): "
        + "; ".join(parts)
        + f"{cmd}. The step's GEMMs are small and its embedding lookups, optimizer and elementwise work add time "
        "but no counted FLOPs, so this is the share of the machine's matmul limit the step reaches.",
    ]


def _notes(out: dict) -> list[str]:
    """What the ratios say, written from this run's numbers."""
    q = out["ratios"]
    fmt = lambda key: "n/a" if q.get(key) is None else f"{q[key]:.3f}"  # noqa: E731
    best = max((v for k, v in q.items() if k.startswith("trainer_vs_plain_") and v is not None), default=None)
    isa = out["config"]["machine"]
    known = "bf16 ISA: " in isa  # machine lines recorded before the ISA was named do not say
    native = known and "bf16 ISA: none" not in isa
    return [
        "## Notes",
        "",
        "- Like with like: every trainer/plain ratio has the same precision, threads, data and dense modules on "
        f"both sides. The smaller of the fp32 and bf16 ratios is {fmt('trainer_vs_plain_pytorch')}, the best "
        f"equal-precision figure {'n/a' if best is None else f'{best:.3f}'}: on a CPU host both sides spend their "
        "time in the same dense GEMMs, so the ratio stays near 1; what the trainer adds (sharded tables, an "
        "optimizer fused into backward with no sparse gradient tensors, a pipeline that overlaps input copies and "
        "all-to-all with compute) pays across GPUs, not on 2 cores. It is a report row, not a goal.",
        *_mfu_note(out),
        "- bf16: "
        + (
            "this CPU has native bf16 dot products, so bf16 autocast is faster than fp32 on both sides."
            if native
            else "the recorded machine line does not name the CPU's bf16 ISA, so whether bf16 ran natively is unknown."
            if not known
            else "this CPU has no bf16 dot-product instructions (avx2 only): bf16 runs emulated, far slower than "
            "fp32 on both sides, and its ratio says little about a bf16-capable host."
        ),
        f"- Levers (each measured alone in the same run): compiling the dense part {fmt('lever_compile_trainer')}, "
        f"one GEMM for the heads' first layers {fmt('lever_heads_one_gemm')}, training metrics every "
        f"{out['config']['metrics_every']}th step {fmt('lever_sampled_metrics')}; 2 processes x 1 thread vs 1 "
        f"process x 2 threads {fmt('two_procs_vs_one')}.",
        "- C2AL on / off, measured in one group with its baseline and the A/A control: default aux heads "
        f"{fmt('c2al_vs_baseline')} {_interval_text(out, 'c2al_vs_baseline')}, aux_head "
        f"{out['config']['large_aux_head']} on the projection {fmt('c2al_vs_baseline_aux128')} "
        f"{_interval_text(out, 'c2al_vs_baseline_aux128')}. What C2AL adds to a step: the aux heads' columns of "
        "the heads' shared first GEMM (forward, both backward GEMMs) and their small layers, two weighted BCE "
        "terms, and the aux and per-cohort NE states. " + _flops_text(out),
        f"- Wide aux heads: aux_head {out['config']['large_aux_head']} reading h (the flattened DHEN output) costs "
        f"C2AL on / off {fmt('c2al_vs_baseline_aux128_on_h')}; the same heads on a "
        f"{out['config'].get('large_aux_projection', 0)}-wide linear projection of h (`model.aux_projection`, "
        f"dropped at export with the heads) {fmt('c2al_vs_baseline_aux128')} (lever {fmt('lever_aux_projection')}). "
        "Whether the projection keeps C2AL's NE effect is measured over seeds in `aux_projection_ne.md`.",
        "- Noise: per-round ratios of one pair of cases spread widely on this shared 2-core VM (see the per-round "
        "range column); the medians are the recorded figures, and the 95% interval says how well the run pins "
        f"each down. The A/A control (two identical baseline trainers in the C2AL group) is {fmt('aa_control')} "
        f"{_interval_text(out, 'aa_control')}: two instances of one config can differ, which an interval over "
        "the rounds of one build does not cover; hence the C2AL group is built afresh several times and its "
        "intervals resample builds as well as rounds.",
        "- The validation-NE column of the `trainer_c2al*` rows compares C2AL with the fp32 baseline after the same "
        "few steps (the aux losses change training); for `trainer_bf16` and `*_compiled` it is the precision / "
        "compilation check (allowed +-0.1%).",
    ]


def main(argv: Optional[list[str]] = None) -> int:
    parser = base_parser(__doc__, "small sizes (about a minute)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per in-process case (0: all cores)")
    parser.add_argument(
        "--only",
        choices=["mfu"],
        default=None,
        help="mfu: measure only the GEMM limit and the 1-thread step (a few minutes); with --record it is merged "
        "into benchmarks/results/train_throughput.{json,md} under its own command",
    )
    args = parser.parse_args(argv)
    opts = Options(data=args.data, threads=args.threads)
    if args.quick:
        opts = dataclasses.replace(opts, **QUICK)
    if args.only == "mfu":
        return _main_mfu_only(opts, args, argv)
    out = run(opts)
    if args.record and not args.quick:  # the committed record: the JSON beside the markdown
        write_json(RESULTS_DIR / "train_throughput.json", out)
    return finish("train_throughput", out, _markdown, argv, args.quick, args.json, args.record)


def _main_mfu_only(opts: Options, args: Any, argv: Optional[list[str]]) -> int:
    mfu = {**run_mfu_only(opts), "command": command_line("train_throughput", argv).strip()}
    if args.json:
        write_json(args.json, mfu)
    if not args.record or args.quick:
        print(json.dumps(mfu, indent=2))
        return 0
    path = RESULTS_DIR / "train_throughput.json"
    out = json.loads(path.read_text())
    out["results"]["mfu"] = mfu
    out["ratios"]["mfu_fp32"] = mfu["fp32"]["mfu"]
    out["ratios"]["mfu_bf16"] = mfu["bf16"]["mfu"] if "bf16" in mfu else None
    write_json(path, out)
    md = (RESULTS_DIR / "train_throughput.md").read_text()
    full_command = md.split("Command: `", 1)[1].split("`", 1)[0]
    (RESULTS_DIR / "train_throughput.md").write_text(_markdown(out, full_command) + "\n")
    print(f"merged the mfu measurement into {path.name} and train_throughput.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
