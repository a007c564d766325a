"""Tier 1: the C2AL objective and the LR schedule against float64 references."""

import math

import torch

from c2al_rec.train.loss import aux_labels, aux_objective, c2al_loss, weighted_aux_terms
from c2al_rec.train.schedule import lr_factor


def _bce64(logit: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    z, y, w = logit.double(), y.double(), w.double()
    per = -(y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z)))
    return (w * per).sum() / w.sum()


def test_aux_labels_mask_positives_by_cohort() -> None:
    y = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0])
    idx = torch.tensor([2, 0, 2, -1, 1])
    aux = aux_labels(y, idx, head_index=2, tail_index=0)
    assert aux["head"].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert aux["tail"].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]


def test_c2al_loss_matches_float64_reference() -> None:
    g = torch.Generator().manual_seed(0)
    logits = {k: torch.randn(64, generator=g) for k in ("primary", "head", "tail")}
    y = (torch.rand(64, generator=g) < 0.3).float()
    w = torch.rand(64, generator=g) + 0.5
    aux = aux_labels(y, torch.randint(-1, 3, (64,), generator=g), 2, 0)
    total, parts = c2al_loss(logits, y, w, aux, lambda_head=0.1, lambda_tail=0.3)
    ref = {k: _bce64(logits[k], y if k == "primary" else aux[k], w) for k in logits}
    for k in ref:
        assert torch.allclose(parts[k].double(), ref[k], atol=1e-6)
    assert torch.allclose(total.double(), ref["primary"] + 0.1 * ref["head"] + 0.3 * ref["tail"], atol=1e-6)
    base_total, base_parts = c2al_loss(logits, y, w)
    assert set(base_parts) == {"primary"} and torch.equal(base_total, parts["primary"])


def test_the_aux_objective_is_the_one_weighted_sum_the_loss_adds() -> None:
    g = torch.Generator().manual_seed(1)
    logits = {k: torch.randn(32, generator=g) for k in ("primary", "head", "tail")}
    y = (torch.rand(32, generator=g) < 0.4).float()
    w = torch.ones(32)
    aux = aux_labels(y, torch.randint(-1, 3, (32,), generator=g), 1, 0)
    total, parts = c2al_loss(logits, y, w, aux, lambda_head=0.2, lambda_tail=0.7)
    head, tail = weighted_aux_terms(parts, 0.2, 0.7)
    assert torch.equal(head, 0.2 * parts["head"]) and torch.equal(tail, 0.7 * parts["tail"])
    assert torch.equal(aux_objective(parts, 0.2, 0.7), 0.2 * parts["head"] + 0.7 * parts["tail"])
    # bit for bit the order recorded runs were trained with: (L_p + lambda_h L_h) + lambda_t L_t
    assert torch.equal(total, parts["primary"] + 0.2 * parts["head"] + 0.7 * parts["tail"])


def test_sample_weights_are_honoured() -> None:
    logits = {"primary": torch.tensor([2.0, -2.0])}
    y = torch.tensor([0.0, 0.0])
    only_first, _ = c2al_loss(logits, y, torch.tensor([1.0, 0.0]))
    assert math.isclose(float(only_first), float(_bce64(logits["primary"][:1], y[:1], torch.ones(1))), rel_tol=1e-6)


def test_lr_schedule() -> None:
    assert [lr_factor(s, 4, "none", 100) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(4, 4, "linear", 104) == 1.0 and lr_factor(54, 4, "linear", 104) == 0.5
    assert math.isclose(lr_factor(54, 4, "cosine", 104), 0.5, abs_tol=1e-12)
    assert lr_factor(104, 4, "cosine", 104) == 0.0
