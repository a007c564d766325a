"""Tier 1: the train task's objective on an unsharded model: constant lambdas and gradient-similarity gating."""

import torch

from c2al_rec.config import CohortsConfig, FMConfig, LinearConfig, ModelConfig
from c2al_rec.data.batch import Batch
from c2al_rec.modules.model import C2ALModel
from c2al_rec.train.loss import aux_labels, c2al_loss
from c2al_rec.train.task import CohortTarget, TrainTask


def _setup(weighting: str):
    from torchrec.modules.embedding_configs import EmbeddingBagConfig
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    torch.manual_seed(0)
    tables = [
        EmbeddingBagConfig(name=f"t_f{i}", embedding_dim=8, num_embeddings=50, feature_names=[f"f{i}"])
        for i in range(3)
    ]
    cfg = ModelConfig(
        embedding_dim=8,
        dhen_layers=[["fm", "linear"]],
        fm=FMConfig(rank=4, compressed_tokens=4, out_tokens=4, mlp=[16]),
        linear=LinearConfig(out_tokens=4),
        primary_head=[16],
        aux_head=[8],
    )
    model = C2ALModel(tables, 2, cfg, aux_heads=True)
    cohorts = CohortsConfig(enabled=True, spec="s.json", lambda_head=0.1, lambda_tail=0.3, weighting=weighting)
    task = TrainTask(model, CohortTarget("v", 2, 0, cohorts))
    b = 64
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["f0", "f1", "f2"], torch.randint(0, 50, (3 * b,)), torch.ones(3 * b, dtype=torch.int32)
    )
    labels = (torch.rand(b) < 0.3).float()
    batch = Batch(torch.randn(b, 2), kjt, labels, torch.ones(b), {"v": torch.randint(-1, 3, (b,))}, None, None)
    return task, batch


def test_constant_weighting_matches_c2al_loss() -> None:
    task, batch = _setup("constant")
    loss, out = task(batch)
    logits = task.model(batch.dense_features, batch.sparse_features)
    aux = aux_labels(batch.labels, batch.cohorts["v"], 2, 0)
    ref, _ = c2al_loss(logits, batch.labels, batch.weights, aux, 0.1, 0.3)
    assert torch.allclose(loss, ref) and "aux_gate" not in out


def test_gradsim_gate_is_the_clamped_cosine_and_leaves_grads_clean() -> None:
    task, batch = _setup("gradsim")
    loss, out = task(batch)
    gate = float(out["aux_gate"])
    params = list(task.model.shared_parameters().values())
    assert all(p.grad is None for p in params)  # the gate's autograd.grad did not accumulate
    logits = task.model(batch.dense_features, batch.sparse_features)
    aux = aux_labels(batch.labels, batch.cohorts["v"], 2, 0)
    _, parts = c2al_loss(logits, batch.labels, batch.weights, aux, 0.1, 0.3)
    aux_loss = 0.1 * parts["head"] + 0.3 * parts["tail"]
    gp = torch.cat([g.flatten() for g in torch.autograd.grad(parts["primary"], params, retain_graph=True)])
    ga = torch.cat([g.flatten() for g in torch.autograd.grad(aux_loss, params, retain_graph=True)])
    cos = float(gp.double() @ ga.double() / (gp.double().norm() * ga.double().norm()))
    assert abs(gate - max(0.0, cos)) < 1e-5
    assert torch.allclose(loss, parts["primary"] + gate * aux_loss, atol=1e-6)
