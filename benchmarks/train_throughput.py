"""Training throughput, like with like: this trainer vs plain PyTorch, C2AL on vs off, and the levers.

python -m benchmarks.train_throughput [--quick] [--json PATH] [--record] [--data DIR] [--threads N] [--only mfu]

Same data, batch size per rank, precision and threads on both sides of every ratio. ``trainer``: the real
Trainer (C2AL off); ``plain``: ``nn.EmbeddingBag(sparse=True)`` per table + Adagrad, the same dense modules and
Adam (DDP when launched); ``*_bf16`` / ``*_compiled``: the dense part under bf16 autocast / torch.compile; the
C2AL cost group ``c2al/`` (``cost_repeats`` fresh builds, with an A/A control) and the ``levers/``. In-process
cases run interleaved in rotating order: rates are medians over rounds, ratios medians of per-round ratios with
95% bootstrap intervals; launched cases (1 and 2 processes) the best of ``proc_rounds``. MFU: a 1-thread step's
model FLOP/s over the 1-thread 2048 GEMM rate. Goal: ``c2al_vs_baseline`` and ``c2al_vs_baseline_aux128`` >= 0.97.
"""

from __future__ import annotations

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

from benchmarks import common
from c2al_rec.config import Config, ModelConfig, config_to_dict, load_config_dict
from c2al_rec.data import ParquetReader, load_schema
from c2al_rec.modules.mlp import mlp
from c2al_rec.modules.model import AUX_HEADS, C2ALModel, DenseArch, OverArch
from c2al_rec.train.loss import c2al_loss

NE_TOLERANCE = 0.001  # bf16 and compiled may move validation NE by this share of the fp32 eager trainer's


@dataclass
class Options:
    """Benchmark options (``--quick``: ``QUICK``)."""

    rows: int = 400_000
    """Synthetic rows generated (all splits; ~80% train)."""
    num_sparse: int = 26
    """Sparse features (one table each)."""
    max_table_size: int = 1_000_000
    """Largest table (user_id); the others are smaller (synthetic generator's sizes)."""
    batch_size: int = 2048
    """Batch size per rank, for every case."""
    model: dict = field(default_factory=lambda: dict(common.production_model(), aux_head=list(ModelConfig().aux_head)))
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


# --quick, a smoke run (tests/test_benchmarks_quick.py keeps it small): no launches, no compile, one C2AL build
QUICK = dict(
    rows=20_000, max_table_size=20_000, batch_size=256, warmup=1, steps_per_round=2, rounds=2, cost_repeats=1,
    eval_batches=2, levers=False, two_procs=False, proc_steps=3, proc_rounds=1,
)  # fmt: skip


def make_config(
    opts: Options, root: Path, *, c2al: bool, bf16: bool = False, compiled: bool = False,
    aux_head: Optional[list] = None, aux_projection: int = 0, metrics_every: int = 1, threads: Optional[int] = None,
) -> Config:  # fmt: skip
    """The trainer config of a case (C2AL on: the p5/p95 user-value spec with aux heads)."""
    model = dict(opts.model, aux_projection=aux_projection)
    if aux_head is not None:
        model["aux_head"] = list(aux_head)
    return common.trainer_config(
        str(root), opts.batch_size, model, c2al, opts.sparse_lr, opts.dense_lr, eval_batches=opts.eval_batches,
        bf16=bf16, compile_dense="on" if compiled else "off", metrics_every=metrics_every,
        num_threads=opts.threads if threads is None else threads,
    )  # fmt: skip


class PlainModel(nn.Module):
    """The plain-PyTorch baseline: ``nn.EmbeddingBag(sparse=True)`` per table (schema order) + the trainer's
    dense modules; ``bf16`` / ``compiled``: the dense part under bf16 autocast / ``torch.compile``."""

    def __init__(self, schema: Any, cfg: ModelConfig, bf16: bool = False, compiled: bool = False) -> None:
        super().__init__()
        self.names = [f.name for f in schema.sparse]
        self.bags = nn.ModuleList(
            nn.EmbeddingBag(f.num_embeddings, cfg.embedding_dim, mode=f.pooling, sparse=True, include_last_offset=True)
            for f in schema.sparse
        )
        self.dense_arch = DenseArch(len(schema.dense), cfg.dense_arch, cfg.embedding_dim)
        self.over_arch = OverArch(len(self.names) + (1 if schema.dense else 0), cfg)
        self.primary_head = mlp(self.over_arch.repr_dim, cfg.primary_head, 1)
        self.bf16 = bf16
        self.dense_part = torch.compile(self._dense_part) if compiled else self._dense_part

    def _dense_part(self, tokens: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            x = torch.cat([tokens, self.dense_arch(dense)], dim=1)  # [B, n, d]
            return self.primary_head(self.over_arch(x)).squeeze(-1)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        """dense [B, D], kjt -> {"primary": logits [B]}."""
        jts = kjt.to_dict()
        tokens = [bag(jts[n].values(), jts[n].offsets()) for n, bag in zip(self.names, self.bags)]
        return {"primary": self.dense_part(torch.stack(tokens, dim=1), dense)}


class PlainTrainer:
    """The competent default training loop: Adagrad (sparse grads) for embeddings, Adam for the rest; with
    ``world_size`` > 1 the model is wrapped in DDP (gloo all-reduces the sparse embedding gradients too)."""

    def __init__(
        self, opts: Options, root: Path, bf16: bool = False, compiled: bool = False, rank: int = 0, world_size: int = 1
    ) -> None:
        torch.manual_seed(0)
        schema = load_schema(root)
        model: nn.Module = PlainModel(schema, common.model_config(opts.model), bf16=bf16, compiled=compiled)
        sparse = {id(p) for p in model.bags.parameters()}
        self.sparse_opt = torch.optim.Adagrad(model.bags.parameters(), lr=opts.sparse_lr)
        self.dense_opt = torch.optim.Adam([p for p in model.parameters() if id(p) not in sparse], lr=opts.dense_lr)
        self.model = nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
        split = (root, schema, "train", opts.batch_size)
        self.batches = iter(ParquetReader(*split, rank=rank, world_size=world_size, seed=0, shuffle=True))

    def train_step(self) -> None:
        batch = next(self.batches)
        self.sparse_opt.zero_grad(set_to_none=True)
        self.dense_opt.zero_grad(set_to_none=True)
        c2al_loss(self.model(batch.dense_features, batch.sparse_features), batch.labels, batch.weights)[0].backward()
        self.sparse_opt.step()
        self.dense_opt.step()


def _separate_heads_forward(self: C2ALModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``C2ALModel.forward_from_tokens`` with each head's first layer as its own GEMM (the lever's 'before')."""
    h = self.over_arch(x)
    aux = {name: self.aux_heads[name](h).squeeze(-1) for name in (AUX_HEADS if self.has_aux_heads else ())}
    return {"primary": self.primary_head(h).squeeze(-1), **aux}


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


def trainer_rate(cfg: Config, run_dir: Path, warmup: int, steps: int, rounds: int = 1) -> float:
    """Median samples/s of the real training step (1 rank, in this process) after ``warmup`` steps."""
    trainer, batches = build_trainer(cfg, run_dir)
    try:
        step = lambda: trainer.train_step(batches)  # noqa: E731
        common.timed(step, warmup)
        return statistics.median(steps * cfg.data.batch_size / common.timed(step, steps) for _ in range(rounds))
    finally:
        trainer.close()


def _rank_worker(kind: str, payload: dict, run_dir: str, warmup: int, steps: int) -> float:
    """One rank of a launched case: global samples/s over ``steps`` steady-state steps.
    ``kind`` "trainer": ``payload`` is the run config; "plain": ``{"opts", "root", "bf16"}``."""
    import torch.distributed as dist

    from c2al_rec.distributed.backend import destroy_distributed, init_distributed, set_cpu_threads

    if kind == "trainer":
        cfg = load_config_dict(payload)
        trainer, batches = build_trainer(cfg, Path(run_dir))
        step, batch_size = (lambda: trainer.train_step(batches)), cfg.data.batch_size
    else:
        ctx = init_distributed()
        set_cpu_threads(ctx)
        opts = Options(**payload["opts"])
        trainer = PlainTrainer(opts, Path(payload["root"]), payload["bf16"], rank=ctx.rank, world_size=ctx.world_size)
        step, batch_size = trainer.train_step, opts.batch_size
    try:
        common.timed(step, warmup)
        dist.barrier()
        t0 = time.perf_counter()
        common.timed(step, steps)
        dist.barrier()
        return steps * batch_size * dist.get_world_size() / (time.perf_counter() - t0)
    finally:
        if kind == "trainer":
            trainer.close()
        else:  # DDP's reducer holds the process group: freed after destroy_process_group, its gloo threads
            # were seen to hang in the join of ~ProcessGroupGloo; so it is freed while the group is up
            trainer.model = None
            gc.collect()
            dist.barrier()
        destroy_distributed()


def launched_rate(kind: str, payload: dict, run_dir: Path, nproc: int, warmup: int, steps: int) -> float:
    """Samples/s (all ranks) of a trainer or plain case with ``nproc`` local processes (elastic_launch)."""
    from c2al_rec.distributed.launch import launch_local

    args = (kind, payload, str(run_dir), warmup, steps)
    return float(launch_local(_rank_worker, args, nproc, f"bench-{os.getpid()}-{kind}-{nproc}")[0])


def _launched_with_retry(
    kind: str, payload: dict, run_dir: Path, nproc: int, opts: Options, label: str, failures: list[str]
) -> float:
    """``launched_rate``, launched once more (in a fresh directory) if a rank dies; the failure is recorded.
    (A rank of the plain baseline, 2 processes, bf16, died 3 times in 2 runs of 16 launches with glibc's
    "malloc(): unaligned tcache chunk detected" inside torch's sparse-gradient DDP backward.)"""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        return launched_rate(kind, payload, run_dir, nproc, opts.proc_warmup, opts.proc_steps)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        failures.append(f"{label}: rank {rank} exited with {failure.exitcode} ({failure.signal_name()})")
        print(f"[train_throughput] launched {label} failed ({failures[-1]}); launching it once more", flush=True)
        retry_dir = run_dir.with_name(run_dir.name + "-retry")
        return launched_rate(kind, payload, retry_dir, nproc, opts.proc_warmup, opts.proc_steps)


def _launched(opts: Options, root: Path, work: Path) -> tuple[dict[str, list[float]], list[str]]:
    """Samples/s of trainer and plain, fp32 and bf16, launched with 1 and 2 processes, per round; the failures."""
    cases = {}  # case -> the payload its ranks build from (see _rank_worker)
    for suffix, bf16 in (("", False), ("_bf16", True)):
        cases["trainer" + suffix] = config_to_dict(make_config(opts, root, c2al=False, bf16=bf16, threads=0))
        cases["plain" + suffix] = {"opts": dataclasses.asdict(opts), "root": str(root), "bf16": bf16}
    launched: dict[str, list[float]] = {}
    failures: list[str] = []
    for r in range(opts.proc_rounds):
        for nproc in (1, 2):
            for name, payload in cases.items():
                label, kind = f"{name} x{nproc} round {r}", name.removesuffix("_bf16")
                rate = _launched_with_retry(kind, payload, work / f"{name}-{nproc}-{r}", nproc, opts, label, failures)
                launched.setdefault(f"{name}_{nproc}proc", []).append(rate)
                print(f"[train_throughput] launched {label}: {rate:,.0f} samples/s", flush=True)
    return launched, failures


def gemm_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """This machine's rate of a square ``n`` GEMM at ``dtype`` on 1 thread (torch is left at 1), GFLOP/s, best
    of ``repeats``: the limit a 1-thread training step's matmuls can approach."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
    a @ b  # warm-up: packing buffers, kernel selection
    return 2 * n**3 / min(common.timed(lambda: a @ b) for _ in range(repeats)) / 1e9


def step_gflops(trainer: Any, batches: Iterator[Any]) -> float:
    """Model GFLOPs of one training forward + backward of ``trainer``'s task on its next batch (FlopCounterMode:
    matmuls, the FM op by its registered formula; lookups and elementwise work count 0), outside the pipeline.
    The fused sparse optimizer updates rows in this backward and dense ``.grad`` is left filled: call it last."""
    from torch.utils.flop_counter import FlopCounterMode

    trainer.pipeline.detach()
    batch = next(batches).to(trainer.ctx.device)
    with FlopCounterMode(display=False) as counter:
        trainer.task(batch)[0].backward()
    return counter.get_total_flops() / 1e9


def measure_mfu(opts: Options, root: Path, work: Path) -> dict[str, Any]:
    """Model FLOP/s of the 1-process, 1-thread baseline training step (its median over rounds) over the 1-thread
    GEMM rate at the same precision: ``fp32`` and, where the CPU has bf16 matrix instructions, ``bf16``."""
    out: dict[str, Any] = {"gemm_n": 2048, "threads": 1, "bf16_isa": common.cpu_bf16_isa()}
    for name in ("fp32", "bf16") if out["bf16_isa"] not in ("none", "unknown") else ("fp32",):
        cfg = make_config(opts, root, c2al=False, bf16=name == "bf16", threads=1)
        rates, _, flops = _group(opts, work / f"mfu-{name}", {name: (cfg, False)}, count_flops=True)
        step_s, gflops = opts.batch_size / statistics.median(rates[name]), flops[name]
        gemm = gemm_gflops(torch.bfloat16 if name == "bf16" else torch.float32)
        out[name] = dict(step_gflop=gflops, step_s=step_s, step_gflop_per_s=gflops / step_s, gemm_gflop_per_s=gemm)
        out[name]["mfu"] = gflops / step_s / gemm
        print(f"[train_throughput] mfu {name}: {gflops / step_s:.1f} of {gemm:.1f} GFLOP/s", flush=True)
    return out


def _group(
    opts: Options, work: Path, cases: dict[str, Any], count_flops: bool = False
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, float]]:
    """Build every case of a group (a PlainTrainer, or (trainer config, separate heads)), run them interleaved,
    validate the trainers (with ``count_flops`` count one step's FLOPs) and free them. Returns samples/s per
    round, validation NE and GFLOPs per step, by case."""
    trainers = {n: build_trainer(c[0], work / f"run-{n}", c[1]) for n, c in cases.items() if isinstance(c, tuple)}
    steppers: dict[str, Callable[[], object]] = {
        n: (lambda t=trainers[n]: t[0].train_step(t[1])) if n in trainers else c.train_step for n, c in cases.items()
    }
    for step in steppers.values():
        common.timed(step, opts.warmup)  # untimed: warm caches, compile
    per_round = {name: lambda s=step: common.timed(s, opts.steps_per_round) for name, step in steppers.items()}
    seconds = common.interleaved_seconds(per_round, opts.rounds, rotate=True)
    rates = {k: [opts.steps_per_round * opts.batch_size / s for s in v] for k, v in seconds.items()}
    print("[train_throughput] samples/s: " + ", ".join(f"{k} {statistics.median(v):,.0f}" for k, v in rates.items()))
    ne = {name: t.evaluate()["primary"]["ne"] for name, (t, _) in trainers.items()}
    gflops = {name: step_gflops(t, b) for name, (t, b) in trainers.items()} if count_flops else {}
    for t, _ in trainers.values():
        t.close()
    return rates, ne, gflops


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
C2AL_RATIOS = [k for k, (a, _) in PAIRED.items() if a.startswith("c2al/")]  # pooled over the group's repeats


def per_round_ratios(rounds: dict[str, list[float]], key: str) -> Optional[list[float]]:
    """The per-round ratios behind a ``PAIRED`` ratio (None when its cases did not run)."""
    a, b = PAIRED[key]
    return [x / y for x, y in zip(rounds[a], rounds[b])] if a in rounds and b in rounds else None


def median_interval(values: list[float], repeats: int = 1, resamples: int = 4000) -> Optional[list[float]]:
    """95% percentile-bootstrap interval of the median of ``values`` (None with fewer than 3 values, or all equal).
    ``values`` are ``repeats`` equal runs of rounds (one per fresh build of a group): the bootstrap resamples
    runs, then rounds within each, so with ``repeats`` > 1 the interval carries the differences between builds."""
    import numpy as np

    if len(values) < 3 or min(values) == max(values):
        return None
    runs = np.asarray(values).reshape(repeats, -1)  # [repeats, rounds]
    rng = np.random.default_rng(0)
    picked = runs[rng.integers(0, repeats, (resamples, repeats))]  # [resamples, repeats, rounds]
    rounds = rng.integers(0, runs.shape[1], picked.shape)
    medians = np.median(np.take_along_axis(picked, rounds, axis=2).reshape(resamples, -1), axis=1)
    return [float(np.quantile(medians, q)) for q in (0.025, 0.975)]


def run(opts: Options) -> dict:
    """Run every case; returns ``{"benchmark", "config", "results", "ratios"}``."""
    if opts.cost_repeats < 1:
        raise ValueError(f"train_throughput: cost_repeats must be >= 1, got {opts.cost_repeats}")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="c2al-bench-train-") as tmp:
        work = Path(tmp)
        root = common.synthetic_root(opts, work, seed=1)
        cfg = lambda separate=False, **kw: (make_config(opts, root, **kw), separate)  # noqa: E731
        rates, ne, _ = _group(opts, work, {
            "trainer": cfg(c2al=False), "plain": PlainTrainer(opts, root), "trainer_bf16": cfg(c2al=False, bf16=True),
            "plain_bf16": PlainTrainer(opts, root, bf16=True),
        })  # fmt: skip
        large = opts.large_aux_head
        c2al_cost = {
            "trainer": cfg(c2al=False), "trainer_again": cfg(c2al=False), "trainer_c2al": cfg(c2al=True),
            "trainer_c2al_aux128": cfg(c2al=True, aux_head=large, aux_projection=opts.large_aux_projection),
            "trainer_c2al_aux128_on_h": cfg(c2al=True, aux_head=large),
        }  # fmt: skip
        for repeat in range(opts.cost_repeats):  # fresh trainers each time: instances can differ by ~1% (A/A)
            print(f"[train_throughput] C2AL cost group, repeat {repeat + 1}/{opts.cost_repeats}", flush=True)
            got, got_ne, got_gflops = _group(opts, work / f"c2al-{repeat}", c2al_cost, count_flops=repeat == 0)
            if repeat == 0:
                cost_gflops = got_gflops
                ne.update({k: v for k, v in got_ne.items() if k.startswith("trainer_c2al")})
            for k, v in got.items():  # the rounds of all repeats, in order
                rates.setdefault(f"c2al/{k}", []).extend(v)
        if opts.levers:
            lever_rates, lever_ne, _ = _group(opts, work, {
                "trainer": cfg(c2al=False), "trainer_compiled": cfg(c2al=False, compiled=True),
                "plain_compiled": PlainTrainer(opts, root, compiled=True), "trainer_c2al": cfg(c2al=True),
                "trainer_c2al_separate_heads": cfg(True, c2al=True),
                "trainer_c2al_sampled_metrics": cfg(c2al=True, metrics_every=opts.metrics_every),
            })  # fmt: skip
            rates.update({f"levers/{k}": v for k, v in lever_rates.items()})
            ne["trainer_compiled"] = lever_ne["trainer_compiled"]
        mfu = measure_mfu(opts, root, work)
        launched, failures = _launched(opts, root, work) if opts.two_procs else ({}, [])
    results: dict[str, Any] = {f"{k}_samples_per_s": statistics.median(v) for k, v in rates.items()}
    results.update(
        mfu=mfu, rounds_samples_per_s=rates, threads=opts.threads or (os.cpu_count() or 1), ratio_intervals={},
        steps_per_case=opts.warmup + opts.rounds * opts.steps_per_round, valid_ne=ne, c2al_repeat_ratios={},
        step_gflops=cost_gflops, ne_rel_change_vs_fp32={k: (v - ne["trainer"]) / ne["trainer"] for k, v in ne.items()},
        # what C2AL adds to a step's model FLOPs: noise-free, unlike the timed ratios
        c2al_extra_flops={k: v / cost_gflops["trainer"] - 1 for k, v in cost_gflops.items() if "_c2al" in k},
    )  # fmt: skip
    ratios: dict[str, Optional[float]] = {"mfu_fp32": mfu["fp32"]["mfu"], "mfu_bf16": mfu.get("bf16", {}).get("mfu")}
    ratios.update(trainer_vs_plain_fp32_2procs=None, trainer_vs_plain_bf16_2procs=None, two_procs_vs_one=None)
    for key in PAIRED:
        if (per_round := per_round_ratios(rates, key)) is None:
            continue
        ratios[key] = statistics.median(per_round)
        results["ratio_intervals"][key] = median_interval(per_round, opts.cost_repeats if key in C2AL_RATIOS else 1)
        if key in C2AL_RATIOS:  # each fresh build's own ratio (the pooled rounds hold the builds in turn)
            builds = [per_round[i : i + opts.rounds] for i in range(0, len(per_round), opts.rounds)]
            results["c2al_repeat_ratios"][key] = [statistics.median(b) for b in builds]
    if launched:
        # best of rounds: a launch is long, and a burst of other load can slow one launch by 10x
        results["launched_best_samples_per_s"] = best = {k: max(v) for k, v in launched.items()}
        results.update(launched_rounds_samples_per_s=launched, launched_failures=failures)
        ratios["trainer_vs_plain_fp32_2procs"] = best["trainer_2proc"] / best["plain_2proc"]
        ratios["trainer_vs_plain_bf16_2procs"] = best["trainer_bf16_2proc"] / best["plain_bf16_2proc"]
        ratios["two_procs_vs_one"] = best["trainer_2proc"] / best["trainer_1proc"]
    for precision in ("fp32", "bf16"):
        values = [ratios[f"trainer_vs_plain_{precision}_{n}"] for n in ("1proc", "2procs")]
        ratios[f"trainer_vs_plain_{precision}"] = min(v for v in values if v is not None)
    ratios["trainer_vs_plain_pytorch"] = min(ratios["trainer_vs_plain_fp32"], ratios["trainer_vs_plain_bf16"])  # type: ignore[type-var]
    results["load_average_1min"] = [load_before, os.getloadavg()[0]]
    spec = str(common.COHORT_SPEC.relative_to(common.REPO))
    config = {**dataclasses.asdict(opts), "machine": common.machine(), "spec": spec}
    return {"benchmark": "train_throughput", "config": config, "results": results, "ratios": ratios}


RATIO_LINES = [  # (ratio, goal, what) rows of the ratio table
    ("mfu_fp32", "report", "1-process 1-thread training step's model FLOP/s / 1-thread fp32 2048 GEMM FLOP/s"),
    ("mfu_bf16", "report", "the same under bf16 autocast / 1-thread bf16 2048 GEMM"),
    ("trainer_vs_plain_pytorch", "report", "the smaller of fp32 and bf16 below"),
    ("trainer_vs_plain_fp32", "report", "min over 1 and 2 processes"),
    ("trainer_vs_plain_bf16", "report", "min over 1 and 2 processes; both sides under bf16 autocast"),
    *((f"trainer_vs_plain_{p}_{n}", "", "") for p in ("fp32", "bf16") for n in ("1proc", "2procs")),
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
    rounds, intervals = r["rounds_samples_per_s"], r["ratio_intervals"]
    lines = [
        *common.results_header("Training throughput", c, command),
        "",
        f"Torch threads in-process: {r['threads']}. Every in-process case did {r['steps_per_case']} steps on the same "
        f"data ({c['rounds']} rounds of {c['steps_per_round']} step(s) per case, order rotated each round); the "
        f"`c2al/` rows pool {c['cost_repeats']} fresh builds of their group (their NE is the first build's). "
        "Rates are medians over rounds, ratios medians of per-round ratios with 95% bootstrap intervals. Load average "
        f"(1 min) before / after: {r['load_average_1min'][0]:.1f} / {r['load_average_1min'][1]:.1f}.",
        "",
    ]
    # each NE on the row of the case ``valid_ne`` kept it from: the C2AL cases' c2al/, trainer_compiled's levers/
    row = lambda case: ("c2al/" if "_c2al" in case else "levers/" if case == "trainer_compiled" else "") + case  # noqa: E731
    ne = {row(k): f"{100 * v:+.4f}%" for k, v in r["ne_rel_change_vs_fp32"].items()}
    rows = [
        [name, f"{r[f'{name}_samples_per_s']:,.0f}", f"{min(v):,.0f} .. {max(v):,.0f}", ne.get(name, "")]
        for name, v in rounds.items()
    ]
    header = ["case", "samples/s (median)", "per round (min .. max)", "validation NE vs fp32 trainer"]
    lines += common.md_table(header, rows, "lrlr")
    for name, v in r.get("launched_rounds_samples_per_s", {}).items():
        best, launches = r["launched_best_samples_per_s"][name], ", ".join(f"{x:,.0f}" for x in v)
        lines.append(f"| launched {name} (best) | {best:,.0f} | launches: {launches} | |")
    lines += [f"\nA launch failed and was launched once more: {failure}" for failure in r.get("launched_failures", [])]
    rows = []
    for key, goal, what in RATIO_LINES:
        if key in q:
            per = per_round_ratios(rounds, key) if key in PAIRED else None
            repeats = r["c2al_repeat_ratios"].get(key, [])
            if len(repeats) > 1:
                what += ("; " if what else "") + "repeats: " + ", ".join(f"{v:.3f}" for v in repeats)
            ci = intervals.get(key)
            rows.append([
                f"`{key}`", "n/a" if q[key] is None else f"{q[key]:.3f}", f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "",
                f"{min(per):.3f} .. {max(per):.3f}" if per else "", goal, what,
            ])  # fmt: skip
    header = ["ratio", "value", "95% interval", "per-round range", "goal", "what"]
    lines += ["", *common.md_table(header, rows, "lrllll")]
    return "\n".join([*lines, "", *_notes(out), ""])


def _notes(out: dict) -> list[str]:
    """What the measured numbers add to the tables: MFU, model FLOPs, bf16 speed, the NE check."""
    r, m, extra = out["results"], out["results"]["mfu"], out["results"]["c2al_extra_flops"]
    mfu = [f"{p}: {m[p]['step_gflop_per_s']:.1f} of {m[p]['gemm_gflop_per_s']:.1f} GFLOP/s = {m[p]['mfu']:.3f}"
           for p in ("fp32", "bf16") if p in m]  # fmt: skip
    bf16 = [f"{s} {r[f'{s}_bf16_samples_per_s'] / r[f'{s}_samples_per_s']:.3f}" for s in ("trainer", "plain")]
    checked = {k: v for k, v in r["ne_rel_change_vs_fp32"].items() if k in ("trainer_bf16", "trainer_compiled")}
    return [
        "## Notes",
        "",
        f"- MFU of the 1-process, 1-thread training step (FlopCounterMode's model FLOPs per step / step time, over "
        f"the 1-thread rate of a square {m['gemm_n']} GEMM at the same precision): " + "; ".join(mfu)
        + (f" (measured by `{m['command']}`)." if m.get("command") else "."),
        f"- Model FLOPs of a training step: baseline {r['step_gflops']['trainer']:.1f} GFLOP; C2AL adds "
        + ", ".join(f"`{case}` +{100 * v:.1f}%" for case, v in extra.items())
        + "; a step whose time followed its FLOPs would give C2AL on / off "
        + ", ".join(f"{1 / (1 + v):.3f}" for v in extra.values()) + ".",
        f"- bf16 / fp32 samples/s, in process: {', '.join(bf16)} (the machine line names the bf16 ISA).",
        f"- NE check (validation NE after equal steps vs the fp32 eager trainer, allowed +-{100 * NE_TOLERANCE:.1f}%): "
        + ", ".join(f"`{k}` {100 * v:+.4f}%" for k, v in checked.items())
        + (": within." if all(abs(v) <= NE_TOLERANCE for v in checked.values()) else ": OUTSIDE the tolerance.")
        + " The `trainer_c2al*` rows show what the aux losses do to the primary NE after the same steps.",
    ]  # fmt: skip


def main(argv: Optional[list[str]] = None) -> int:
    parser = common.base_parser(__doc__, "small sizes (about a minute)")
    common.add_option_flags(parser, Options, only=["threads"])
    parser.add_argument(
        "--only", choices=["mfu"], default=None,
        help="mfu: measure only the GEMM limit and the 1-thread step (a few minutes); with --record it is merged "
        "into benchmarks/results/train_throughput.{json,md} under its own command",
    )  # fmt: skip
    args = parser.parse_args(argv)
    opts = common.options_from_args(Options, args, Options(**QUICK) if args.quick else None)
    if args.only != "mfu":
        return common.finish("train_throughput", run(opts), _markdown, argv, args.quick, args.json, args.record)
    with tempfile.TemporaryDirectory(prefix="c2al-bench-mfu-") as tmp:
        mfu = measure_mfu(opts, common.synthetic_root(opts, Path(tmp), seed=1), Path(tmp))
    mfu["command"] = common.command_line("train_throughput", argv).strip()
    print(json.dumps(mfu, indent=2))
    if args.json:
        common.write_json(args.json, mfu)
    if args.record and not args.quick:  # the record keeps its own command; the MFU entry names this one
        path, md = common.RESULTS_DIR / "train_throughput.json", common.RESULTS_DIR / "train_throughput.md"
        out = json.loads(path.read_text())
        out["results"]["mfu"] = mfu
        out["ratios"].update(mfu_fp32=mfu["fp32"]["mfu"], mfu_bf16=mfu.get("bf16", {}).get("mfu"))
        common.write_json(path, out)
        common.write_text(md, _markdown(out, md.read_text().split("Command: `", 1)[1].split("`", 1)[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
