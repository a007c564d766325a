"""TrainMetrics against a float64 reference: NE of every task, calibration, NE per cohort segment.

Tier 1 (no training): three weighted batches through ``TrainMetrics``, the lifetime values compared
with NE = mean weighted log loss / entropy of the weighted base rate, computed by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from c2al_rec.train.metrics import TrainMetrics


def _reference_ne(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> float:
    p = torch.sigmoid(logits.double())
    y, w = labels.double(), weights.double()
    log_loss = -(w * (y * torch.log(p) + (1 - y) * torch.log1p(-p))).sum() / w.sum()
    rate = float((w * y).sum() / w.sum())
    return float(log_loss) / -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def test_lifetime_metrics_match_a_float64_reference() -> None:
    g = torch.Generator().manual_seed(0)
    batch, batches = 64, 3
    m = TrainMetrics(world_size=1, rank=0, batch_size=batch, aux=True, num_segments=2)
    keys = ("primary", "head", "tail", "y", "w", "seg", "y_head", "y_tail")
    seen: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for _ in range(batches):
        y = (torch.rand(batch, generator=g) < 0.3).float()
        w = torch.rand(batch, generator=g) + 0.5
        segment = torch.randint(-1, 2, (batch,), generator=g)  # -1: in no cohort
        logits = {k: torch.randn(batch, generator=g) for k in ("primary", "head", "tail")}
        aux = {"head": y * (segment == 1).float(), "tail": y * (segment == 0).float()}
        m.update(logits, y, w, aux, segment)
        for k, v in zip(keys, (*logits.values(), y, w, segment, aux["head"], aux["tail"])):
            seen[k].append(v)
    cat = {k: torch.cat(v) for k, v in seen.items()}
    got = m.compute()

    assert got["primary"]["ne"] == pytest.approx(_reference_ne(cat["primary"], cat["y"], cat["w"]), rel=1e-5)
    for task in ("head", "tail"):
        want = _reference_ne(cat[task], cat[f"y_{task}"], cat["w"])
        assert got["aux"][task]["ne"] == pytest.approx(want, rel=1e-5)
    calibration = (cat["w"] * torch.sigmoid(cat["primary"].double())).sum() / (cat["w"] * cat["y"]).sum()
    assert got["primary"]["calibration"] == pytest.approx(float(calibration), rel=1e-5)
    # segments: cohorts 0, 1, then the rows in no cohort as the last group
    groups = [cat["seg"] == 0, cat["seg"] == 1, cat["seg"] == -1]
    want_segments = [_reference_ne(cat["primary"][s], cat["y"][s], cat["w"][s]) for s in groups]
    assert got["segments"] == pytest.approx(want_segments, rel=1e-5)


def test_baseline_metrics_have_no_aux_tasks() -> None:
    m = TrainMetrics(world_size=1, rank=0, batch_size=8, aux=False, num_segments=0)
    y = torch.tensor([0.0, 1.0] * 4)
    m.update({"primary": torch.zeros(8)}, y, torch.ones(8))
    got = m.compute()
    assert set(got) == {"primary"}
    assert got["primary"]["ne"] == pytest.approx(1.0, rel=1e-6)  # p = 0.5 everywhere, base rate 0.5
