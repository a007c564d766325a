"""Score a checkpoint on a dataset split into a predictions table (the same columns as `predict`).

The table has ``prob`` (float32) in input row order, plus ``label``, ``weight``, ``row_id``,
``true_prob`` and the axis columns when the data has them, so evaluation treats a checkpoint and
an exported model's predictions file alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import torch
from tqdm import tqdm

from c2al_rec.data.reader import ParquetReader
from c2al_rec.data.schema import DatasetSchema, load_schema
from c2al_rec.distributed.unsharded import LoadedCheckpoint, check_schema_matches


def side_columns(schema: DatasetSchema, split: str) -> pa.Table:
    """label / weight / row_id / true_prob / axis columns of a split, in the reader's file order."""
    files = sorted(str(p) for p in schema.split_dir(split).glob("*.parquet"))
    dataset = pads.dataset(files, format="parquet")
    names = [schema.label] + [c for c in (schema.weight, schema.row_id) if c]
    names += [a.name for a in schema.axes if a.name not in names]
    if "true_prob" in dataset.schema.names:
        names.append("true_prob")
    table = dataset.to_table(columns=names)
    renames = {schema.label: "label"}
    if schema.weight:
        renames[schema.weight] = "weight"
    if schema.row_id:
        renames[schema.row_id] = "row_id"
    return table.rename_columns([renames.get(n, n) for n in table.column_names])


@torch.no_grad()
def score_checkpoint(
    loaded: LoadedCheckpoint, data_root: str | Path, split: str, batch_size: int = 4096, progress: bool = True
) -> pa.Table:
    """Primary-head probabilities of ``loaded.model`` on every row of ``split``, in file order."""
    schema = load_schema(data_root)
    check_schema_matches(loaded.schema, schema, loaded.path)
    reader = ParquetReader(data_root, schema, split, batch_size, shuffle=False, drop_last=False)
    model = loaded.model.eval()
    probs = []
    for batch in tqdm(reader, desc=f"score {split}", unit="batch", disable=not progress):
        probs.append(torch.sigmoid(model(batch.dense_features, batch.sparse_features)["primary"]).float().numpy())
    table = side_columns(schema, split)
    prob = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    if len(prob) != table.num_rows:
        raise AssertionError(f"scored {len(prob)} rows but the split has {table.num_rows}")
    return table.add_column(0, "prob", pa.array(prob, pa.float32()))
