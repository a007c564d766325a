"""Control for generic auxiliary-task regularisation: aux labels from random cohorts of the same sizes.

Rows are assigned by a seeded hash of their axis value, thresholded at the real cohorts' shares
on the train split. On a continuous axis (every row its own value) this is a uniformly random
row split of the same sizes; on a categorical axis whole values move together, so sizes match
only approximately.

Example::

    control = randomize_spec(spec, train_axis_values, seed=0)
    control.assign(column)   # same cohort names and head/tail, random membership
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .spec import CohortSpec


def _stable_hash(value: Optional[str]) -> int:
    """64-bit hash of a string that is the same in every process (Python's ``hash`` is salted per process)."""
    if value is None:
        return 0
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "little")


def _hash_uniform(column: pa.Array, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A uniform [0, 1) number per row from its value (splitmix64 of the value's bits), and the null mask."""
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        null = np.isnan(values)
        bits = np.nan_to_num(values).view(np.uint64)
    else:
        as_str = pc.cast(column, pa.string()) if not pa.types.is_string(column.type) else column
        null = pc.is_null(as_str).to_numpy(zero_copy_only=False)
        bits = np.array([_stable_hash(v) for v in as_str.to_pylist()], dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = bits + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53), null


@dataclass
class RandomizedCohortSpec(CohortSpec):
    """A cohort spec whose membership is random, with the original cohorts' shares."""

    shares: list[float] = field(default_factory=list)
    seed: int = 0

    def assign(self, column: Any) -> np.ndarray:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if not isinstance(column, pa.Array):
            column = pa.array(column)
        u, null = _hash_uniform(column, self.seed)
        edges = np.cumsum(self.shares)
        idx = np.searchsorted(edges, u, side="right").astype(np.int64)
        idx[idx >= len(self.cohorts)] = -1
        idx[null] = -1
        return idx

    def to_json(self) -> dict[str, Any]:
        d = super().to_json()
        d.pop("shares", None)
        d.pop("seed", None)
        d["random_control"] = {"shares": self.shares, "seed": self.seed}
        return d


def randomize_spec(spec: CohortSpec, train_column: Any, seed: int) -> RandomizedCohortSpec:
    """Random cohorts with ``spec``'s names, head/tail and shares of rows on ``train_column``."""
    idx = spec.assign(train_column)
    shares = [float((idx == i).mean()) for i in range(len(spec.cohorts))]
    return RandomizedCohortSpec(
        axis=spec.axis,
        kind=spec.kind,
        cohorts=spec.cohorts,
        head=spec.head,
        tail=spec.tail,
        selection=spec.selection,
        pairs=[],
        source={**spec.source, "control": "random cohorts, same shares"},
        shares=shares,
        seed=seed,
    )
