"""``ParquetReader``: a Parquet dataset -> ``Batch``es, deterministic, rank-split and resumable.

Order (``order.py``). The Parquet row groups of a split ("units") are put in a seeded order
(sorted file names, row groups in file order when ``shuffle=False``) and cut, without reading any
data, into ``LANES`` (8) lanes of ``m * B`` rows each plus a remainder of fewer than ``8 * B`` rows.
Each lane is grouped into windows of at least ``shuffle_buffer`` rows whose rows are permuted by a
seeded permutation (a bounded block shuffle). One round is one batch of every lane: global batch
``g < 8 m`` is batch ``g // 8`` of lane ``g % 8``; the remainder's batches follow. The sequence
depends only on (files, seed, epoch, shuffle, shuffle_buffer, batch_size), never on the world
size, so a run can resume at another world size. ``shuffle=False`` is exact file order: global
batch ``g`` is rows ``[g * B, (g + 1) * B)``.

Ranks. Rank ``r`` of ``W`` takes global batches ``start_batch + r``, ``start_batch + r + W``, ...;
every rank yields ``(num_full_batches - start_batch) // W`` batches (DMP's collectives need equal
counts); the rows after the last complete round are dropped and counted in ``dropped_rows``.
A rank reads, validates and decodes only the windows its batches touch: when ``W`` divides 8, its
own lanes (``l = r mod W``: 1/W of every round), the remainder windows of its batches, and the
row groups that straddle its lanes' borders; other world sizes read the lanes ``r mod gcd(W, 8)``.
Windows wholly before ``start_batch`` are skipped unread. Background threads load the next
``PREFETCH_WINDOWS`` windows; a row group two windows of a rank share is decoded once. Memory
holds the current window of each lane the rank reads plus ``PREFETCH_WINDOWS`` more, each of
``max(shuffle_buffer, largest row group)`` rows (1 rank: about 10 windows).

Batches. A window is laid out once as row-major blocks (dense float32 [n, D], single-hot ids
[n, F]; multi-hot as offsets/lengths/values), and each batch is one row gather per block. Ids
leave the reader inside their tables: the schema's rules (``transforms.py``) are checked per row
group and ``out_of_range = "hash"`` ids are taken modulo the table size, as ``SparseIdTransform``
does.

Validation. Construction checks every file's footer against the schema (readable file, columns
present, dtypes); reading verifies page checksums (files written by ``write_parquet``) and checks
values per row group (no nulls, labels in {0, 1}, finite dense values, ``true_prob`` in [0, 1],
non-negative ids, ids inside the table for ``out_of_range = "error"``). Every error is a
ValueError naming the file and column (and the row, for a bad value).

Example::

    reader = ParquetReader("data/synth", split="train", batch_size=512, rank=0, world_size=2,
                           seed=0, epoch=3, start_batch=1200)
    for batch in reader:            # len(reader) batches, each a Batch of 512 rows
        ...
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from c2al_rec.config.errors import echo

from .batch import Batch
from .dataset import Dataset, parquet_format
from .order import EpochOrder, Window
from .schema import DatasetSchema, load_schema
from .transforms import find_bad_id

logger = logging.getLogger(__name__)

TRUE_PROB = "true_prob"
_LOCAL_FS = pyarrow.fs.LocalFileSystem()
PREFETCH_WINDOWS = 2  # windows loaded ahead in background threads
CohortFn = Callable[[pa.Array], np.ndarray]


@dataclass(frozen=True)
class _Unit:
    """One Parquet row group: the unit of reading and of file-order shuffling."""

    file: Path
    row_group: int
    first_row: int  # offset of the row group inside its file (for error messages)
    num_rows: int


def _fragment(fmt: ds.ParquetFileFormat, path: Path, row_groups: Optional[list[int]] = None) -> ds.Fragment:
    try:
        frag = fmt.make_fragment(str(path), filesystem=_LOCAL_FS, row_groups=row_groups)
        frag.ensure_complete_metadata()
        return frag
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet file (truncated or corrupt?): {e}") from None


def num_rows(root: str | Path, split: Optional[str] = "train") -> int:
    """Rows in ``split`` of the dataset at ``root``, from the Parquet footers (no data read)."""
    schema = load_schema(root)
    fmt = parquet_format()
    return sum(rg.num_rows for f in Dataset(schema).files(split) for rg in _fragment(fmt, f).row_groups)


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


class ParquetReader:
    """Iterable of ``Batch`` over one split of a Parquet dataset (see module docstring).

    Args:
        root: dataset root (holding schema.json).
        schema: the dataset schema (default: loaded from ``root``).
        split: split name (None: the dataset is one directory).
        batch_size: rows per batch B.
        rank, world_size: this rank's share of the global batch sequence.
        seed, epoch: fix the epoch's global batch sequence.
        shuffle: seeded row-group order, lanes and row permutation (False: exact file order).
        shuffle_buffer: rows per shuffle window of a lane (0: permute within each row-group
            piece only).
        drop_last: drop the final short batch and incomplete round; False needs world_size 1.
        start_batch: global batches already consumed this epoch (resume).
        cohort_fns: axis name -> function mapping the raw axis column of a batch to int64 [B]
            cohort indices (-1: no cohort).

    Example::

        reader = ParquetReader(root, split="valid", batch_size=1024, shuffle=False, drop_last=False)
        rows = sum(b.batch_size for b in reader)
    """

    def __init__(
        self,
        root: str | Path,
        schema: Optional[DatasetSchema] = None,
        split: Optional[str] = "train",
        batch_size: int = 512,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 65_536,
        drop_last: bool = True,
        start_batch: int = 0,
        cohort_fns: Optional[Mapping[str, CohortFn]] = None,
    ) -> None:
        self.schema = schema if schema is not None else load_schema(root)
        self.root = Path(root)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        if not drop_last and world_size != 1:
            raise ValueError("drop_last=False is only allowed with world_size == 1 (ranks must yield equal counts)")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.epoch, self.shuffle, self.shuffle_buffer = seed, epoch, shuffle, shuffle_buffer
        self.drop_last, self.start_batch = drop_last, start_batch
        self.cohort_fns: Dict[str, CohortFn] = dict(cohort_fns or {})
        axis_names = {a.name for a in self.schema.axes}
        for name in self.cohort_fns:
            if name not in axis_names:
                raise ValueError(f"cohort_fns: '{name}' is not an axis of the schema (axes: {sorted(axis_names)})")
        self.split_dir = self.schema.split_dir(split)
        self._format = parquet_format()  # page checksums verified when a file has them
        self._file_fragments: dict[Path, ds.Fragment] = {}
        self._units, self._has_true_prob = self._preflight(Dataset(self.schema).files(split))
        self.total_rows = sum(u.num_rows for u in self._units)
        if self.total_rows == 0:
            raise ValueError(f"empty dataset: the Parquet files in {self.split_dir} hold no rows")
        self._columns = self._projection()
        self._layout()
        self._plan()

    # ----------------------------------------------------------------------------------------
    # Pre-flight: footers against the schema
    # ----------------------------------------------------------------------------------------
    def _expected_columns(self) -> dict[str, str]:
        s = self.schema
        cols = {s.label: "label"}
        cols.update({c: "dense" for c in s.dense})
        cols.update({f.name: "sparse" for f in s.sparse})
        for a in s.axes:
            cols.setdefault(a.name, "axis")
        if s.weight:
            cols[s.weight] = "weight"
        if s.row_id:
            cols[s.row_id] = "row_id"
        return cols

    def _check_type(self, path: Path, col: str, role: str, t: pa.DataType) -> None:
        s = self.schema
        if role == "label":
            ok, want = _is_int(t) or pa.types.is_boolean(t), "an integer (0/1) column"
        elif role in ("dense", "weight"):
            ok, want = pa.types.is_floating(t), "float32 (or another float type)"
        elif role == "row_id":
            ok, want = _is_int(t), "int64"
        elif role == "sparse":
            feat = next(f for f in s.sparse if f.name == col)
            if feat.multi_hot:
                ok = (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_int(t.value_type)
                want = "list<int64> (multi_hot = true in schema.json)"
            else:
                ok, want = _is_int(t), "int64 (multi_hot = false in schema.json)"
        else:
            return  # axis columns may have any type
        if not ok:
            raise ValueError(f"{path}: column {echo(col)} ({role}) has type {t}, expected {want}")

    def _preflight(self, files: list[Path]) -> tuple[list[_Unit], bool]:
        expected = self._expected_columns()
        units: list[_Unit] = []
        has_true_prob = None
        for path in files:
            frag = _fragment(self._format, path)
            self._file_fragments[path] = frag  # footer parsed once; row groups are read via subset()
            phys = frag.physical_schema
            missing = [c for c in expected if phys.get_field_index(c) < 0]
            if missing:
                raise ValueError(
                    f"{path}: missing column(s) {echo(missing)} that {self.root / 'schema.json'} lists "
                    f"(file columns: {echo(phys.names)})"
                )
            for col, role in expected.items():
                self._check_type(path, col, role, phys.field(col).type)
            here = phys.get_field_index(TRUE_PROB) >= 0
            if here and not pa.types.is_floating(phys.field(TRUE_PROB).type):
                raise ValueError(f"{path}: column '{TRUE_PROB}' has type {phys.field(TRUE_PROB).type}, expected float")
            if has_true_prob is None:
                has_true_prob = here
            elif has_true_prob != here:
                raise ValueError(f"{path}: column '{TRUE_PROB}' is present in some files of {self.split_dir} only")
            first = 0
            for rg in frag.row_groups:
                if rg.num_rows > 0:
                    units.append(_Unit(path, rg.id, first, rg.num_rows))
                first += rg.num_rows
        return units, bool(has_true_prob)

    def _projection(self) -> list[str]:
        s = self.schema
        cols = [s.label, *s.dense, *s.feature_names]
        extra = [s.weight, s.row_id, TRUE_PROB if self._has_true_prob else None, *self.cohort_fns]
        for c in extra:
            if c and c not in cols:
                cols.append(c)
        return cols

    def _layout(self) -> None:
        """Where each column goes in a loaded window and in the KJT (see ``_load_window``)."""
        s = self.schema
        self._single = [f.name for f in s.sparse if not f.multi_hot]
        # ids are validated (>= 0; inside the table for out_of_range = "error") and hashed per window,
        # so they fit their tables: int32 halves the memory of the random row gathers
        self._id_dtype = np.int32 if all(f.num_embeddings < 2**31 for f in s.sparse) else np.int64
        self._hash = {f.name: int(f.num_embeddings) for f in s.sparse if f.out_of_range == "hash"}
        self._extra_role = {c: r for c, r in ((s.weight, "weight"), (s.row_id, "row_id")) if c}
        if self._has_true_prob:
            self._extra_role[TRUE_PROB] = "true_prob"
        self._extra_cols = list(self._extra_role)
        # KJT keys in schema order as runs: ("single", first, end) columns of the single-hot block,
        # ("multi", name, key index)
        self._runs: list[tuple[str, Any, int]] = []
        j = 0
        for i, f in enumerate(s.sparse):
            if f.multi_hot:
                self._runs.append(("multi", f.name, i))
            elif self._runs and self._runs[-1][0] == "single":
                self._runs[-1] = ("single", self._runs[-1][1], j + 1)
                j += 1
            else:
                self._runs.append(("single", j, j + 1))
                j += 1

    # ----------------------------------------------------------------------------------------
    # The global batch sequence
    # ----------------------------------------------------------------------------------------
    def _plan(self) -> None:
        B, W, N = self.batch_size, self.world_size, self.total_rows
        full = N // B
        if self.drop_last:
            self._num_local = max(full - self.start_batch, 0) // W
            consumed = (self.start_batch + self._num_local * W) * B
            self.dropped_rows = max(N - consumed, 0) if self.start_batch <= full else 0
        else:
            total = -(-N // B)
            self._num_local = max(total - self.start_batch, 0)
            self.dropped_rows = 0
        if self.dropped_rows:
            logger.info(
                "%s: dropping %d of %d rows (incomplete last round: batch %d x world %d)",
                self.split_dir,
                self.dropped_rows,
                N,
                B,
                W,
            )

    def __len__(self) -> int:
        return self._num_local

    def _order(self) -> EpochOrder:
        return EpochOrder(
            [u.num_rows for u in self._units],
            self.batch_size,
            seed=self.seed,
            epoch=self.epoch,
            shuffle=self.shuffle,
            shuffle_buffer=self.shuffle_buffer,
        )

    def _schedule(self) -> tuple[list[list[tuple[Window, int, int]]], list[Window], dict]:
        """This rank's batches as window segments, the windows in first-use order, and the last
        batch that uses each window."""
        order = self._order()
        plan = [order.segments(self.start_batch + self.rank + i * self.world_size) for i in range(self._num_local)]
        loads: list[Window] = []
        last_use: dict[tuple[int, int], int] = {}
        for i, segs in enumerate(plan):
            for win, _, _ in segs:
                if win.key not in last_use:
                    loads.append(win)
                last_use[win.key] = i
        return plan, loads, last_use

    def __iter__(self) -> Iterator[Batch]:
        if self._num_local == 0:
            return
        plan, loads, last_use = self._schedule()
        position = {w.key: i for i, w in enumerate(loads)}
        cache = _UnitCache(self._read_unit, Counter(p.unit for w in loads for p in w.pieces))
        # background threads read, validate, decode and lay out the next windows while batches are
        # cut from the current ones (pyarrow and numpy release the GIL); a window is dropped after
        # the last batch of this rank that uses it
        pool = ThreadPoolExecutor(max_workers=PREFETCH_WINDOWS, thread_name_prefix="parquet-reader")
        loaded: dict[tuple[int, int], Future] = {}
        submitted = 0
        try:
            for i, segs in enumerate(plan):
                ahead = min(len(loads), max(position[w.key] for w, _, _ in segs) + 1 + PREFETCH_WINDOWS)
                while submitted < ahead:
                    win = loads[submitted]
                    loaded[win.key] = pool.submit(self._load_window, win, cache)
                    submitted += 1
                batch = self._to_batch([(loaded[w.key].result(), lo, hi) for w, lo, hi in segs])
                for w, _, _ in segs:
                    if last_use[w.key] == i:
                        loaded.pop(w.key, None)
                yield batch
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # ----------------------------------------------------------------------------------------
    # A window as row-major numpy blocks (one row gather per block per batch)
    # ----------------------------------------------------------------------------------------
    def _load_window(self, win: Window, cache: "_UnitCache") -> "_WindowData":
        """Read (or take from the cache), validate and lay out the pieces of ``win``."""
        s = self.schema
        n = win.rows
        d = _WindowData(
            perm=win.permutation(self.seed, self.epoch),
            label=np.empty(n, dtype=np.float32),
            dense=np.empty((n, len(s.dense)), dtype=np.float32),
            single=np.empty((n, len(self._single)), dtype=self._id_dtype),
        )
        for c in self._extra_cols:
            d.extra[c] = np.empty(n, dtype=_EXTRA_DTYPES[self._extra_role[c]])
        multi_parts: dict[str, tuple[list, list]] = {f.name: ([], []) for f in s.sparse if f.multi_hot}
        axis_parts: dict[str, list] = {a: [] for a in self.cohort_fns}
        off = 0
        for p in win.pieces:
            u = self._units[p.unit]
            t = cache.get(p.unit)
            if p.lo or p.hi < t.num_rows:
                t = t.slice(p.lo, p.hi - p.lo)
            c = self._piece_columns(u, p.lo, t)
            rows = slice(off, off + t.num_rows)
            d.label[rows] = c[s.label]
            for j, name in enumerate(s.dense):
                d.dense[rows, j] = c[name]
            for j, name in enumerate(self._single):
                d.single[rows, j] = c[name]
            for name in self._extra_cols:
                d.extra[name][rows] = c[name]
            for name, (lens, vals) in multi_parts.items():
                lens.append(c[name][0])
                vals.append(c[name][1])
            for a in axis_parts:
                col = t.column(a)
                axis_parts[a].extend(col.chunks)
            off += t.num_rows
        for name, (lens, vals) in multi_parts.items():
            values = np.concatenate(vals).astype(self._id_dtype, copy=False)
            index = np.int32 if len(values) < 2**31 else np.int64  # row offsets and lengths
            lengths = np.concatenate(lens).astype(index, copy=False)
            offsets = np.zeros(n + 1, dtype=index)
            np.cumsum(lengths, out=offsets[1:])
            d.multi[name] = (offsets, lengths, values)
        for a, chunks in axis_parts.items():
            d.axes[a] = pa.concat_arrays(chunks) if len(chunks) != 1 else chunks[0]
        return d

    # ----------------------------------------------------------------------------------------
    # Reading and validating one row group
    # ----------------------------------------------------------------------------------------
    def _read_unit(self, index: int) -> pa.Table:
        u = self._units[index]
        try:
            frag = self._file_fragments[u.file].subset(row_group_ids=[u.row_group])
            return frag.to_table(columns=self._columns)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{u.file}: row group {u.row_group} cannot be read (corrupt file?): {e}") from None

    def _fail(self, u: _Unit, col: str, what: str, idx: Optional[int] = None, value: object = None) -> None:
        at = "" if idx is None else f" at row {u.first_row + idx}"
        val = "" if value is None else f": offending value {echo(value)}"
        raise ValueError(f"{u.file}: column {echo(col)}{at} {what}{val}")

    def _piece_columns(self, u: _Unit, lo: int, t: pa.Table) -> dict:
        """Columns of ``t`` (rows ``lo ..`` of unit ``u``) as numpy, validated; multi-hot as
        (lengths, values). A bad value is a ValueError naming the file, column and row."""
        s = self.schema
        out: dict = {}
        for col in [s.label, *s.dense, *s.feature_names, s.weight, s.row_id]:
            if col and t.column(col).null_count:
                idx = int(np.flatnonzero(t.column(col).is_null().to_numpy(zero_copy_only=False))[0])
                self._fail(u, col, "is null (missing values are not allowed)", lo + idx)
        label = out[s.label] = _np(t.column(s.label))
        bad = np.flatnonzero((label != 0) & (label != 1))
        if bad.size:
            self._fail(u, s.label, "has a label outside {0, 1}", lo + int(bad[0]), label[bad[0]].item())
        for col in [*s.dense, *([s.weight] if s.weight else [])]:
            x = out[col] = _np(t.column(col))
            if not np.isfinite(x).all():
                i = int(np.flatnonzero(~np.isfinite(x))[0])
                self._fail(u, col, "has a NaN/inf value", lo + i, x[i].item())
            if col == s.weight and (x < 0).any():
                i = int(np.flatnonzero(x < 0)[0])
                self._fail(u, col, "has a negative weight", lo + i, x[i].item())
        if self._has_true_prob:
            x = out[TRUE_PROB] = t.column(TRUE_PROB).to_numpy()  # nulls become NaN: caught below
            if not ((x >= 0) & (x <= 1)).all():
                i = int(np.flatnonzero(~((x >= 0) & (x <= 1)))[0])
                self._fail(u, TRUE_PROB, "has a value outside [0, 1]", lo + i, x[i].item())
        if s.row_id:
            out[s.row_id] = _np(t.column(s.row_id))
        for f in s.sparse:
            col = t.column(f.name)
            lengths = None
            if f.multi_hot:
                arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
                flat = arr.flatten()
                if flat.null_count:
                    self._fail(u, f.name, "holds a null id inside a list")
                values = flat.to_numpy()
                lengths = arr.value_lengths().to_numpy()
            else:
                values = _np(col)
            bad = find_bad_id(f, values, lengths)
            if bad is not None:
                row, value, what = bad
                self._fail(u, f.name, what, lo + row, value)
            if f.name in self._hash:  # SparseIdTransform's rule: id mod num_embeddings (ids are >= 0 here)
                values = np.remainder(values, self._hash[f.name])
            out[f.name] = values if lengths is None else (lengths, values)
        return out

    # ----------------------------------------------------------------------------------------
    # Window rows -> Batch
    # ----------------------------------------------------------------------------------------
    def _take(self, d: "_WindowData", lo: int, hi: int) -> dict:
        """Stream rows ``[lo, hi)`` of a window (through its permutation) as numpy."""
        idx = slice(lo, hi) if d.perm is None else d.perm[lo:hi]
        sl = isinstance(idx, slice)

        def rows(a: np.ndarray) -> np.ndarray:
            return a[idx] if sl else np.take(a, idx, axis=0)

        out: dict = {"label": rows(d.label), "dense": rows(d.dense), "single": rows(d.single)}
        for k, v in d.extra.items():
            out[("x", k)] = rows(v)
        for k, (offsets, lengths, values) in d.multi.items():
            if sl:
                out[("m", k)] = (lengths[idx], values[offsets[lo] : offsets[hi]])
            else:
                sel = lengths[idx]
                ends = np.cumsum(sel)
                # position of each output value in `values`: its row's start plus its rank in the row
                starts = np.repeat(offsets[idx] - (ends - sel), sel)
                out[("m", k)] = (sel, values[starts + np.arange(int(ends[-1]) if ends.size else 0, dtype=sel.dtype)])
        for k, arr in d.axes.items():
            out[("a", k)] = arr.slice(lo, hi - lo) if sl else arr.take(pa.array(idx))
        return out

    @staticmethod
    def _concat(pieces: list[dict]) -> dict:
        if len(pieces) == 1:
            return pieces[0]
        out: dict = {}
        for k, v in pieces[0].items():
            parts = [p[k] for p in pieces]
            if isinstance(v, pa.Array):
                out[k] = pa.concat_arrays(parts)
            elif isinstance(v, tuple):
                out[k] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
            else:
                out[k] = np.concatenate(parts)
        return out

    def _to_batch(self, segments: list[tuple["_WindowData", int, int]]) -> Batch:
        s = self.schema
        c = self._concat([self._take(d, lo, hi) for d, lo, hi in segments])
        n = len(c["label"])
        single = c["single"]  # [n, features] row-major: written key-major into the KJT values below
        multi_total = sum(len(c[("m", f.name)][1]) for f in s.sparse if f.multi_hot)
        values = np.empty(n * single.shape[1] + multi_total, dtype=np.int64)
        lengths = np.ones(n * len(s.sparse), dtype=np.int32)
        length_per_key = []
        pos = 0
        for kind, a, b in self._runs:
            if kind == "single":
                values[pos : pos + n * (b - a)].reshape(b - a, n)[...] = single[:, a:b].T
                length_per_key += [n] * (b - a)
                pos += n * (b - a)
            else:
                lens, vals = c[("m", a)]
                values[pos : pos + len(vals)] = vals
                lengths[b * n : (b + 1) * n] = lens
                length_per_key.append(len(vals))
                pos += len(vals)
        kjt = KeyedJaggedTensor(
            keys=s.feature_names,
            values=torch.from_numpy(values),
            lengths=torch.from_numpy(lengths),
            stride=n,
            length_per_key=length_per_key,
        )
        weights = torch.from_numpy(c[("x", s.weight)]) if s.weight else torch.ones(n, dtype=torch.float32)
        cohorts = {}
        for axis, fn in self.cohort_fns.items():
            idx = np.asarray(fn(c[("a", axis)]), dtype=np.int64)
            if idx.shape != (n,):
                raise ValueError(f"cohort_fns['{axis}'] returned shape {idx.shape}, expected ({n},)")
            cohorts[axis] = torch.from_numpy(idx)
        row_id = torch.from_numpy(c[("x", s.row_id)]) if s.row_id else None
        true_prob = torch.from_numpy(c[("x", TRUE_PROB)]) if self._has_true_prob else None
        return Batch(
            torch.from_numpy(c["dense"]), kjt, torch.from_numpy(c["label"]), weights, cohorts, row_id, true_prob
        )


_EXTRA_DTYPES = {"weight": np.float32, "row_id": np.int64, "true_prob": np.float32}


def _np(col: pa.ChunkedArray) -> np.ndarray:
    """A null-free column as numpy (zero-copy for one chunk)."""
    return col.chunk(0).to_numpy() if col.num_chunks == 1 else col.to_numpy()


@dataclass
class _WindowData:
    """A loaded window: row-major blocks in lane-stream order before ``perm`` (None: identity)."""

    perm: Optional[np.ndarray]
    label: np.ndarray  # float32 [n]
    dense: np.ndarray  # float32 [n, D]
    single: np.ndarray  # int64 [n, single-hot features]
    extra: dict = field(default_factory=dict)  # weight / row_id / true_prob columns
    multi: dict = field(default_factory=dict)  # name -> (offsets [n + 1], lengths [n], values)
    axes: dict = field(default_factory=dict)  # axis name -> Arrow array (for cohort_fns)


class _UnitCache:
    """Decoded row groups shared by the windows of one rank: each is read once (by the first window
    that needs it, other threads wait for it) and dropped after its last use on this rank."""

    def __init__(self, read: Callable[[int], pa.Table], uses: Counter) -> None:
        self._read, self._uses = read, uses
        self._lock = threading.Lock()
        self._entries: dict[int, Future] = {}
        self.decoded = 0  # units read (for tests)

    def get(self, unit: int) -> pa.Table:
        with self._lock:
            fut = self._entries.get(unit)
            owner = fut is None
            if owner:
                fut = self._entries[unit] = Future()
                self.decoded += 1
        if owner:
            try:
                fut.set_result(self._read(unit))
            except BaseException as e:
                fut.set_exception(e)
        table = fut.result()
        with self._lock:
            self._uses[unit] -= 1
            if self._uses[unit] <= 0:
                self._entries.pop(unit, None)
        return table
