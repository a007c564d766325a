"""Score a trained run on a dataset split into a predictions table (the same columns as `predict`).

The table has ``prob`` (float32) in input row order, plus ``label``, ``weight``, ``row_id``,
``true_prob`` and the axis columns when the data has them, so evaluation treats a run and an
exported model's predictions file alike.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from c2al_rec.data.dataset import Dataset
from c2al_rec.data.reader import ParquetReader

from .load import TrainedRun, check_schema_matches


def side_columns(dataset: Dataset, split: str) -> pa.Table:
    """label / weight / row_id / true_prob / axis columns of a split, in the reader's file order."""
    schema = dataset.schema
    names = [schema.label] + [c for c in (schema.weight, schema.row_id) if c]
    names += [a.name for a in schema.axes if a.name not in names]
    if "true_prob" in dataset.arrow(split).schema.names:
        names.append("true_prob")
    table = dataset.read_columns(split, names)
    renames = {schema.label: "label"}
    if schema.weight:
        renames[schema.weight] = "weight"
    if schema.row_id:
        renames[schema.row_id] = "row_id"
    return table.rename_columns([renames.get(n, n) for n in table.column_names])


@torch.no_grad()
def score_split(
    run: TrainedRun, data_root: str | Path, split: str, batch_size: int = 4096, progress: Optional[bool] = None
) -> pa.Table:
    """Primary-head probabilities of ``run.model`` on every row of ``split``, in file order.

    ``progress``: a tqdm bar (None: only when stderr is a terminal, so log files get no bar frames).
    """
    if progress is None:
        progress = sys.stderr.isatty()
    dataset = Dataset.open(data_root)
    check_schema_matches(run.schema, dataset.schema, run.path)
    reader = ParquetReader(data_root, dataset.schema, split, batch_size, shuffle=False, drop_last=False)
    model = run.model.eval()
    probs = []
    for batch in tqdm(reader, desc=f"score {split}", unit="batch", disable=not progress):
        probs.append(torch.sigmoid(model(batch.dense_features, batch.sparse_features)["primary"]).float().numpy())
    table = side_columns(dataset, split)
    prob = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    if len(prob) != table.num_rows:
        raise AssertionError(f"scored {len(prob)} rows but the split has {table.num_rows}")
    return table.add_column(0, "prob", pa.array(prob, pa.float32()))
