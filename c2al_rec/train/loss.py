"""The C2AL objective: L = BCE(primary, y) + lambda_head BCE(head, y_head) + lambda_tail BCE(tail, y_tail).

The weighted aux terms are defined once (:func:`weighted_aux_terms`); the loss, the gradient-similarity
gate and the gradient diagnostics all read them from here.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F


def aux_labels(
    labels: torch.Tensor, cohort_index: torch.Tensor, head_index: int, tail_index: int
) -> Dict[str, torch.Tensor]:
    """C2AL auxiliary labels ``y_head = y * 1[row in head]``, ``y_tail = y * 1[row in tail]``.

    Args:
        labels: [B] float 0/1.
        cohort_index: [B] int64 cohort index on the spec's axis (-1: no cohort).
    """
    return {
        "head": labels * (cohort_index == head_index).to(labels.dtype),
        "tail": labels * (cohort_index == tail_index).to(labels.dtype),
    }


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sample-weighted mean binary cross-entropy over the batch: sum(w * l) / sum(w)."""
    per_row = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")
    return (weights * per_row).sum() / weights.sum().clamp_min(1e-12)


def weighted_aux_terms(parts: Dict[str, torch.Tensor], lambda_head: float, lambda_tail: float) -> List[torch.Tensor]:
    """The C2AL aux terms ``[lambda_head * L_head, lambda_tail * L_tail]`` (scalars).

    Args:
        parts: per-head losses holding ``"head"`` and ``"tail"`` (as ``c2al_loss`` returns them).
        lambda_head, lambda_tail: ``cohorts.lambda_head`` / ``cohorts.lambda_tail``.
    """
    return [lambda_head * parts["head"], lambda_tail * parts["tail"]]


def aux_objective(parts: Dict[str, torch.Tensor], lambda_head: float, lambda_tail: float) -> torch.Tensor:
    """The weighted sum of the aux losses, ``lambda_head * L_head + lambda_tail * L_tail`` (a scalar):
    what gradient-similarity gating scales and what the gradient diagnostics compare with the primary loss."""
    head, tail = weighted_aux_terms(parts, lambda_head, lambda_tail)
    return head + tail


def c2al_loss(
    logits: Dict[str, torch.Tensor],
    labels: torch.Tensor,
    weights: torch.Tensor,
    aux: Optional[Dict[str, torch.Tensor]] = None,
    lambda_head: float = 0.0,
    lambda_tail: float = 0.0,
) -> tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Total loss and its parts (``primary`` and, with aux labels, ``head`` / ``tail``).

    Args:
        logits: ``{"primary": [B]}`` plus ``"head"``/``"tail"`` [B] when C2AL is on.
        labels, weights: [B] float.
        aux: auxiliary labels from ``aux_labels``; None trains the baseline.
    """
    parts = {"primary": weighted_bce(logits["primary"], labels, weights)}
    total = parts["primary"]
    if aux is not None:
        parts["head"] = weighted_bce(logits["head"], aux["head"], weights)
        parts["tail"] = weighted_bce(logits["tail"], aux["tail"], weights)
        # accumulated left to right, (L_p + t_head) + t_tail, as recorded runs were trained
        for term in weighted_aux_terms(parts, lambda_head, lambda_tail):
            total = total + term
    return total, parts
