"""A dataset on disk: its root, its schema, and the Parquet files of each split.

One handle for everything that needs a split's files: the reader, scoring a run, ``data check``,
the predictor and the trainer's cohort resolution. File order is sorted by name everywhere, so
every consumer sees rows in the same order.

Example::

    ds = Dataset.open("data/synth")
    ds.files("test")                                    # [Path(".../test/part-000.parquet"), ...]
    ds.read_columns("train", ["user_value", "label"])   # pyarrow.Table in file order
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import pyarrow as pa
import pyarrow.dataset as pads

from .schema import DatasetSchema, load_schema


class Dataset:
    """Root + schema of a dataset; lists and reads the Parquet files of a split.

    Args:
        schema: the dataset's schema (its ``root`` is the dataset root).
    """

    def __init__(self, schema: DatasetSchema) -> None:
        self.schema = schema

    @classmethod
    def open(cls, root: str | Path) -> "Dataset":
        """Load ``<root>/schema.json`` (FileNotFoundError / ValueError naming the file)."""
        return cls(load_schema(root))

    @property
    def root(self) -> Path:
        return self.schema.root

    def split_dir(self, split: Optional[str]) -> Path:
        """Directory of ``split`` (the root for a dataset without splits)."""
        return self.schema.split_dir(split)

    def files(self, split: Optional[str]) -> list[Path]:
        """Sorted ``*.parquet`` files of ``split`` (ValueError naming the directory when there are none)."""
        directory = self.split_dir(split)
        if not directory.is_dir():
            raise ValueError(f"empty dataset: {directory} is not a directory")
        files = sorted(directory.glob("*.parquet"))
        if not files:
            raise ValueError(f"empty dataset: no *.parquet files in {directory}")
        return files

    def arrow(self, split: Optional[str]) -> pads.Dataset:
        """The split as a pyarrow dataset over ``files(split)``, in file order."""
        return pads.dataset([str(f) for f in self.files(split)], format="parquet")

    def read_columns(self, split: Optional[str], columns: Sequence[str]) -> pa.Table:
        """Whole columns of ``split`` in file order."""
        return self.arrow(split).to_table(columns=list(columns))

    def fingerprint(self, split: Optional[str] = None) -> dict[str, Any]:
        """Identity of the data a run read: Parquet file names and sizes of ``split`` (all splits when
        None) plus the schema hash."""
        splits = sorted(self.schema.splits) if split is None and self.schema.splits else [split]
        files = []
        for s in splits:
            directory = self.split_dir(s)
            for p in sorted(directory.glob("*.parquet")):
                files.append({"file": str(p.relative_to(self.root)), "bytes": p.stat().st_size})
        return {"schema_hash": self.schema.schema_hash(), "files": files}
