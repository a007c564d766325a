"""Sharding plan past one machine, by simulation: torchrec's planner for a CUDA cluster, no GPU needed.

python -m benchmarks.plan --config launch/configs/production.toml --world-size 64 [--record] [--<option> ...]

The run's model is built on the meta device as the trainer builds it (fused sparse optimizer, its sharding
types) and ``EmbeddingShardingPlanner.plan`` runs in one process for ``world_size / local_world_size`` hosts
(H100 defaults). Reported: the plan per table, memory and perf estimates per rank, the dense arch's FLOPs
(``FlopCounterMode``) with a step-time estimate, and the planner's own log. Prints the markdown; ``--record``
writes ``benchmarks/results/plan_<config>_<world_size>.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from importlib.metadata import version
from itertools import groupby
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchrec.distributed.planner import EmbeddingShardingPlanner
from torchrec.distributed.planner import types as planner_types
from torchrec.distributed.planner.stats import EmbeddingStats
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import ParameterConstraints, ShardingOption, Topology
from torchrec.distributed.sharding_plan import get_default_sharders

from benchmarks import common
from benchmarks.common import RESULTS_DIR
from c2al_rec.config import load_config
from c2al_rec.data.schema import SCHEMA_FILE, DatasetSchema, schema_from_dict
from c2al_rec.distributed.sharding import SHARDED_TYPES, apply_sparse_optimizer
from c2al_rec.modules.model import C2ALModel, build_run_model

GB = 1e9  # decimal GB: what hardware datasheets quote (80 GB HBM, 50 GB/s)
PLANNER_LOG_LINES = 120  # lines of the planner's log recorded


@dataclass
class Options:
    """Planner inputs (each field is a ``--flag``; defaults describe an H100 cluster)."""

    config: str = "launch/configs/production.toml"
    """Run config (TOML): model, batch size, sparse optimizer, data.path."""
    world_size: int = 64
    """GPUs in the job (hosts = world_size / local_world_size)."""
    local_world_size: int = 8
    """GPUs per host."""
    hbm_gb: float = 80.0
    """HBM per GPU in GB (H100 SXM: 80)."""
    ddr_gb: float = 2048.0
    """Host memory per host in GB, shared by its GPUs (DGX H100: 2048)."""
    batch_size: int = 0
    """Per-rank batch size (0: the config's data.batch_size)."""
    schema: str = "launch/configs/production_schema.json"
    """Schema JSON used when data.path holds no schema.json."""
    multi_hot_ids: float = 20.0
    """Mean ids per row of a multi-hot feature (the planner's pooling factor; the schema has none)."""
    reservation: float = 0.15
    """Fraction of HBM the planner keeps free for the dense arch, activations and buffers."""
    intra_host_gbps: float = 450.0
    """GPU-to-GPU bandwidth within a host, GB/s per GPU (NVLink 4, one direction)."""
    inter_host_gbps: float = 50.0
    """Bandwidth across hosts, GB/s per GPU (one 400 Gb/s InfiniBand NIC per GPU)."""
    hbm_bw_gbps: float = 3350.0
    """HBM bandwidth, GB/s (H100 SXM HBM3)."""
    peak_tflops: float = 989.0
    """Dense bf16 tensor-core peak, TFLOP/s (H100 SXM, no sparsity)."""
    mfu: float = 0.3
    """Fraction of peak the dense arch reaches (small GEMMs, LayerNorms, bf16 autocast)."""
    allreduce_latency_us: float = 10.0
    """Per-hop latency of the dense gradient all-reduce, microseconds."""
    sharding_types: str = ""
    """Comma-separated sharding types the planner may use (empty: the trainer's, c2al_rec SHARDED_TYPES)."""
    json: str = ""
    """Also write the JSON here."""
    md: str = ""
    """Also write the markdown here."""
    record: bool = False
    """Record the result as benchmarks/results/plan_<config stem>_<world_size>.{json,md} (overwrites)."""

    @property
    def gpus_per_host(self) -> int:
        """GPUs the job uses per host (a job smaller than a host uses part of one)."""
        return min(self.local_world_size, self.world_size)

    def __post_init__(self) -> None:
        if min(self.world_size, self.local_world_size) <= 0 or self.world_size % self.gpus_per_host:
            hosts = f"hosts of local_world_size {self.local_world_size}"
            raise ValueError(f"world_size {self.world_size} is not a positive whole number of {hosts}")
        if not (0.0 < self.mfu <= 1.0 and 0.0 <= self.reservation < 1.0):
            raise ValueError(f"mfu must be in (0, 1] and reservation in [0, 1), got {self.mfu}, {self.reservation}")


class _DenseParts(torch.nn.Module):
    """The model's dense part as one module call, so the FLOP counter names its parts ``_DenseParts.model.<part>``."""

    def __init__(self, model: C2ALModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, dense_BD: torch.Tensor, x_BND: torch.Tensor) -> dict[str, torch.Tensor]:
        self.model.dense_arch(dense_BD)
        return self.model.forward_from_tokens(x_BND)


def dense_flops(model: C2ALModel, num_dense: int) -> dict[str, Any]:
    """Forward FLOPs per sample of the dense part (dense arch, DHEN, heads) on the meta device: ``FlopCounterMode``
    counts every matmul (Linear, the FM op's bmm pair in its reference form, attention), not element-wise ops."""
    batch, counter = 64, FlopCounterMode(display=False)
    model.use_reference_fm(True)
    with counter, torch.no_grad():
        _DenseParts(model)(
            torch.empty(batch, num_dense, device="meta"),
            torch.empty(batch, model.num_tokens, model.sparse_arch.dim, device="meta"),
        )
    model.use_reference_fm(False)
    per_module = {name.removeprefix("_DenseParts.model."): c for name, c in counter.get_flop_counts().items()}

    def per_sample(names: Iterable[str], op: Any = None) -> float:
        """FLOPs per sample of the named modules (``op``: of that aten op alone)."""
        counts = [per_module[n] for n in names if n in per_module]
        return sum(sum(c.values()) if op is None else c.get(op, 0) for c in counts) / batch

    parts = {part: per_sample([part]) for part in ("dense_arch", "over_arch", "primary_head") if part in per_module}
    aux = [name for name in per_module if name.count(".") == 1 and name.startswith("aux_heads.")]
    if aux:
        parts["aux_heads"] = per_sample(aux)
    # Heads that read the same input run their first layers as one GEMM outside their modules
    # (``mlps_on_shared_input``): the counter books it on the model itself, named here so the parts add up to the total.
    total = counter.get_total_flops() / batch
    if total > sum(parts.values()):
        parts["heads_shared_gemm"] = total - sum(parts.values())
    fm = model.fm_modules()
    return {
        "fwd_flops_per_sample": total, "fwd_flops_by_part": parts, "fm_flops_per_sample": per_sample(fm),
        "fm_bmm_flops_per_sample": per_sample(fm, torch.ops.aten.bmm),
    }  # fmt: skip


def make_topology(opts: Options) -> Topology:
    """A CUDA topology of world_size / local_world_size hosts (torchrec bandwidths are bytes per ms)."""
    per_ms = GB / 1000.0
    trainer = planner_types.TrainerConfig(
        world_size=opts.world_size, local_world_size=opts.gpus_per_host,
        hbm_cap_bytes=int(opts.hbm_gb * GB), ddr_cap_bytes=int(opts.ddr_gb * GB / opts.local_world_size),
    )  # fmt: skip
    hardware = planner_types.HardwareConfig(
        intra_host_bw=opts.intra_host_gbps * per_ms, inter_host_bw=opts.inter_host_gbps * per_ms,
        hbm_mem_bw=opts.hbm_bw_gbps * per_ms,
    )  # fmt: skip
    kernel = planner_types.KernelConfig(compute_device="cuda", use_hardware_based_bandwidth=True)
    return planner_types.TopologyFactory.create_topology(trainer, hardware, kernel)


def plan(opts: Options) -> dict[str, Any]:
    """Run the planner and the dense estimates; the JSON-able result."""
    cfg = load_config(opts.config)
    data_schema = Path(cfg.data.path) / SCHEMA_FILE  # the dataset's schema when it has one, else --schema
    schema_path = data_schema if cfg.data.path and data_schema.is_file() else Path(opts.schema)
    schema = schema_from_dict(json.loads(schema_path.read_text()), schema_path.parent)
    batch_size = opts.batch_size or cfg.data.batch_size
    model = build_run_model(cfg, schema, torch.device("meta"))  # the trainer's model, fused sparse optimizer
    apply_sparse_optimizer(model, cfg.train.sparse_optimizer, cfg.train.sparse_lr, torch.device("cuda"))
    reservation, stats = FixedPercentageStorageReservation(opts.reservation), EmbeddingStats()
    types = [t.strip() for t in opts.sharding_types.split(",") if t.strip()] or list(SHARDED_TYPES)  # the trainer's
    ids_per_row = {f"t_{f.name}": opts.multi_hot_ids if f.multi_hot else 1.0 for f in schema.sparse}
    constraints = {  # the trainer's sharding types and each feature's mean ids per row
        name: ParameterConstraints(sharding_types=types, pooling_factors=[ids]) for name, ids in ids_per_row.items()
    }
    planner = EmbeddingShardingPlanner(
        topology=make_topology(opts), batch_size=batch_size, storage_reservation=reservation, constraints=constraints,
        stats=stats, debug=True,
    )  # fmt: skip
    plan_seconds = common.timed(lambda: planner.plan(model, get_default_sharders()))
    log_lines = stats._stats_table  # the lines EmbeddingStats logs (at INFO, which is off by default)
    if len(log_lines) > PLANNER_LOG_LINES:  # a row per rank: at 512 GPUs the log alone is ~200 KB
        more = f"... {len(log_lines) - PLANNER_LOG_LINES} more lines (rerun the command)"
        log_lines = log_lines[:PLANNER_LOG_LINES] + [more]
    best: list[ShardingOption] = planner._best_plan or []  # the planner keeps its chosen options here
    assert best, "the planner returned no plan"
    kjt_hbm = reservation._kjt_storage.hbm  # the planner's KJT buffer estimate, set by its reserve()
    tables = _tables(best, schema)
    ranks = _ranks(best, opts.world_size, kjt_hbm)
    dense = _dense(model, schema, opts, batch_size)
    per_rank_hbm = [r["hbm_bytes"] + dense["state_bytes_per_rank"] for r in ranks]
    sparse_perf = [r["perf_ms"]["total"] for r in ranks]
    comms = [r["perf_ms"]["fwd_comms"] + r["perf_ms"]["bwd_comms"] + r["perf_ms"]["input_dist_comms"] for r in ranks]
    compute = [r["perf_ms"]["fwd_compute"] + r["perf_ms"]["bwd_compute"] for r in ranks]
    critical = _critical_path(best)
    step = {
        "embedding_comms_ms_max_rank": max(comms), "embedding_compute_ms_max_rank": max(compute),
        "critical_path_comms_ms": critical["comms_ms"], "critical_path_compute_ms": critical["compute_ms"],
        "dense_compute_ms": dense["train_ms_per_step"], "dense_allreduce_ms": dense["allreduce_ms"],
    }  # fmt: skip
    parts = {
        "embedding all-to-all": "critical_path_comms_ms", "dense over-arch compute": "dense_compute_ms",
        "dense gradient all-reduce": "dense_allreduce_ms", "embedding lookups": "critical_path_compute_ms",
    }  # fmt: skip
    step["bottleneck"] = max(parts, key=lambda part: step[parts[part]])
    config = {
        **dataclasses.asdict(opts), "batch_size": batch_size, "global_batch_size": batch_size * opts.world_size,
        "hosts": opts.world_size // opts.gpus_per_host, "schema_path": str(schema_path),
        "embedding_dim": cfg.model.embedding_dim, "sparse_optimizer": cfg.train.sparse_optimizer,
        "sharding_types_allowed": types, "num_tables": len(schema.sparse), "num_dense_features": len(schema.dense),
    }  # fmt: skip
    memory = {
        "hbm_cap_bytes": int(opts.hbm_gb * GB), "embedding_bytes_total": sum(t["storage_hbm_bytes"] for t in tables),
        "embedding_weight_bytes_total": sum(t["rows"] * t["dim"] * 4 for t in tables),
        "kjt_bytes_per_rank": kjt_hbm, "dense_state_bytes_per_rank": dense["state_bytes_per_rank"],
        "hbm_per_rank_bytes": _summary(per_rank_hbm),
        "largest_rank": max(range(len(per_rank_hbm)), key=per_rank_hbm.__getitem__),
        "ddr_per_rank_bytes": _summary([r["ddr_bytes"] for r in ranks]),
    }  # fmt: skip
    perf = {
        "per_rank_total_ms": _summary(sparse_perf), "per_rank_comms_ms": _summary(comms),
        "per_rank_compute_ms": _summary(compute), "critical_path": critical,
        "slowest_rank": max(range(len(sparse_perf)), key=sparse_perf.__getitem__),
    }  # fmt: skip
    return {
        "benchmark": "plan", "config": config, "machine": common.machine(), "torch": torch.__version__,
        "torchrec": version("torchrec"), "plan_seconds": plan_seconds, "tables": tables,
        "sharding_type_counts": dict(Counter(t["sharding_type"] for t in tables)), "ranks": ranks, "memory": memory,
        "perf": perf, "all_to_all": _all_to_all_bytes(best, ids_per_row, opts, batch_size), "dense": dense,
        "step_estimate": step, "planner_summary": log_lines,
    }  # fmt: skip


def _summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "max": max(values), "mean": statistics.mean(values)}


PERF_KEYS = ("fwd_compute", "fwd_comms", "bwd_compute", "bwd_comms", "input_dist_comms")  # torchrec's Perf, ms


def _tables(best: list[ShardingOption], schema: DatasetSchema) -> list[dict[str, Any]]:
    """One row per table, largest first: how it is sharded and where."""
    multi_hot = {f"t_{f.name}": f.multi_hot for f in schema.sparse}
    rows = []
    for so in sorted(best, key=lambda so: -so.tensor.shape[0]):
        shards = [
            {"rank": s.rank, "size": list(s.size), "offset": list(s.offset), "hbm_bytes": s.storage.hbm,
             "perf_ms": {**{k: getattr(s.perf, k) for k in PERF_KEYS}, "total": s.perf.total}}
            for s in so.shards
        ]  # fmt: skip
        rows.append({
            "table": so.name, "rows": int(so.tensor.shape[0]), "dim": int(so.tensor.shape[1]),
            "multi_hot": multi_hot[so.name], "sharding_type": so.sharding_type,
            "compute_kernel": so.compute_kernel, "ranks": sorted({s.rank for s in so.shards}),
            "num_shards": len(so.shards), "storage_hbm_bytes": sum(s["hbm_bytes"] for s in shards),
            "perf_ms": {"total": so.total_perf}, "shards": shards,
        })  # fmt: skip
    return rows


def _ranks(best: list[ShardingOption], world_size: int, kjt_hbm: int) -> list[dict[str, Any]]:
    """Per rank: embedding HBM (+ the planner's KJT estimate), DDR and the summed shard perf."""
    ranks = [
        {"rank": r, "hbm_bytes": kjt_hbm, "ddr_bytes": 0, "num_shards": 0, "perf_ms": dict.fromkeys(PERF_KEYS, 0.0)}
        for r in range(world_size)
    ]
    for s in (s for so in best for s in so.shards):
        r = ranks[s.rank]
        r["num_shards"] += 1
        r["hbm_bytes"] += s.storage.hbm
        r["ddr_bytes"] += s.storage.ddr
        for k in PERF_KEYS:
            r["perf_ms"][k] += getattr(s.perf, k)
    for r in ranks:  # as torchrec's Perf.total: the input dist's comms are not in it
        r["perf_ms"]["total"] = sum(r["perf_ms"][k] for k in PERF_KEYS if k != "input_dist_comms")
    return ranks


def _critical_path(best: list[ShardingOption]) -> dict[str, float]:
    """torchrec's critical-path estimate (stats._calculate_critical_path): per module x sharding type and
    direction, the slowest rank's comms; per direction, the slowest rank's compute; summed."""
    comms: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    comp: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for so in best:
        for s in so.shards:
            comms[f"{so.sharding_type}_fwd"][s.rank] += s.perf.fwd_comms
            comms[f"{so.sharding_type}_bwd"][s.rank] += s.perf.bwd_comms
            comp["fwd"][s.rank] += s.perf.fwd_compute
            comp["bwd"][s.rank] += s.perf.bwd_compute
    by_type = {key: max(per_rank.values()) for key, per_rank in comms.items()}
    comms_ms, compute_ms = sum(by_type.values()), sum(max(v.values()) for v in comp.values())
    return {"comms_ms": comms_ms, "compute_ms": compute_ms, "total_ms": comms_ms + compute_ms, "comms_by_type": by_type}


def _all_to_all_bytes(best: list[ShardingOption], ids: dict[str, float], opts: Options, batch: int) -> dict[str, Any]:
    """Embedding bytes per rank per step, by a simple count (fp32 pooled outputs, int64 ids + int32 lengths;
    ``ids``: mean ids per row of each table).

    Receive side: every rank gets the pooled embedding of every feature for its own batch rows.
    Send side: a table-/column-wise shard sends its columns for the whole global batch; a row-wise
    shard sends a partial sum for the whole global batch (reduce-scatter); a table-row-wise shard
    reduces inside its host first, so the host's ranks share the sending. Backward moves the same
    bytes the other way. The cross-host share is the fraction of peer ranks on other hosts.
    """
    world, local = opts.world_size, opts.gpus_per_host
    global_batch = batch * world
    recv = batch * sum(int(so.tensor.shape[1]) for so in best) * 4
    send, recv_ids = [0.0] * world, 0.0
    for so in best:
        n_ranks = len({s.rank for s in so.shards})
        for s in so.shards:
            share = 1.0 / n_ranks if so.sharding_type == "table_row_wise" else 1.0
            send[s.rank] += global_batch * s.size[1] * 4 * share
        copies = n_ranks if so.sharding_type == "column_wise" else 1  # CW shards each get all ids
        recv_ids += global_batch * (ids[so.name] * 8 + 4) * copies
    cross = (world - local) / world if world > local else 0.0
    busiest = max(range(world), key=send.__getitem__)
    link_ms = 2 * cross / (opts.inter_host_gbps * GB) * 1000  # per byte, forward + backward across hosts
    return {
        "global_batch": global_batch, "recv_output_bytes_per_rank": recv, "send_output_bytes_max_rank": send[busiest],
        "send_output_bytes_mean": statistics.mean(send), "busiest_sender_rank": busiest,
        "ids_bytes_all_owners": recv_ids, "cross_host_fraction": cross,
        "busiest_sender_ms_at_link_rate": send[busiest] * link_ms, "receiver_ms_at_link_rate": recv * link_ms,
    }  # fmt: skip


def _dense(model: C2ALModel, schema: DatasetSchema, opts: Options, batch_size: int) -> dict[str, Any]:
    """Dense parameters, FLOPs, per-rank state bytes and step-time estimates (compute, all-reduce)."""
    ebc = {id(p) for p in model.sparse_arch.parameters()}
    named = [(n, p) for n, p in model.named_parameters() if id(p) not in ebc]
    params = sum(p.numel() for _, p in named)
    by_part: dict[str, int] = defaultdict(int)
    for n, p in named:
        by_part[n.split(".", 1)[0]] += p.numel()
    flops = dense_flops(model, len(schema.dense))
    train_flops = 3 * flops["fwd_flops_per_sample"]  # backward ~ 2x forward
    compute_ms = train_flops * batch_size / (opts.peak_tflops * 1e12 * opts.mfu) * 1000
    # DDP all-reduce of fp32 gradients, hierarchical as NCCL runs it on multi-NIC hosts: reduce-scatter
    # over NVLink inside the host, all-reduce of each GPU's 1/L share across hosts on its own NIC (so a
    # host's L NICs work together: torchrec's planner also takes all-reduce bandwidth = inter_host_bw x L),
    # all-gather inside the host; plus a latency per hop (~2 log2 W hops for NCCL's tree at scale).
    world, local = opts.world_size, opts.gpus_per_host
    hosts = world // local
    grad_bytes = params * 4
    intra_ms = 2 * (local - 1) / local * grad_bytes / (opts.intra_host_gbps * GB) * 1000
    inter_ms = 2 * (hosts - 1) / hosts * grad_bytes / local / (opts.inter_host_gbps * GB) * 1000
    bw_ms = intra_ms + inter_ms
    lat_ms = 2 * math.log2(world) * opts.allreduce_latency_us / 1000  # 2 log2 W hops (none on one GPU)
    per_sample_ms = train_flops / (opts.peak_tflops * 1e12 * opts.mfu) * 1000
    by_batch = [
        {"batch_size": b, "dense_compute_ms": per_sample_ms * b, "allreduce_ms": bw_ms + lat_ms}
        for b in (4096, 2048, 1024, 512, 256)
    ]
    return {
        "params": params, "compute_vs_allreduce_by_batch": by_batch,
        "crossover_batch_size": (bw_ms + lat_ms) / per_sample_ms, "params_by_part": dict(by_part),
        **flops, "train_flops_per_sample": train_flops, "train_ms_per_step": compute_ms,
        "state_bytes_per_rank": params * 16,  # fp32 weights + grads + AdamW exp_avg, exp_avg_sq
        "grad_bytes": grad_bytes, "allreduce_ms": bw_ms + lat_ms, "allreduce_bandwidth_ms": bw_ms,
        "allreduce_latency_ms": lat_ms,
    }  # fmt: skip


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f}"  # GiB


def _ranks_text(ranks: list[int]) -> str:
    """Sorted ranks as runs: ``0-3,8``."""
    runs = [[r for _, r in run] for _, run in groupby(enumerate(ranks), lambda ir: ir[1] - ir[0])]  # r - i: constant
    return ",".join(f"{run[0]}" if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs) or "-"


def _shards_text(shards: list[dict[str, Any]]) -> str:
    """Shard sizes, alike ones counted: ``4 x [1,000x64]``."""
    sizes = Counter(f"{s['size'][0]:,}x{s['size'][1]}" for s in shards)
    return ", ".join(f"{n} x [{k}]" if n > 1 else f"[{k}]" for k, n in sizes.items())


def _listing(parts: dict[str, float], fmt: str) -> str:
    return ", ".join(f"{k} {fmt.format(v)}" for k, v in parts.items())


def markdown(out: dict[str, Any], command: str) -> str:
    """The results markdown, from the JSON record alone."""
    c, m, p, d, s, a = out["config"], out["memory"], out["perf"], out["dense"], out["step_estimate"], out["all_to_all"]
    hbm, cp = m["hbm_per_rank_bytes"], p["critical_path"]
    plan_rows = [
        [t["table"], f"{t['rows']:,}", t["dim"], "yes" if t["multi_hot"] else "", t["sharding_type"],
         t["compute_kernel"], _ranks_text(t["ranks"]), _shards_text(t["shards"]), _gib(t["storage_hbm_bytes"]),
         f"{t['perf_ms']['total']:.3f}"]
        for t in out["tables"]
    ]  # fmt: skip
    plan_head = ["table", "rows", "dim", "multi-hot", "sharding", "kernel", "ranks", "shards (rows x cols)", "HBM GiB",
                 "perf ms"]  # fmt: skip
    hbm_rows = [["min", hbm["min"]], ["mean", hbm["mean"]], [f"max (rank {m['largest_rank']})", hbm["max"]]]
    hbm_rows = [[k, _gib(v)] for k, v in hbm_rows + [["cap", m["hbm_cap_bytes"]]]]
    perf_rows = [
        [k, *(f"{p[f'per_rank_{k}_ms'][x]:.3f}" for x in ("min", "mean", "max"))] for k in ("total", "comms", "compute")
    ]
    batch_rows = [
        [r["batch_size"], f"{r['dense_compute_ms']:.3f}", f"{r['allreduce_ms']:.3f}"]
        for r in d["compute_vs_allreduce_by_batch"]
    ]
    step_parts = {
        "embedding all-to-all (planner critical path, comms)": "critical_path_comms_ms",
        "embedding lookups (planner critical path, compute)": "critical_path_compute_ms",
        f"dense over-arch fwd+bwd (FLOPs at {c['mfu']:.0%} of peak)": "dense_compute_ms",
        "dense gradient all-reduce": "dense_allreduce_ms",
    }
    step_rows = [[part, f"{s[key]:.3f}"] for part, key in step_parts.items()]
    blocks = [  # paragraphs and tables (lists of lines), a blank line between each
        f"# Sharding plan: {Path(c['config']).stem}, {c['world_size']} GPUs ({c['hosts']} hosts x "
        f"{min(c['local_world_size'], c['world_size'])})",
        f"Machine (where the planner ran; no GPU is needed to plan): {out['machine']}; torch {out['torch']}, "
        f"torchrec {out['torchrec']}. Planning took {out['plan_seconds']:.1f} s.",
        f"Command: `{command}`",
        "Config: " + ", ".join(f"{k}={v}" for k, v in c.items()),
        "## Plan per table",
        common.md_table(plan_head, plan_rows, "lrrlllllrr"),
        "## Memory per rank",
        f"Embedding tables with row-wise Adagrad state, all ranks: {_gib(m['embedding_bytes_total'])} GiB "
        f"(fp32 weights alone {_gib(m['embedding_weight_bytes_total'])} GiB). Per rank: embedding shards + the "
        f"planner's KJT buffer estimate ({_gib(m['kjt_bytes_per_rank'])} GiB) + dense parameters, gradients and "
        f"AdamW state ({_gib(m['dense_state_bytes_per_rank'])} GiB, replicated). Activations are not counted: "
        f"they live in the {c['reservation']:.0%} reservation.",
        common.md_table(["HBM per rank", "GiB"], hbm_rows, "lr"),
        f"Host memory (DDR) used by the plan per rank: max {_gib(m['ddr_per_rank_bytes']['max'])} GiB.",
        "## Planner perf estimates (embeddings; ms per step)",
        common.md_table(["per rank", "min", "mean", "max"], perf_rows, "lrrr"),
        f"Slowest rank: {p['slowest_rank']}. Critical path (torchrec's definition: slowest rank per "
        f"sharding type and direction for comms, per direction for compute): comms {cp['comms_ms']:.3f} ms, "
        f"compute {cp['compute_ms']:.3f} ms, total {cp['total_ms']:.3f} ms. Comms by type: "
        f"{_listing(cp['comms_by_type'], '{:.3f}')}.",
        f"Slowest rank's breakdown (ms): {_listing(out['ranks'][p['slowest_rank']]['perf_ms'], '{:.3f}')}.",
        "Embedding traffic per step (own count; fp32 pooled outputs, forward and again backward): every rank "
        f"receives {a['recv_output_bytes_per_rank'] / 1e6:.1f} MB for its {c['batch_size']} rows; the busiest sender "
        f"(rank {a['busiest_sender_rank']}) sends {a['send_output_bytes_max_rank'] / 1e6:.1f} MB (its tables' "
        f"columns for the global batch of {a['global_batch']:,}), the mean rank "
        f"{a['send_output_bytes_mean'] / 1e6:.1f} MB. {a['cross_host_fraction']:.0%} of peers are on other hosts: "
        f"forward + backward across hosts take {a['busiest_sender_ms_at_link_rate']:.2f} ms for the busiest sender "
        f"and {a['receiver_ms_at_link_rate']:.2f} ms for a receiver at {c['inter_host_gbps']:g} GB/s. Ids to the "
        f"table owners: {a['ids_bytes_all_owners'] / 1e6:.1f} MB in all.",
        "## Dense arch (replicated, data-parallel)",
        f"Parameters: {d['params']:,} ({_listing(d['params_by_part'], '{:,}')}). Forward FLOPs per sample: "
        f"{d['fwd_flops_per_sample'] / 1e6:.1f} M ("
        + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in d["fwd_flops_by_part"].items())
        + f"; of which the FM modules {d['fm_flops_per_sample'] / 1e6:.1f} M, their X^T Y and X T bmm "
        f"{d['fm_bmm_flops_per_sample'] / 1e6:.2f} M). Training ~3x forward: "
        f"{d['train_flops_per_sample'] / 1e6:.1f} MFLOP per sample.",
        f"Dense compute per step at {c['peak_tflops']:g} TFLOP/s x {c['mfu']:.0%}: {d['train_ms_per_step']:.3f} ms. "
        f"Gradient all-reduce ({d['grad_bytes'] / 1e6:.1f} MB fp32): {d['allreduce_ms']:.3f} ms "
        f"(bandwidth {d['allreduce_bandwidth_ms']:.3f} + latency {d['allreduce_latency_ms']:.3f}).",
        f"Dense compute vs gradient all-reduce at {c['world_size']} GPUs by per-rank batch (the all-reduce does not "
        f"shrink with the batch; it exceeds the compute below a per-rank batch of {d['crossover_batch_size']:,.0f}):",
        common.md_table(["per-rank batch", "dense fwd+bwd ms", "all-reduce ms"], batch_rows, "rrr"),
        "## Step estimate",
        common.md_table(["part", "ms"], step_rows, "lr"),
        f"Largest part: **{s['bottleneck']}**. TrainPipelineSparseDist overlaps the next batch's id all-to-all "
        "with this batch's dense compute; the pooled-embedding all-to-all and the dense all-reduce (DDP overlaps "
        "it with backward) are the parts that can stay exposed.",
        "## The planner's own log",
        "<details><summary>torchrec EmbeddingStats output</summary>",
        ["```", *out["planner_summary"], "```"],
        "</details>",
    ]
    return "\n\n".join(b if isinstance(b, str) else "\n".join(b) for b in blocks) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    common.add_option_flags(parser, Options)
    try:
        opts = common.options_from_args(Options, parser.parse_args(argv))
    except ValueError as e:
        parser.error(str(e))
    out = plan(opts)
    text = markdown(out, common.command_line("plan", argv).strip())
    stem = RESULTS_DIR / f"plan_{Path(opts.config).stem}_{opts.world_size}"  # the record's files (--record)
    md_paths = [path for path in (opts.md, f"{stem}.md" if opts.record else "") if path]
    json_paths = [path for path in (opts.json, f"{stem}.json" if opts.record else "") if path]
    for path in md_paths:
        common.write_text(path, text)
    for path in json_paths:
        common.write_json(path, out)
    print(f"wrote {', '.join(md_paths + json_paths)}" if md_paths or json_paths else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
