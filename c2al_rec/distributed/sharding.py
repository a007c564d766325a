"""DMP construction: planner + topology for this job, fused sparse optimizer, dense optimizer.

Example::

    ctx = init_distributed()
    apply_sparse_optimizer(model, "rowwise_adagrad", lr=0.05)   # on the unsharded model
    dmp = shard_model(model, ctx, batch_size=512)
    dense_opt = make_dense_optimizer(dmp, "adam", lr=1e-3)
    optimizer = CombinedOptimizer([dmp.fused_optimizer, dense_opt])
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torchrec.optim as trec_optim
from torch import nn
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import (
    KernelConfig,
    ParameterConstraints,
    PlannerError,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.distributed.types import ShardedModule, ShardingEnv
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import KeyedOptimizerWrapper

from .backend import DistContext
from .memory import GIB, host_memory_bytes

_SPARSE_OPTIMIZERS = {
    "rowwise_adagrad": (trec_optim.RowWiseAdagrad, {}),
    "adagrad": (torch.optim.Adagrad, {}),
    "sgd": (torch.optim.SGD, {}),
    "adam": (torch.optim.Adam, {}),
}
_CPU_SPARSE_OPTIMIZERS = ("rowwise_adagrad", "adagrad", "sgd")
SHARDED_TYPES = ("table_wise", "row_wise", "column_wise")


def apply_sparse_optimizer(model: nn.Module, name: str, lr: float, device: torch.device) -> None:
    """Attach a fused in-backward optimizer to every EmbeddingBagCollection's parameters.

    Must run on the unsharded model, before ``shard_model``; DMP then fuses it into the
    FBGEMM table-batched embedding kernels (the update happens inside backward).

    Raises:
        ValueError: unknown optimizer, or one FBGEMM does not support on this device (the
            CPU kernels support rowwise_adagrad, adagrad and sgd; adam needs CUDA).
    """
    if name not in _SPARSE_OPTIMIZERS:
        raise ValueError(f"train.sparse_optimizer: unknown '{name}' (expected one of {sorted(_SPARSE_OPTIMIZERS)})")
    if device.type == "cpu" and name not in _CPU_SPARSE_OPTIMIZERS:
        raise ValueError(
            f"train.sparse_optimizer = '{name}' is not supported by FBGEMM's CPU embedding kernels; "
            f"use one of {list(_CPU_SPARSE_OPTIMIZERS)} on CPU, or train on CUDA"
        )
    cls, kwargs = _SPARSE_OPTIMIZERS[name]
    for module in model.modules():
        if isinstance(module, EmbeddingBagCollection):
            apply_optimizer_in_backward(cls, module.parameters(), {"lr": lr, **kwargs})


def shard_model(
    model: nn.Module,
    ctx: DistContext,
    batch_size: int,
    constraints: Optional[dict[str, ParameterConstraints]] = None,
) -> DistributedModelParallel:
    """Plan and shard ``model`` (built on the meta device is fine) over the default process group.

    The planner sees the real topology (``host_topology``: device type, world size, local world
    size, this host's memory) and the per-rank batch size; it is run collectively so that every
    rank gets the same plan.

    Args:
        constraints: per-table planner constraints by table name. Default: every table sharded
            (table-, row- or column-wise), never data-parallel, so that every table is owned by
            the fused optimizer and checkpoints reshard between world sizes (a table moving
            between data-parallel and sharded changes its optimizer-state keys).

    Raises:
        ValueError: no plan fits the ranks' memory (the tables are too large for this job).
    """
    pg = dist.GroupMember.WORLD
    assert pg is not None, "init_distributed() first"
    topology = host_topology(ctx)
    if constraints is None:
        constraints = {
            t.name: ParameterConstraints(sharding_types=list(SHARDED_TYPES))
            for m in model.modules()
            if isinstance(m, EmbeddingBagCollection)
            for t in m.embedding_bag_configs()
        }
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=batch_size,
        constraints=constraints,
        storage_reservation=FixedPercentageStorageReservation(0.15),
        debug=False,
    )
    try:
        plan = planner.collective_plan(model, sharders=None, pg=pg)
    except PlannerError as e:
        tables = sum(
            t.num_embeddings * t.embedding_dim * 4
            for m in model.modules()
            if isinstance(m, EmbeddingBagCollection)
            for t in m.embedding_bag_configs()
        )
        memory = topology.devices[0].storage
        per_rank = memory.hbm if ctx.device.type == "cuda" else memory.ddr
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"no sharding plan fits: the embedding tables need {tables / GIB:.1f} GiB (fp32 weights alone) and "
            f"each of the {ctx.world_size} ranks has {per_rank / GIB:.1f} GiB of "
            f"{'GPU' if ctx.device.type == 'cuda' else 'host'} memory; reduce num_embeddings or "
            f"model.embedding_dim, or use more ranks (planner: {first_line})"
        ) from None
    return DistributedModelParallel(
        module=model,
        env=ShardingEnv.from_process_group(pg),
        device=ctx.device,
        plan=plan,
    )


def host_topology(ctx: DistContext) -> Topology:
    """The planner's topology from the real machine: per-rank memory is this host's share.

    torchrec's default assumes 128 GB of host memory (and 32 GB HBM) per rank whatever the machine
    has; here a CPU rank gets the host's available memory divided by the local ranks, and a GPU
    rank its device's memory.
    """
    available, total = host_memory_bytes()
    host = available or total
    trainer = TrainerConfig(
        world_size=ctx.world_size,
        local_world_size=ctx.local_world_size,
        ddr_cap_bytes=host // max(1, ctx.local_world_size) if host else None,
        hbm_cap_bytes=torch.cuda.get_device_properties(ctx.device).total_memory if ctx.device.type == "cuda" else None,
    )
    return TopologyFactory.create_topology(trainer, kernel_config=KernelConfig(compute_device=ctx.device.type))


def dense_parameters(dmp: nn.Module) -> dict[str, nn.Parameter]:
    """Named parameters outside the sharded embedding modules (the dense arch, over-arch and heads).

    Embedding weights are updated by the fused in-backward optimizer; giving them to the dense
    optimizer as well would update them twice and leave part of their state out of checkpoints.
    """
    sharded = {id(p) for m in dmp.modules() if isinstance(m, ShardedModule) for p in m.parameters()}
    return {
        name: p
        for name, p in dmp.named_parameters()
        if p.requires_grad and id(p) not in sharded and not getattr(p, "_in_backward_optimizers", None)
    }


def make_dense_optimizer(dmp: nn.Module, name: str, lr: float, weight_decay: float = 0.0) -> KeyedOptimizerWrapper:
    """A keyed optimizer over the dense parameters, to combine with ``dmp.fused_optimizer``."""
    classes = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "adagrad": torch.optim.Adagrad,
        "sgd": torch.optim.SGD,
    }
    if name not in classes:
        raise ValueError(f"train.dense_optimizer: unknown '{name}' (expected one of {sorted(classes)})")
    cls = classes[name]
    return KeyedOptimizerWrapper(dense_parameters(dmp), lambda params: cls(params, lr=lr, weight_decay=weight_decay))
