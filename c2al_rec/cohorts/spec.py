"""The cohort spec (``cohorts.json``, docs/formats.md): one axis, disjoint cohorts, a head and a tail.

Numeric cohorts are half-open ``[lower, upper)`` (``None`` = open end); categorical cohorts list
raw values as strings. A hand-written spec may give ``"quantiles": [0.05, 0.95]`` instead of
cohorts; ``resolve_quantiles`` freezes them into bounds on the train split.

Example::

    spec = load_cohort_spec("cohorts.json")           # c2al_rec.cohorts.spec_file
    idx = spec.assign(table.column("user_value"))      # int64 [N], -1 = in no cohort
    y_head = y * (idx == spec.head_index)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from c2al_rec.io import atomic_write_text

SPEC_VERSION = 1


@dataclass
class Cohort:
    """One cohort: numeric bounds ``[lower, upper)`` or categorical ``values``."""

    name: str
    lower: Optional[float] = None
    upper: Optional[float] = None
    values: Optional[list[str]] = None


@dataclass
class CohortSpec:
    """A cohort spec file's content; see the module docstring."""

    axis: str
    kind: str
    cohorts: list[Cohort]
    head: str
    tail: str
    version: int = SPEC_VERSION
    selection: dict[str, Any] = field(default_factory=dict)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    quantiles: Optional[list[float]] = None
    origin: str = field(default="", compare=False)
    """The file the spec was read from (for error messages; not written)."""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cohorts]

    @property
    def head_index(self) -> int:
        return self.names.index(self.head)

    @property
    def tail_index(self) -> int:
        return self.names.index(self.tail)

    @property
    def resolved(self) -> bool:
        return bool(self.cohorts)

    def assign(self, column: pa.Array | pa.ChunkedArray | np.ndarray | Sequence[Any]) -> np.ndarray:
        """Cohort index of each row: int64 [N], -1 for rows in no cohort (or a null value)."""
        if not self.resolved:
            where = self.origin or f"for axis '{self.axis}'"
            raise ValueError(
                f"cohort spec {where}: gives 'quantiles' {self.quantiles}, not cohort bounds; `train` resolves "
                "them on the train split and writes the resolved spec to <run>/cohorts.json: use that file"
            )
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if not isinstance(column, pa.Array):
            column = pa.array(column)
        out = np.full(len(column), -1, dtype=np.int64)
        if self.kind == "numeric":
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            values = np.where(np.isnan(values), np.nan, values)
            for i, c in enumerate(self.cohorts):
                mask = ~np.isnan(values)
                if c.lower is not None:
                    mask &= values >= c.lower
                if c.upper is not None:
                    mask &= values < c.upper
                out[mask & (out < 0)] = i
        else:
            as_str = pc.cast(column, pa.string()) if not pa.types.is_string(column.type) else column
            for i, c in enumerate(self.cohorts):
                mask = pc.is_in(as_str, value_set=pa.array(c.values or [], pa.string()))
                mask = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
                out[mask & (out < 0)] = i
        return out

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["cohorts"] = [
            {k: v for k, v in asdict(c).items() if k == "name" or (k == "values") == (self.kind == "categorical")}
            for c in self.cohorts
        ]
        d.pop("origin")
        if d["quantiles"] is None:
            d.pop("quantiles")
        return d

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file + rename)."""
        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=2) + "\n")


def quantile_name(lo: float, hi: Optional[float]) -> str:
    """``p0-p5``, ``p5-p95``, ``p95+`` style names from quantile fractions."""
    pct = lambda q: f"p{q * 100:g}"  # noqa: E731
    return f"{pct(lo)}+" if hi is None else f"{pct(lo)}-{pct(hi)}"


def quantile_cohorts(values: np.ndarray, quantiles: Sequence[float], merge_ties: bool = False) -> list[Cohort]:
    """Cohorts cut at the empirical quantiles of ``values`` (NaNs ignored), bounds frozen as numbers.

    Args:
        merge_ties: when several quantiles fall on the same value (a heavily tied axis), merge the
            cohorts between them (``p0-p5`` and ``p5-p25`` become ``p0-p25``) instead of failing.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError("cannot resolve quantiles: the axis has no finite values")
    cuts = [float(x) for x in np.quantile(finite, quantiles)]
    kept_q: list[float] = []
    kept_cuts: list[float] = []
    for q, cut in zip(quantiles, cuts):
        lower = kept_cuts[-1] if kept_cuts else -np.inf
        if not ((finite >= lower) & (finite < cut)).any():  # the cohort left of this cut would be empty
            if not merge_ties:
                raise ValueError(f"quantiles {list(quantiles)} give an empty cohort (cut-points {cuts} repeat)")
            continue
        kept_q.append(q)
        kept_cuts.append(cut)
    while kept_cuts and not (finite >= kept_cuts[-1]).any():  # an empty top cohort
        if not merge_ties:
            raise ValueError(f"quantiles {list(quantiles)} give an empty top cohort (cut-points {cuts})")
        kept_q.pop()
        kept_cuts.pop()
    edges_q = [0.0, *kept_q]
    bounds: list[Optional[float]] = [None, *kept_cuts, None]
    return [
        Cohort(quantile_name(edges_q[i], kept_q[i] if i < len(kept_q) else None), bounds[i], bounds[i + 1])
        for i in range(len(bounds) - 1)
    ]


def resolve_quantiles(spec: CohortSpec, values: np.ndarray, labels: np.ndarray) -> CohortSpec:
    """Freeze a quantile-form spec into bounds computed on ``values`` (the train split's axis column).

    Head and tail default to the two extreme cohorts, head being the one with the higher
    positive rate; names given in the spec are kept.
    """
    if spec.resolved:
        return spec
    assert spec.quantiles is not None
    cohorts = quantile_cohorts(values, spec.quantiles)
    resolved = CohortSpec(
        axis=spec.axis,
        kind=spec.kind,
        cohorts=cohorts,
        head=spec.head,
        tail=spec.tail,
        selection=spec.selection,
        pairs=spec.pairs,
        source={**spec.source, "resolved_from_quantiles": spec.quantiles},
    )
    names = resolved.names
    if not spec.head or not spec.tail:
        idx = resolved.assign(values)
        first, last = 0, len(cohorts) - 1
        rate = lambda i: float(labels[idx == i].mean()) if (idx == i).any() else 0.0  # noqa: E731
        resolved.head, resolved.tail = (
            (names[last], names[first]) if rate(last) >= rate(first) else (names[first], names[last])
        )
    for key in ("head", "tail"):
        if getattr(resolved, key) not in names:
            raise ValueError(
                f"cohort spec: '{key}' {getattr(resolved, key)!r} is not one of the resolved cohorts {names}"
            )
    return resolved
