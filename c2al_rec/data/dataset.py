"""A dataset on disk: its root, its schema, and the Parquet files of each split.

One handle for everything that needs a split's files: the reader, scoring a run, ``data check``,
the predictor and the trainer's cohort resolution. File order is sorted by name everywhere, so
every consumer sees rows in the same order.

Example::

    ds = Dataset.open("data/synth")
    ds.files("test")                                    # [Path(".../test/part-000.parquet"), ...]
    ds.read_columns("train", ["user_value", "label"])   # pyarrow.Table in file order

Integrity. Every Parquet file of ours is written with page checksums (CRC32 per data page,
``write_parquet``) and read with their verification (``parquet_format``): a flipped byte inside a
column chunk is a ValueError naming the file, not a silently different id. Files written without
checksums (other tools' data) still read: pages without a CRC are not checked.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .schema import DatasetSchema, load_schema

# CRC32 of every page, written by pyarrow when asked (the Parquet format's optional page checksum)
WRITE_OPTIONS: dict[str, Any] = {"write_page_checksum": True}


def parquet_format() -> pads.ParquetFileFormat:
    """The pyarrow Parquet format every reader of ours uses: page checksums verified on read."""
    return pads.ParquetFileFormat(
        default_fragment_scan_options=pads.ParquetFragmentScanOptions(page_checksum_verification=True)
    )


def read_parquet_schema(path: str | Path) -> pa.Schema:
    """The Arrow schema in a Parquet footer (ValueError naming the file when it is not Parquet)."""
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet file (empty, truncated or corrupt?): {e}") from None


def write_parquet(table: pa.Table, path: str | Path, **kwargs: Any) -> None:
    """Write ``table`` to ``path`` with page checksums, through a temp file and ``os.replace``.

    Args:
        table: rows to write.
        path: destination ``.parquet`` file (its directory must exist).
        kwargs: more ``pyarrow.parquet.write_table`` options (e.g. ``row_group_size``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, **WRITE_OPTIONS, **kwargs)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; data files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
        """The split as a pyarrow dataset over ``files(split)``, in file order (page checksums verified).

        Opening reads the first footer only; a file that is not Parquet is a ValueError naming it.
        """
        files = self.files(split)
        for f in files:
            read_parquet_schema(f)  # a 0-byte or foreign file: named here, not in a generic dataset error
        return pads.dataset([str(f) for f in files], format=parquet_format())

    def read_columns(self, split: Optional[str], columns: Sequence[str]) -> pa.Table:
        """Whole columns of ``split`` in file order (ValueError naming the file that cannot be read)."""
        try:
            return self.arrow(split).to_table(columns=list(columns))
        except (pa.ArrowException, OSError) as e:
            error = e
        # pyarrow's message does not say which file failed: find it
        fmt = parquet_format()
        for f in self.files(split):
            try:
                pads.dataset(str(f), format=fmt).to_table(columns=list(columns))
            except (pa.ArrowException, OSError) as e:
                raise ValueError(f"{f}: cannot be read (truncated or corrupt?): {e}") from None
        raise ValueError(f"{self.split_dir(split)}: columns {list(columns)} cannot be read: {error}")

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
