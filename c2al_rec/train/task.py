"""The module DMP wraps in training: model + C2AL loss, ``forward(batch) -> (loss, outputs)``.

``TrainPipelineSparseDist`` calls ``task(batch)`` and back-propagates the returned loss; the
outputs feed the metrics. With C2AL off it trains the baseline (primary loss only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import nn

from .loss import aux_labels, c2al_loss


@dataclass
class CohortTarget:
    """Which cohort axis and cohorts the auxiliary heads target."""

    axis: str
    head_index: int
    tail_index: int
    lambda_head: float
    lambda_tail: float
    aux: bool
    """False: the axis is only reported (segmented NE), no auxiliary loss."""


class TrainTask(nn.Module):
    """Wrap ``model`` with the C2AL objective.

    Args:
        model: ``forward(dense [B, D], kjt) -> {"primary", ["head", "tail"]}`` logits [B].
        target: the cohort axis for aux labels / segment metrics; None when no spec is given.
        autocast_dtype: optional autocast dtype for the model forward (bf16).
        device_type: device type of the autocast region ("cpu" or "cuda"). Fixed at construction:
            ``TrainPipelineSparseDist`` fx-traces ``forward``, where ``dense.device`` is a proxy.

    Example::

        task = TrainTask(C2ALModel(...), CohortTarget("user_value", 2, 0, 0.1, 0.1, aux=True))
        loss, out = task(batch)
    """

    def __init__(
        self,
        model: nn.Module,
        target: Optional[CohortTarget],
        autocast_dtype: Optional[torch.dtype] = None,
        device_type: str = "cpu",
    ):
        super().__init__()
        self.model = model
        self.target = target
        self.autocast_dtype = autocast_dtype
        self.device_type = device_type

    def forward(self, batch) -> tuple[torch.Tensor, Dict[str, torch.Tensor]]:  # type: ignore[no-untyped-def]
        dense = batch.dense_features
        if self.autocast_dtype is not None:
            with torch.autocast(self.device_type, dtype=self.autocast_dtype):
                logits = self.model(dense, batch.sparse_features)
        else:
            logits = self.model(dense, batch.sparse_features)
        labels, weights = batch.labels, batch.weights
        out: Dict[str, torch.Tensor] = {"labels": labels, "weights": weights}
        aux = None
        if self.target is not None:
            segment = batch.cohorts[self.target.axis]
            out["segment"] = segment
            if self.target.aux:
                aux = aux_labels(labels, segment, self.target.head_index, self.target.tail_index)
                out.update({f"{k}_label": v for k, v in aux.items()})
        loss, parts = c2al_loss(
            logits,
            labels,
            weights,
            aux,
            self.target.lambda_head if self.target else 0.0,
            self.target.lambda_tail if self.target else 0.0,
        )
        out.update({f"logit_{k}": v.detach() for k, v in logits.items()})
        out.update({f"loss_{k}": v.detach() for k, v in parts.items()})
        return loss, out
