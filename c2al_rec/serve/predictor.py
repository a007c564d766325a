"""Batch scoring of Parquet with an exported model (``c2al-rec predict``).

Reads only the columns the model's metadata names (pyarrow dataset, batch iteration, page
checksums verified), checks each batch with the training-time rules (finite dense values, no null
or negative ids, ids inside the table for ``out_of_range = "error"``; errors name the file, the
row and the column), builds the ``predict`` input dict and writes ``prob`` (float32) in input row
order, plus ``label``, ``row_id`` and the axis columns when the input has them. The model's id
(``ExportedModel.model_id``, as the HTTP service answers it) is the file's Parquet key-value metadata
under ``model_id``: ``pq.read_schema(path).metadata[b"model_id"]``.

Input without rows (an empty shard) gives a predictions file without rows, with the same columns.
The output is written through a temp file and renamed: on any error nothing is left at ``out``.
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

from c2al_rec.config.errors import echo
from c2al_rec.data.dataset import WRITE_OPTIONS, Dataset, parquet_format, read_parquet_schema
from c2al_rec.data.schema import SCHEMA_FILE, SparseFeature
from c2al_rec.data.transforms import find_bad_id, row_of

from .artifact import PREDICTIONS_MODEL_ID_KEY, ExportedModel


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


def _check_out(out: Path, files: list[Path]) -> None:
    """``out`` must be a file path that is not one of the inputs (ValueError naming it otherwise)."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; predict writes one Parquet file (e.g. {out / 'preds.parquet'})")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {out}: {parent} is a file, not a directory")
            break
    resolved = out.resolve()
    if any(f.resolve() == resolved for f in files):
        raise ValueError(f"--out {out} is one of the input files; write the predictions elsewhere")


def _bad_row(where: str, row: int, col: str, what: str, value: object = None) -> ValueError:
    val = "" if value is None else f": offending value {echo(value)}"
    return ValueError(f"{where}: column '{col}' at row {row} {what}{val}")


def batch_inputs(table: pa.Table, model: ExportedModel, where: str, first_row: int = 0) -> Dict[str, torch.Tensor]:
    """The ``predict`` input dict of one Arrow batch, checked with the training-time rules.

    Args:
        table: B rows holding the model's feature columns.
        model: the exported model (its metadata names the features and their id rules).
        where: the input file, for error messages.
        first_row: row of ``table``'s first row inside that file, for error messages.

    Returns:
        ``{"dense": float32 [B, D], "<f>.values": int64 [N_f], "<f>.lengths": int64 [B]}``.

    Raises:
        ValueError: a null or non-finite dense value, a null id, a negative id, or an id outside its
            table where the schema says ``out_of_range = "error"``; names file, row and column.
    """
    n = table.num_rows
    dense = np.empty((n, len(model.dense_features)), np.float32)
    for j, c in enumerate(model.dense_features):
        x = table.column(c).to_numpy(zero_copy_only=False).astype(np.float32)  # nulls become NaN
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            raise _bad_row(where, first_row + int(bad[0]), c, "has a NaN, inf or null value")
        dense[:, j] = x
    inputs = {"dense": torch.from_numpy(dense)}
    for f in model.sparse_features:
        col = table.column(f["name"]).combine_chunks()
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise _bad_row(where, first_row + row, f["name"], "is null (missing ids are not allowed)")
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            flat = pc.list_flatten(col)
            lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
            if flat.null_count:
                pos = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
                row = row_of(pos, lengths)
                raise _bad_row(where, first_row + row, f["name"], "holds a null id inside a list")
            values = flat.to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            values = col.to_numpy(zero_copy_only=False).astype(np.int64)
            lengths = np.ones(len(values), np.int64)
        bad = find_bad_id(sparse_feature(f), values, lengths)
        if bad is not None:
            row, value, what = bad
            raise _bad_row(where, first_row + row, f["name"], what, value)
        inputs[f"{f['name']}.values"] = torch.from_numpy(values)
        inputs[f"{f['name']}.lengths"] = torch.from_numpy(lengths)
    return inputs


def sparse_feature(f: dict) -> SparseFeature:
    """The schema's ``SparseFeature`` of one entry of an exported model's ``metadata["sparse"]``."""
    return SparseFeature(f["name"], f["num_embeddings"], f["multi_hot"], f.get("pooling", "sum"), f["out_of_range"])


def iter_batches(files: list[Path], columns: list[str], batch_size: int) -> Iterator[tuple[Path, int, pa.Table]]:
    """(file, row of the batch's first row in that file, batch) in file order; page checksums verified."""
    fmt = parquet_format()
    for f in files:
        first = 0
        try:
            for rb in pads.dataset(str(f), format=fmt).to_batches(columns=columns, batch_size=batch_size):
                if rb.num_rows:
                    yield f, first, pa.Table.from_batches([rb])
                    first += rb.num_rows
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{f}: cannot be read after row {first} (truncated or corrupt?): {e}") from None


def predict_files(
    model: ExportedModel, files: list[Path], out: Path, batch_size: int = 4096, progress: bool = True
) -> int:
    """Score ``files`` in order into ``out`` (written atomically); returns the number of rows.

    Input without rows gives an ``out`` without rows, with the columns a non-empty input would give.

    Raises:
        ValueError: ``out`` is a directory (or an input file); an input file is not Parquet, lacks a
            feature column or holds a value the training data could not hold (file, row and column
            named). Nothing is left at ``out`` then.
    """
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    out = Path(out)
    _check_out(out, files)
    schemas = [read_parquet_schema(f) for f in files]
    for f, schema in zip(files, schemas):
        _check_columns(schema, model, str(f))
    feature_cols = model.dense_features + [f["name"] for f in model.sparse_features]
    meta = model.metadata
    wanted = ["label", meta.get("label"), "row_id", meta.get("row_id"), "weight", meta.get("weight"), "true_prob"]
    # passed through when every input file has the column (a batch must read the same columns everywhere)
    candidates = dict.fromkeys([*wanted, *meta.get("axes", [])])
    passthrough = [c for c in candidates if c and all(c in s.names for s in schemas)]
    columns = list(dict.fromkeys(feature_cols + passthrough))
    renames = {meta.get("label"): "label", meta.get("row_id"): "row_id", meta.get("weight"): "weight"}
    out_names = [renames.get(c) or c for c in passthrough]
    total = sum(pq.read_metadata(f).num_rows for f in files)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    writer: Optional[pq.ParquetWriter] = None
    rows = 0
    tag = {PREDICTIONS_MODEL_ID_KEY: model.model_id.encode()}
    try:
        with tqdm(total=total, unit="row", unit_scale=True, desc="predict", disable=not progress) as bar:
            for f, first, table in iter_batches(files, columns, batch_size):
                inputs = batch_inputs(table, model, str(f), first)
                try:
                    probs = model.predict(inputs).float().numpy()
                except (RuntimeError, torch.jit.Error) as e:  # the model's own checks (those above come first)
                    raise ValueError(
                        f"{f}: rows {first}..{first + table.num_rows - 1}: the model rejected the batch: "
                        f"{str(e).strip().splitlines()[-1]}"
                    ) from None
                result = pa.Table.from_arrays(
                    [pa.array(probs, pa.float32()), *(table.column(c) for c in passthrough)], ["prob", *out_names]
                )
                if writer is None:
                    writer = pq.ParquetWriter(tmp, result.schema.with_metadata(tag), **WRITE_OPTIONS)
                result = result.replace_schema_metadata(tag)
                writer.write_table(result)
                rows += table.num_rows
                bar.update(table.num_rows)
        if writer is None:  # no rows: the same columns, typed as in the first file
            fields = [pa.field("prob", pa.float32())]
            fields += [pa.field(name, schemas[0].field(c).type) for c, name in zip(passthrough, out_names)]
            writer = pq.ParquetWriter(tmp, pa.schema(fields, metadata=tag), **WRITE_OPTIONS)
        writer.close()
        writer = None
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return rows
