"""Tier 2: C2ALModel built on meta, sharded by DMP on 2 gloo ranks, trains a few steps through
``TrainPipelineSparseDist`` (as the trainer does), with the C2AL aux heads on."""

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.optim.keyed import CombinedOptimizer
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

from c2al_rec.config import FMConfig, LinearConfig, ModelConfig
from c2al_rec.distributed.backend import destroy_distributed, init_distributed, set_cpu_threads
from c2al_rec.distributed.sharding import apply_sparse_optimizer, make_dense_optimizer, shard_model
from c2al_rec.modules import C2ALModel
from tests import modules_helpers as mh
from tests.multiprocess import run_multiprocess


@dataclass
class _Batch(Pipelineable):
    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    labels: torch.Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> "_Batch":
        return _Batch(self.dense.to(device), self.sparse.to(device), self.labels.to(device))

    def record_stream(self, stream) -> None:  # noqa: ANN001 - CPU only here
        pass

    def pin_memory(self) -> "_Batch":
        return self


class _TrainTask(nn.Module):
    """model(batch) -> (loss, outputs): the contract of TrainPipelineSparseDist."""

    def __init__(self, model: C2ALModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: _Batch):
        out = self.model(batch.dense, batch.sparse)
        bce = nn.functional.binary_cross_entropy_with_logits
        loss = bce(out["primary"], batch.labels) + 0.1 * (
            bce(out["head"], batch.labels) + bce(out["tail"], batch.labels)
        )
        return loss, {"loss": loss.detach(), **{k: v.detach() for k, v in out.items()}}


def train_c2al(steps: int, batch_size: int, fm_attention: str, aux_projection: int = 0) -> dict:
    """Train C2ALModel (aux heads on) under DMP; return losses and a digest of dense params."""
    ctx = init_distributed()
    set_cpu_threads(ctx)
    torch.manual_seed(ctx.rank)  # different seeds: DMP/DDP must still agree on dense params
    cfg = ModelConfig(
        embedding_dim=8, dense_arch=[16], primary_head=[8], aux_head=[4], linear=LinearConfig(out_tokens=4),
        fm=FMConfig(rank=3, compressed_tokens=3, out_tokens=4, mlp=[16], attention=fm_attention),
        dhen_layers=[["fm", "linear", "dot"], ["fm", "linear"]], aux_projection=aux_projection,
    )  # fmt: skip
    task = _TrainTask(C2ALModel(mh.tables(8), mh.DENSE, cfg, aux_heads=True, device=torch.device("meta")))
    apply_sparse_optimizer(task, "rowwise_adagrad", lr=0.1, device=ctx.device)
    table_wise = ParameterConstraints(sharding_types=["table_wise"])
    dmp = shard_model(task, ctx, batch_size, constraints={t.name: table_wise for t in mh.tables(8)})
    optimizer = CombinedOptimizer([dmp.fused_optimizer, make_dense_optimizer(dmp, "adam", lr=0.01)])
    pipeline = TrainPipelineSparseDist(dmp, optimizer, ctx.device)
    batches = iter([_Batch(*mh.batch(batch_size, seed=1000 * (s % 4) + ctx.rank)) for s in range(steps)])
    losses, keys = [], set()
    while True:
        try:
            out = pipeline.progress(batches)
        except StopIteration:
            break
        keys = set(out)
        losses.append(float(out["loss"]))
    model = dmp.module.model
    digest = {n: float(p.detach().double().sum()) for n, p in model.shared_parameters().items()}
    finite = all(torch.isfinite(p).all().item() for p in model.shared_parameters().values())
    pipelined = [type(m).__name__ for m in pipeline._pipelined_modules]
    destroy_distributed()
    return {"losses": losses, "dense_digest": digest, "finite": finite, "keys": keys, "pipelined": pipelined}


def test_c2al_model_trains_under_dmp_on_two_ranks() -> None:
    # aux heads on a projection of h: the smoke trainer tests cover heads that read h
    results = run_multiprocess(
        train_c2al, world_size=2, steps=24, batch_size=64, fm_attention="static", aux_projection=4
    )
    for r in results:
        losses = r["losses"]
        assert len(losses) == 24 and r["finite"]
        assert r["keys"] == {"loss", "primary", "head", "tail"}
        assert sum(losses[-4:]) / 4 < 0.85 * sum(losses[:4]) / 4, losses
        # The pipeline found the sharded EBC by fx-tracing the model (custom op included).
        assert r["pipelined"] == ["ShardedEmbeddingBagCollection"], r["pipelined"]
    # Data-parallel dense parameters stay identical across ranks (DDP), though seeds differed.
    d0, d1 = results[0]["dense_digest"], results[1]["dense_digest"]
    assert d0.keys() == d1.keys() and d0
    for name in d0:
        assert abs(d0[name] - d1[name]) <= 1e-5 * (1 + abs(d0[name])), name
