"""Batch scoring of Parquet with an exported model (``c2al-rec predict``).

Reads only the columns the model's metadata names (pyarrow dataset, batch iteration), builds the
``predict`` input dict per batch and writes ``prob`` (float32) in input row order, plus ``label``,
``row_id`` and the axis columns when the input has them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from c2al_rec.data.dataset import Dataset
from c2al_rec.data.schema import SCHEMA_FILE

from .artifact import ExportedModel


def input_files(data: str | Path, split: Optional[str]) -> list[Path]:
    """Parquet files of a dataset root's split (schema.json splits), or of a plain directory / file."""
    p = Path(data)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"--data {p} does not exist")
    if (p / SCHEMA_FILE).is_file():
        dataset = Dataset.open(p)
        if split and dataset.schema.splits and split not in dataset.schema.splits:
            raise ValueError(f"--split '{split}' is not a split of {p} (splits: {sorted(dataset.schema.splits)})")
        return dataset.files(split)
    files = sorted(p.glob("*.parquet"))
    if not files:
        raise ValueError(f"--data {p}: no .parquet files")
    return files


def _check_columns(schema: pa.Schema, model: ExportedModel, where: str) -> None:
    names = set(schema.names)
    missing = [c for c in model.dense_features + [f["name"] for f in model.sparse_features] if c not in names]
    if missing:
        raise ValueError(f"{where}: missing feature column(s) {missing} that the model needs")
    for c in model.dense_features:
        t = schema.field(c).type
        if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
            raise ValueError(f"{where}: dense column '{c}' has type {t}, expected a number (float32)")
    for f in model.sparse_features:
        t = schema.field(f["name"]).type
        inner = t.value_type if pa.types.is_list(t) or pa.types.is_large_list(t) else t
        if not pa.types.is_integer(inner) or (f["multi_hot"] is False and inner is not t):
            want = "list<int64>" if f["multi_hot"] else "int64"
            raise ValueError(f"{where}: sparse column '{f['name']}' has type {t}, expected {want}")


def batch_inputs(table: pa.Table, model: ExportedModel, where: str) -> Dict[str, torch.Tensor]:
    """The ``predict`` input dict of one Arrow batch."""
    dense = (
        np.stack(
            [table.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in model.dense_features], axis=1
        )
        if model.dense_features
        else np.zeros((table.num_rows, 0), np.float32)
    )
    if not np.isfinite(dense).all():
        bad = model.dense_features[int(np.where(~np.isfinite(dense).all(0))[0][0])]
        raise ValueError(f"{where}: dense column '{bad}' has NaN, inf or null values")
    inputs = {"dense": torch.from_numpy(dense)}
    for f in model.sparse_features:
        col = table.column(f["name"]).combine_chunks()
        if col.null_count:
            raise ValueError(f"{where}: sparse column '{f['name']}' has null values")
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
            values = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            values = col.to_numpy(zero_copy_only=False).astype(np.int64)
            lengths = np.ones(len(values), np.int64)
        inputs[f"{f['name']}.values"] = torch.from_numpy(values)
        inputs[f"{f['name']}.lengths"] = torch.from_numpy(lengths)
    return inputs


def iter_batches(files: list[Path], columns: list[str], batch_size: int) -> Iterator[tuple[Path, pa.Table]]:
    for f in files:
        for rb in pads.dataset(str(f), format="parquet").to_batches(columns=columns, batch_size=batch_size):
            yield f, pa.Table.from_batches([rb])


def predict_files(
    model: ExportedModel, files: list[Path], out: Path, batch_size: int = 4096, progress: bool = True
) -> int:
    """Score ``files`` in order into ``out`` (written atomically); returns the number of rows."""
    first = pq.read_schema(files[0])
    for f in files:
        _check_columns(pq.read_schema(f), model, str(f))
    feature_cols = model.dense_features + [f["name"] for f in model.sparse_features]
    passthrough = [
        c
        for c in [
            "label",
            model.metadata.get("label"),
            "row_id",
            model.metadata.get("row_id"),
            "weight",
            model.metadata.get("weight"),
            "true_prob",
            *model.metadata.get("axes", []),
        ]
        if c and c in first.names
    ]
    passthrough = list(dict.fromkeys(passthrough))
    columns = list(dict.fromkeys(feature_cols + passthrough))
    total = sum(pq.read_metadata(f).num_rows for f in files)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    writer: Optional[pq.ParquetWriter] = None
    rows = 0
    try:
        with tqdm(total=total, unit="row", unit_scale=True, desc="predict", disable=not progress) as bar:
            for f, table in iter_batches(files, columns, batch_size):
                inputs = batch_inputs(table, model, str(f))
                try:
                    probs = model.predict(inputs).float().numpy()
                except RuntimeError as e:  # e.g. an id the schema says to reject
                    raise ValueError(f"{f}: the model rejected a batch: {str(e).strip().splitlines()[-1]}") from None
                result = pa.table({"prob": pa.array(probs, pa.float32()), **{c: table.column(c) for c in passthrough}})
                renames = {
                    model.metadata.get("label"): "label",
                    model.metadata.get("row_id"): "row_id",
                    model.metadata.get("weight"): "weight",
                }
                result = result.rename_columns([renames.get(n, n) or n for n in result.column_names])
                if writer is None:
                    writer = pq.ParquetWriter(tmp, result.schema)
                writer.write_table(result)
                rows += table.num_rows
                bar.update(table.num_rows)
        if writer is None:
            raise ValueError(f"--data: the input files have no rows ({files[0]} ...)")
        writer.close()
        writer = None
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return rows
