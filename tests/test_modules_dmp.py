"""Tier 2: C2ALModel built on meta, sharded by DMP on 2 gloo ranks, trains a few steps."""

import torch
from torch import nn
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.optim.keyed import CombinedOptimizer

from c2al_rec.config import ModelConfig
from c2al_rec.distributed.backend import destroy_distributed, init_distributed, set_cpu_threads
from c2al_rec.distributed.sharding import apply_sparse_optimizer, make_dense_optimizer, shard_model
from c2al_rec.modules import C2ALModel
from tests import modules_helpers as mh
from tests.multiprocess import run_multiprocess


def train_c2al(steps: int, batch_size: int, fm_attention: str) -> dict:
    """Train C2ALModel (aux heads on) under DMP; return losses and a digest of dense params."""
    ctx = init_distributed()
    set_cpu_threads(ctx)
    torch.manual_seed(ctx.rank)  # different seeds: DMP/DDP must still agree on dense params
    cfg = ModelConfig(
        embedding_dim=8, dense_arch=[16], fm_rank=3, fm_compressed_tokens=3, fm_out_tokens=4, fm_mlp=[16],
        linear_out_tokens=4, fm_attention=fm_attention, primary_head=[8], aux_head=[4],
    )  # fmt: skip
    model = C2ALModel(mh.tables(8), mh.DENSE, cfg, aux_heads=True, device=torch.device("meta"))
    apply_sparse_optimizer(model, "rowwise_adagrad", lr=0.1, device=ctx.device)
    table_wise = ParameterConstraints(sharding_types=["table_wise"])
    dmp = shard_model(model, ctx, batch_size, constraints={t.name: table_wise for t in mh.tables(8)})
    optimizer = CombinedOptimizer([dmp.fused_optimizer, make_dense_optimizer(dmp, "adam", lr=0.01)])
    bce = nn.functional.binary_cross_entropy_with_logits
    losses = []
    for step in range(steps):
        dense, kjt, labels = mh.batch(batch_size, seed=1000 * (step % 4) + ctx.rank)
        out = dmp(dense, kjt)
        assert set(out) == {"primary", "head", "tail"}
        loss = bce(out["primary"], labels) + 0.1 * bce(out["head"], labels) + 0.1 * bce(out["tail"], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    inner = dmp.module
    dense_digest = {n: float(p.detach().double().sum()) for n, p in inner.shared_parameters().items()}
    finite = all(torch.isfinite(p).all().item() for p in inner.shared_parameters().values())
    destroy_distributed()
    return {"losses": losses, "dense_digest": dense_digest, "finite": finite}


def test_c2al_model_trains_under_dmp_on_two_ranks() -> None:
    results = run_multiprocess(train_c2al, world_size=2, steps=24, batch_size=64, fm_attention="attentive")
    for r in results:
        losses = r["losses"]
        assert r["finite"]
        assert sum(losses[-4:]) / 4 < 0.85 * sum(losses[:4]) / 4, losses
    # Data-parallel dense parameters stay identical across ranks (DDP), though seeds differed.
    d0, d1 = results[0]["dense_digest"], results[1]["dense_digest"]
    assert d0.keys() == d1.keys() and d0
    for name in d0:
        assert abs(d0[name] - d1[name]) <= 1e-5 * (1 + abs(d0[name])), name
