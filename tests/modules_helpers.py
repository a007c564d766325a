"""Shared inputs for the model tests: a tiny learnable task over a few sparse features."""

from types import SimpleNamespace

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from c2al_rec.modules import tables_from_features

NUM_FEATURES = 4
NUM_EMBEDDINGS = 40
DENSE = 3


def features():
    # The last feature is multi-hot with mean pooling.
    return [
        SimpleNamespace(name=f"f{i}", num_embeddings=NUM_EMBEDDINGS, pooling="mean" if i == NUM_FEATURES - 1 else "sum")
        for i in range(NUM_FEATURES)
    ]


def tables(dim: int):
    return tables_from_features(features(), dim)


def batch(batch_size: int, seed: int):
    """(dense [B, D], kjt, labels [B]): label = 1 when f0's id is even xor dense[:, 0] > 0."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.ones(NUM_FEATURES, batch_size, dtype=torch.int32)
    lengths[-1] = torch.randint(0, 3, (batch_size,), generator=g, dtype=torch.int32)
    values = torch.randint(0, NUM_EMBEDDINGS, (int(lengths.sum()),), generator=g)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=[f.name for f in features()], values=values, lengths=lengths.reshape(-1)
    )
    dense = torch.randn(batch_size, DENSE, generator=g)
    labels = ((values[:batch_size] % 2 == 0) ^ (dense[:, 0] > 0)).float()
    return dense, kjt, labels
