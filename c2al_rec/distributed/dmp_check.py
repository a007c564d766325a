"""A tiny DMP training job that proves the distributed stack works on this machine or cluster.

Trains a sharded ``EmbeddingBagCollection`` + linear head on a fixed synthetic task for a few
steps and reports, per rank, the losses and how much each sharded table changed.

    torchrun --nproc_per_node=2 -m c2al_rec.distributed.dmp_check
    torchx run -s local_cwd components/c2al.py:dmp_check -j 1x2
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim.keyed import CombinedOptimizer
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from .backend import destroy_distributed, init_distributed, set_cpu_threads
from .sharding import apply_sparse_optimizer, make_dense_optimizer, shard_model

NUM_TABLES = 3
NUM_EMBEDDINGS = 64
EMBEDDING_DIM = 8


class _TinyModel(nn.Module):
    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name=f"t{i}", embedding_dim=EMBEDDING_DIM, num_embeddings=NUM_EMBEDDINGS, feature_names=[f"f{i}"]
                )
                for i in range(NUM_TABLES)
            ],
            device=device,
        )
        self.head = nn.Linear(NUM_TABLES * EMBEDDING_DIM, 1)

    def forward(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.head(self.ebc(kjt).values()).squeeze(-1)


def _batch(step: int, rank: int, batch_size: int) -> tuple[KeyedJaggedTensor, torch.Tensor]:
    """A learnable task: the label is 1 when the first feature's id is even."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    ids = torch.randint(0, NUM_EMBEDDINGS, (NUM_TABLES, batch_size), generator=g)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=[f"f{i}" for i in range(NUM_TABLES)],
        values=ids.reshape(-1),
        lengths=torch.ones(NUM_TABLES * batch_size, dtype=torch.int32),
    )
    return kjt, (ids[0] % 2 == 0).float()


def run(steps: int = 30, batch_size: int = 64, lr: float = 0.1) -> dict:
    """Train for ``steps`` steps; return this rank's losses and per-table change (L2 norm)."""
    ctx = init_distributed()
    set_cpu_threads(ctx)
    torch.manual_seed(0)
    model = _TinyModel(torch.device("meta"))
    apply_sparse_optimizer(model, "rowwise_adagrad", lr=lr, device=ctx.device)
    # Force real sharding: tables this small would otherwise be planned data-parallel.
    table_wise = ParameterConstraints(sharding_types=["table_wise"])
    dmp = shard_model(model, ctx, batch_size, constraints={f"t{i}": table_wise for i in range(NUM_TABLES)})
    optimizer = CombinedOptimizer([dmp.fused_optimizer, make_dense_optimizer(dmp, "adam", lr=0.01)])

    def local_tables() -> dict[str, torch.Tensor]:
        out = {}
        for key, value in dmp.state_dict().items():
            if "embedding_bags" in key and hasattr(value, "local_shards"):
                shards = value.local_shards()
                if shards:
                    out[key] = torch.cat([s.tensor.detach().clone().flatten() for s in shards])
        return out

    before = local_tables()
    losses = []
    for step in range(steps):
        kjt, labels = _batch(step, ctx.rank, batch_size)
        logits = dmp(kjt.to(ctx.device))
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(ctx.device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = local_tables()
    changes = {k: float((after[k] - before[k]).norm()) for k in before}
    plan = {k: str(v) for k, v in dmp.plan.plan.items()}
    result = {"rank": ctx.rank, "world_size": ctx.world_size, "losses": losses, "table_change": changes, "plan": plan}
    destroy_distributed()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="training steps")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per rank per step")
    args = parser.parse_args()
    result = run(args.steps, args.batch_size)
    first, last = sum(result["losses"][:5]) / 5, sum(result["losses"][-5:]) / 5
    print(
        json.dumps(
            {
                "rank": result["rank"],
                "loss_first5": first,
                "loss_last5": last,
                "tables_owned": len(result["table_change"]),
            }
        )
    )
    if not last < first:
        raise SystemExit(f"rank {result['rank']}: loss did not fall ({first:.4f} -> {last:.4f})")


if __name__ == "__main__":
    main()
