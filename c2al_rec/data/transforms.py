"""``SparseIdTransform``: the id transform shared by the reader and the exported model.

Per sparse feature, ids outside ``[0, num_embeddings)`` are either folded into the table
(``out_of_range = "hash"``: ``id mod num_embeddings``) or rejected (``"error"``) with a message
naming the feature and the offending id. The module is TorchScript-scriptable, so the exported
model applies exactly the transform the training data went through.

Example::

    t = SparseIdTransform(schema.sparse)
    kjt = t(kjt)                           # same keys and lengths, ids inside their tables
    scripted = torch.jit.script(t)
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from .schema import SparseFeature


class SparseIdTransform(nn.Module):
    """Hash or range-check the ids of each sparse feature.

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
        """Transform the ids of feature ``index`` (any shape, int64)."""
        size = self.sizes[index]
        if self.hash[index]:
            return torch.remainder(values, size)
        if values.numel() > 0:
            lo = int(values.min())
            hi = int(values.max())
            if lo < 0 or hi >= size:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    "sparse feature '{}': id {} outside its table [0, {}) (out_of_range = error)".format(
                        self.names[index], bad, size
                    )
                )
        return values

    def forward(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """[sum of lengths] ids -> same shape; keys must be the schema's sparse features, in order.

        One pass over each key's contiguous slice of values; one host sync for the range check.
        """
        keys = kjt.keys()
        if keys != self.names:
            raise ValueError("SparseIdTransform: KJT keys {} differ from the schema's {}".format(keys, self.names))
        values = kjt.values()
        if self.any_hash:
            values = values.clone()  # hashed slices are rewritten in place below
        lpk = kjt.length_per_key()
        lows: List[torch.Tensor] = []
        highs: List[torch.Tensor] = []
        start = 0
        for i in range(len(lpk)):
            n = lpk[i]
            part = values.narrow(0, start, n)
            if self.hash[i]:
                part.remainder_(self.sizes[i])
            if n > 0:
                lo, hi = torch.aminmax(part)
                lows.append(lo)
                highs.append(hi)
            else:
                lows.append(torch.zeros((), dtype=values.dtype, device=values.device))
                highs.append(torch.zeros((), dtype=values.dtype, device=values.device))
            start += n
        if len(lows) > 0:
            bad = (torch.stack(lows) < 0) | (torch.stack(highs) >= self.size_t)
            if bool(bad.any()):
                i = int(torch.nonzero(bad)[0, 0])
                self.transform_values(i, values.narrow(0, sum(lpk[:i]), lpk[i]))  # raises, naming the feature
        return KeyedJaggedTensor(
            keys=keys,
            values=values,
            lengths=kjt.lengths(),
            weights=kjt.weights_or_none(),
            stride=kjt.stride(),
        )
