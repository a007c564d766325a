"""Dataset schema: what ``<root>/schema.json`` says about the columns of a Parquet dataset.

A dataset is a root directory with ``schema.json`` and one sub-directory of Parquet files per
split (``train/``, ``valid/``, ``test/``); a dataset without splits is one directory of files.

Example::

    schema = load_schema("data/synth")
    schema.split_dir("train")            # Path("data/synth/train")
    [f.name for f in schema.sparse]      # ["user_id", "ad_id", ...]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from c2al_rec.config.errors import echo

SCHEMA_FILE = "schema.json"
_POOLINGS = ("sum", "mean")
_OUT_OF_RANGE = ("error", "hash")
_AXIS_KINDS = ("numeric", "categorical")


@dataclass
class SparseFeature:
    """One sparse id feature (one embedding table).

    Args:
        name: column name; int64 (single-hot) or list<int64> (multi-hot).
        num_embeddings: table size; valid ids are ``[0, num_embeddings)``.
        multi_hot: the column is a list of ids per row.
        pooling: ``"sum"`` or ``"mean"`` over a row's ids.
        out_of_range: ``"error"`` rejects ids ``>= num_embeddings``; ``"hash"`` folds them (modulo).
    """

    name: str
    num_embeddings: int
    multi_hot: bool = False
    pooling: str = "sum"
    out_of_range: str = "error"


@dataclass
class Axis:
    """A semantic axis along which rows fall into cohorts.

    Args:
        name: column name (any type).
        kind: ``"numeric"`` (cohorts by bounds / percentiles) or ``"categorical"`` (by value).
        sensitive: a protected attribute: usable for cohorts, never a model feature.
    """

    name: str
    kind: str = "categorical"
    sensitive: bool = False


@dataclass
class DatasetSchema:
    """The columns of a dataset and its splits (``schema.json``); see module docstring.

    Args:
        label: binary label column (0/1 integers).
        dense: dense float feature columns, in model order ([B, D]).
        sparse: sparse features, in KJT key order.
        axes: cohort axes.
        weight: optional per-row weight column.
        row_id: optional int64 row identifier column (passed through).
        splits: split name -> sub-directory; empty for a dataset that is one directory.
        root: the dataset root (set by ``load_schema``; not written to JSON).
    """

    label: str
    dense: list[str] = field(default_factory=list)
    sparse: list[SparseFeature] = field(default_factory=list)
    axes: list[Axis] = field(default_factory=list)
    weight: Optional[str] = None
    row_id: Optional[str] = None
    splits: dict[str, str] = field(default_factory=dict)
    root: Path = field(default_factory=Path)

    def __post_init__(self) -> None:
        where = f"{self.root / SCHEMA_FILE}"
        names = [self.label, *self.dense, *(f.name for f in self.sparse)]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"{where}: columns listed twice among label/dense/sparse: {echo(sorted(dup))}")
        for f in self.sparse:
            n = f.num_embeddings  # JSON may hold "1000" or 1e9: both would crash table construction later
            if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
                raise ValueError(
                    f"{where}: sparse feature {echo(f.name)}: num_embeddings must be > 0 (an integer), got {echo(n)}"
                )
            if f.pooling not in _POOLINGS:
                raise ValueError(
                    f"{where}: sparse feature {echo(f.name)}: pooling must be one of {_POOLINGS}, got {echo(f.pooling)}"
                )
            if f.out_of_range not in _OUT_OF_RANGE:
                raise ValueError(
                    f"{where}: sparse feature {echo(f.name)}: out_of_range must be one of {_OUT_OF_RANGE}, "
                    f"got {echo(f.out_of_range)}"
                )
        features = set(self.dense) | {f.name for f in self.sparse}
        axis_names = [a.name for a in self.axes]
        dup_axes = sorted({n for n in axis_names if axis_names.count(n) > 1})
        if dup_axes:
            # two entries for one column could disagree on kind/sensitive; cohorts are per axis name
            raise ValueError(f"{where}: axis {echo(dup_axes[0])} is listed twice in 'axes'")
        for a in self.axes:
            if a.kind not in _AXIS_KINDS:
                raise ValueError(f"{where}: axis {echo(a.name)}: kind must be one of {_AXIS_KINDS}, got {echo(a.kind)}")
            if a.sensitive and a.name in features:
                raise ValueError(
                    f"{where}: axis {echo(a.name)} is sensitive and must not also be a dense or sparse feature"
                )

    # ---------------------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        """Sparse feature names in KJT key order."""
        return [f.name for f in self.sparse]

    def axis(self, name: str) -> Axis:
        """The axis called ``name`` (ValueError listing the axes if there is none)."""
        for a in self.axes:
            if a.name == name:
                return a
        raise ValueError(f"{self.root / SCHEMA_FILE}: no axis {echo(name)} (axes: {echo([a.name for a in self.axes])})")

    def split_dir(self, split: Optional[str] = None) -> Path:
        """Directory holding the Parquet files of ``split`` (the root when the dataset has no splits)."""
        if not self.splits or split is None:
            return self.root
        if split not in self.splits:
            raise ValueError(f"{self.root / SCHEMA_FILE}: no split {echo(split)} (splits: {echo(sorted(self.splits))})")
        return self.root / self.splits[split]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what ``schema.json`` holds)."""
        d = asdict(self)
        d.pop("root")
        return d

    def schema_hash(self) -> str:
        """sha256 of the canonical JSON form (key order and whitespace do not matter)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def save(self, root: Optional[str | Path] = None) -> Path:
        """Write ``schema.json`` into ``root`` (default ``self.root``); returns its path."""
        path = Path(root if root is not None else self.root) / SCHEMA_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def schema_from_dict(d: dict[str, Any], root: str | Path = ".") -> DatasetSchema:
    """Build a schema from its JSON form, with errors naming the offending key."""
    where = Path(root) / SCHEMA_FILE
    if not isinstance(d, dict) or "label" not in d:
        raise ValueError(f"{where}: expected a JSON object with at least a 'label' key")
    known = {"label", "dense", "sparse", "axes", "weight", "row_id", "splits"}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"{where}: unknown keys {echo(sorted(unknown))} (known: {sorted(known)})")
    try:
        sparse = [SparseFeature(**s) for s in d.get("sparse", [])]
        axes = [Axis(**a) for a in d.get("axes", [])]
    except TypeError as e:
        raise ValueError(f"{where}: bad sparse/axes entry: {e}") from None
    return DatasetSchema(
        label=d["label"],
        dense=list(d.get("dense", [])),
        sparse=sparse,
        axes=axes,
        weight=d.get("weight"),
        row_id=d.get("row_id"),
        splits=dict(d.get("splits") or {}),
        root=Path(root),
    )


def load_schema(root: str | Path) -> DatasetSchema:
    """Load ``<root>/schema.json``.

    Raises:
        FileNotFoundError: no schema.json under ``root``.
        ValueError: not valid JSON, or inconsistent (the message names the file and key).
    """
    root = Path(root)
    path = root / SCHEMA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (a dataset root holds schema.json)")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    return schema_from_dict(d, root)
