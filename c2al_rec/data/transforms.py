"""Id rules shared by the reader, the predictor and the exported model.

Per sparse feature, negative ids are always rejected; ids ``>= num_embeddings`` are either folded
into the table (``out_of_range = "hash"``: ``id mod num_embeddings``) or rejected (``"error"``).
``find_bad_id`` checks raw ids on the host (the reader and ``predict`` use it to name the file and
row); ``SparseIdTransform`` applies the same rules in the model and is TorchScript-scriptable, so
the exported model transforms and rejects exactly what training did.

Example::

    t = SparseIdTransform(schema.sparse)
    kjt = t(kjt)                           # same keys and lengths, ids inside their tables
    scripted = torch.jit.script(t)
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from .schema import SparseFeature


def row_of(position: int, lengths: Optional[np.ndarray] = None) -> int:
    """The row holding flat position ``position`` of a jagged column with ``lengths`` [B] ids per row
    (None: one id per row)."""
    return position if lengths is None else int(np.searchsorted(np.cumsum(lengths), position, side="right"))


def find_bad_id(
    feature: SparseFeature, values: np.ndarray, lengths: Optional[np.ndarray] = None
) -> Optional[tuple[int, int, str]]:
    """The first id of ``values`` that the schema rejects, as (row, id, reason); None if all pass.

    Args:
        feature: the schema's sparse feature.
        values: its raw ids, flat (a multi-hot column's list values concatenated), int64 [N].
        lengths: ids per row [B] of a multi-hot column (None: one id per row).
    """
    if values.size == 0:
        return None
    lo, hi = int(values.min()), int(values.max())
    if lo < 0:
        return row_of(int(np.flatnonzero(values == lo)[0]), lengths), lo, "has a negative id (ids must be >= 0)"
    if hi >= feature.num_embeddings and feature.out_of_range == "error":
        reason = (
            f"(sparse feature '{feature.name}') has an id outside its table [0, {feature.num_embeddings}) and "
            f"schema.json says out_of_range = error"
        )
        return row_of(int(np.flatnonzero(values == hi)[0]), lengths), hi, reason
    return None


class SparseIdTransform(nn.Module):
    """Reject negative ids; hash or range-check the others, per sparse feature.

    Args:
        features: the schema's sparse features, in KJT key order.
    """

    def __init__(self, features: Sequence[SparseFeature]) -> None:
        super().__init__()
        self.names: List[str] = [f.name for f in features]
        self.sizes: List[int] = [int(f.num_embeddings) for f in features]
        self.hash: List[bool] = [f.out_of_range == "hash" for f in features]
        self.any_hash: bool = any(self.hash)
        # table sizes as a non-persistent buffer: they follow .to(device), stay out of state_dict
        self.register_buffer("size_t", torch.tensor(self.sizes, dtype=torch.int64), persistent=False)

    def transform_values(self, index: int, values: torch.Tensor) -> torch.Tensor:
        """Transform the raw ids of feature ``index`` (any shape, int64)."""
        size = self.sizes[index]
        if values.numel() > 0:
            lo = int(values.min())
            hi = int(values.max())
            if lo < 0:
                raise ValueError("sparse feature '{}': negative id {} (ids must be >= 0)".format(self.names[index], lo))
            if hi >= size and not self.hash[index]:
                raise ValueError(
                    "sparse feature '{}': id {} outside its table [0, {}) (out_of_range = error)".format(
                        self.names[index], hi, size
                    )
                )
        if self.hash[index]:
            return torch.remainder(values, size)
        return values

    def forward(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """[sum of lengths] ids -> same shape; keys must be the schema's sparse features, in order.

        One pass over each key's contiguous slice of values; one host sync for the range check.
        The check runs on the raw ids, before hashing: a negative id is an error in hash mode too
        (``remainder`` would fold it silently into the table).
        """
        keys = kjt.keys()
        if keys != self.names:
            raise ValueError("SparseIdTransform: KJT keys {} differ from the schema's {}".format(keys, self.names))
        values = kjt.values()
        if self.any_hash:
            values = values.clone()  # hashed slices are rewritten in place below (the caller's ids stay raw)
        lpk = kjt.length_per_key()
        lows: List[torch.Tensor] = []
        highs: List[torch.Tensor] = []
        start = 0
        for i in range(len(lpk)):
            n = lpk[i]
            part = values.narrow(0, start, n)
            if n > 0:
                lo, hi = torch.aminmax(part)
                lows.append(lo)
                if self.hash[i]:
                    part.remainder_(self.sizes[i])  # lo/hi above were taken on the raw ids
                    hi = torch.zeros((), dtype=values.dtype, device=values.device)  # no upper limit
                highs.append(hi)
            else:
                lows.append(torch.zeros((), dtype=values.dtype, device=values.device))
                highs.append(torch.zeros((), dtype=values.dtype, device=values.device))
            start += n
        if len(lows) > 0:
            bad = (torch.stack(lows) < 0) | (torch.stack(highs) >= self.size_t)
            if bool(bad.any()):
                i = int(torch.nonzero(bad)[0, 0])
                # the raw ids (``values`` holds hashed ones): raises, naming the feature and the id
                self.transform_values(i, kjt.values().narrow(0, sum(lpk[:i]), lpk[i]))
                raise ValueError("SparseIdTransform: internal: id check disagrees with transform_values")
        return KeyedJaggedTensor(
            keys=keys,
            values=values,
            lengths=kjt.lengths(),
            weights=kjt.weights_or_none(),
            stride=kjt.stride(),
        )
