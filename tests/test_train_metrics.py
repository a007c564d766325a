"""TrainMetrics against a float64 reference: NE of every task, calibration, NE per cohort segment.

Tier 1 (no training): weighted batches through ``TrainMetrics``, the lifetime values compared with
NE = mean weighted log loss / entropy of the weighted base rate, computed by hand. Tier 2: the same
on 2 gloo ranks, each updating with its own half of every batch (torchrec reduces the states).
"""

from __future__ import annotations

import math

import pytest
import torch

from c2al_rec.distributed.backend import destroy_distributed, init_distributed
from c2al_rec.train.metrics import TrainMetrics
from tests.multiprocess import run_multiprocess

BATCH, BATCHES = 64, 3
KEYS = ("primary", "head", "tail", "y", "w", "seg", "y_head", "y_tail")


def _batches(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``BATCHES`` weighted batches of ``BATCH`` rows: logits, labels, weights, segment, aux labels."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(BATCHES):
        y = (torch.rand(BATCH, generator=g) < 0.3).float()
        w = torch.rand(BATCH, generator=g) + 0.5
        segment = torch.randint(-1, 2, (BATCH,), generator=g)  # -1: in no cohort
        logits = [torch.randn(BATCH, generator=g) for _ in range(3)]
        out.append(dict(zip(KEYS, (*logits, y, w, segment, y * (segment == 1).float(), y * (segment == 0).float()))))
    return out


def _update(m: TrainMetrics, b: dict[str, torch.Tensor]) -> None:
    logits = {k: b[k] for k in ("primary", "head", "tail")}
    m.update(logits, b["y"], b["w"], {"head": b["y_head"], "tail": b["y_tail"]}, b["seg"])


def _reference_ne(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> float:
    p = torch.sigmoid(logits.double())
    y, w = labels.double(), weights.double()
    log_loss = -(w * (y * torch.log(p) + (1 - y) * torch.log1p(-p))).sum() / w.sum()
    rate = float((w * y).sum() / w.sum())
    return float(log_loss) / -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def _check_against_reference(got: dict, batches: list[dict[str, torch.Tensor]]) -> None:
    cat = {k: torch.cat([b[k] for b in batches]) for k in KEYS}
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


def test_lifetime_metrics_match_a_float64_reference() -> None:
    batches = _batches()
    m = TrainMetrics(world_size=1, rank=0, batch_size=BATCH, aux=True, num_segments=2)
    for b in batches:
        _update(m, b)
    _check_against_reference(m.compute(), batches)


def _rank_metrics() -> dict:
    """One of 2 ranks: update with this rank's half of every batch, return the reduced lifetime metrics."""
    ctx = init_distributed()
    try:
        half = BATCH // ctx.world_size
        m = TrainMetrics(world_size=ctx.world_size, rank=ctx.rank, batch_size=half, aux=True, num_segments=2)
        for b in _batches():
            _update(m, {k: v[ctx.rank * half : (ctx.rank + 1) * half] for k, v in b.items()})
        return m.compute()
    finally:
        destroy_distributed()


def test_metrics_reduced_over_two_gloo_ranks_match_the_whole_batches() -> None:
    rank0, rank1 = run_multiprocess(_rank_metrics, world_size=2)
    _check_against_reference(rank0, _batches())  # rank 0 holds the metrics of all rows
    assert rank1["primary"]["ne"] is None and rank1["segments"] == [None] * 3  # torchrec reduces to rank 0


def test_baseline_metrics_have_no_aux_tasks() -> None:
    m = TrainMetrics(world_size=1, rank=0, batch_size=8, aux=False, num_segments=0)
    y = torch.tensor([0.0, 1.0] * 4)
    m.update({"primary": torch.zeros(8)}, y, torch.ones(8))
    got = m.compute()
    assert set(got) == {"primary"}
    assert got["primary"]["ne"] == pytest.approx(1.0, rel=1e-6)  # p = 0.5 everywhere, base rate 0.5
