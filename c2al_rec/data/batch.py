"""``Batch``: the Pipelineable training batch the reader yields (torchrec ``Batch``-compatible).

Example::

    batch = next(iter(reader))
    batch = batch.to(torch.device("cuda"), non_blocking=True)
    logits = model(batch.dense_features, batch.sparse_features)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable


@dataclass
class Batch(Pipelineable):
    """One batch of rows.

    Args:
        dense_features: [B, D] float32.
        sparse_features: KJT with keys in schema sparse order, int64 values (ids already
            passed through ``SparseIdTransform``).
        labels: [B] float32 in {0, 1}.
        weights: [B] float32 (ones when the schema has no weight column).
        cohorts: axis name -> int64 [B] cohort index (-1: the row is in no cohort of that axis).
        row_id: int64 [B] or None.
        true_prob: float32 [B] (synthetic data only) or None.
    """

    dense_features: torch.Tensor
    sparse_features: KeyedJaggedTensor
    labels: torch.Tensor
    weights: torch.Tensor
    cohorts: Dict[str, torch.Tensor] = field(default_factory=dict)
    row_id: Optional[torch.Tensor] = None
    true_prob: Optional[torch.Tensor] = None

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])

    def _map(self, fn, kjt_fn) -> "Batch":
        return Batch(
            dense_features=fn(self.dense_features),
            sparse_features=kjt_fn(self.sparse_features),
            labels=fn(self.labels),
            weights=fn(self.weights),
            cohorts={k: fn(v) for k, v in self.cohorts.items()},
            row_id=None if self.row_id is None else fn(self.row_id),
            true_prob=None if self.true_prob is None else fn(self.true_prob),
        )

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        return self._map(
            lambda t: t.to(device=device, non_blocking=non_blocking),
            lambda k: k.to(device=device, non_blocking=non_blocking),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        for t in (self.dense_features, self.labels, self.weights, self.row_id, self.true_prob, *self.cohorts.values()):
            if t is not None:
                t.record_stream(stream)
        self.sparse_features.record_stream(stream)

    def pin_memory(self) -> "Batch":
        return self._map(lambda t: t.pin_memory(), lambda k: k.pin_memory())
