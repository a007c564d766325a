"""Tiny hand-made Parquet datasets for the data-layer tests."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from c2al_rec.data.schema import Axis, DatasetSchema, SparseFeature


def tiny_schema(root: Path, splits: bool = False) -> DatasetSchema:
    return DatasetSchema(
        label="label",
        dense=["d0", "d1"],
        sparse=[
            SparseFeature("user", 50),
            SparseFeature("tags", 10, multi_hot=True, pooling="mean"),
            SparseFeature("item", 7, out_of_range="hash"),
        ],
        axes=[Axis("value", "numeric"), Axis("gender", "categorical", sensitive=True)],
        row_id="row_id",
        splits={"train": "train"} if splits else {},
        root=root,
    )


def tiny_table(start: int, n: int, seed: int = 0) -> pa.Table:
    """Rows ``start .. start + n``; every value is a function of the row id (easy to check)."""
    rid = np.arange(start, start + n, dtype=np.int64)
    lengths = (rid % 3).astype(np.int32)  # 0, 1 or 2 tags (empty lists included)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    tags = np.concatenate([[(r + j) % 10 for j in range(r % 3)] for r in rid]).astype(np.int64) if n else []
    return pa.table(
        {
            "row_id": rid,
            "label": (rid % 4 == 0).astype(np.int64),
            "d0": (rid * 0.5).astype(np.float32),
            "d1": (-rid).astype(np.float32),
            "user": rid % 50,
            "tags": pa.ListArray.from_arrays(pa.array(offsets), pa.array(tags, type=pa.int64())),
            "item": rid % 23,  # hashed into 7
            "value": (rid % 100).astype(np.float64),
            "gender": np.where(rid % 2 == 0, "F", "M"),
        }
    )


def write_tiny(
    root: Path, rows_per_file=(300, 250, 450), row_group: int = 64, splits: bool = False, table_fn=None
) -> DatasetSchema:
    """Write a tiny dataset of len(rows_per_file) files; returns its schema (saved)."""
    schema = tiny_schema(root, splits)
    d = schema.split_dir("train" if splits else None)
    d.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, n in enumerate(rows_per_file):
        t = tiny_table(start, n)
        if table_fn is not None:
            t = table_fn(i, t)
        pq.write_table(t, d / f"part-{i:03d}.parquet", row_group_size=row_group)
        start += n
    schema.save(root)
    return schema


def replace_column(t: pa.Table, name: str, values, type: Optional[pa.DataType] = None) -> pa.Table:
    return t.set_column(t.schema.get_field_index(name), name, pa.array(values, type=type))
