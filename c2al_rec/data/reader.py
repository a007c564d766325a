"""``ParquetReader``: a Parquet dataset -> ``Batch``es, deterministic, rank-split and resumable.

Order. The Parquet row groups of a split ("units") are put in a seeded order (sorted file names,
row groups in file order when ``shuffle=False``), grouped into windows of at least
``shuffle_buffer`` rows, and the rows of each window are permuted by a seeded permutation (a
bounded block shuffle: memory holds one window). Concatenated, the windows give the epoch's row
stream; global batch ``g`` is stream rows ``[g * B, (g + 1) * B)``. The stream depends only on
(files, seed, epoch, shuffle, shuffle_buffer), never on the world size, so a run can resume at
another world size.

Ranks. Rank ``r`` of ``W`` takes global batches ``start_batch + r``, ``start_batch + r + W``, ...;
every rank yields ``(num_full_batches - start_batch) // W`` batches (DMP's collectives need equal
counts); the rows after the last complete round are dropped and counted in ``dropped_rows``.
Each rank reads the windows its batches touch (in practice all of them: the I/O of a window is
repeated on every rank, the conversion to tensors is not) and skips, unread, the windows wholly
before ``start_batch``. Background threads load the next ``PREFETCH_WINDOWS`` windows; memory
holds about ``PREFETCH_WINDOWS + 1`` windows of ``max(shuffle_buffer, largest row group)`` rows.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Mapping, Optional

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from .batch import Batch
from .dataset import Dataset, parquet_format
from .schema import DatasetSchema, load_schema
from .transforms import SparseIdTransform, find_bad_id

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
        shuffle: seeded row-group order and row permutation (False: exact file order).
        shuffle_buffer: rows per shuffle window (0: permute within each row group only).
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
        self.transform = SparseIdTransform(self.schema.sparse)
        self.split_dir = self.schema.split_dir(split)
        self._format = parquet_format()  # page checksums verified when a file has them
        self._file_fragments: dict[Path, ds.Fragment] = {}
        self._units, self._has_true_prob = self._preflight(Dataset(self.schema).files(split))
        self.total_rows = sum(u.num_rows for u in self._units)
        if self.total_rows == 0:
            raise ValueError(f"empty dataset: the Parquet files in {self.split_dir} hold no rows")
        self._columns = self._projection()
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
            raise ValueError(f"{path}: column '{col}' ({role}) has type {t}, expected {want}")

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
                    f"{path}: missing column(s) {missing} that {self.root / 'schema.json'} lists "
                    f"(file columns: {phys.names})"
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

    def _windows(self) -> list[list[_Unit]]:
        units = list(self._units)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(units))
            units = [units[i] for i in order]
        windows: list[list[_Unit]] = []
        cur: list[_Unit] = []
        rows = 0
        for u in units:
            cur.append(u)
            rows += u.num_rows
            if rows >= self.shuffle_buffer:
                windows.append(cur)
                cur, rows = [], 0
        if cur:
            windows.append(cur)
        return windows

    def _owned(self, g: int) -> bool:
        k, rem = divmod(g - self.start_batch, self.world_size)
        return g >= self.start_batch and rem == self.rank and k < self._num_local

    def __iter__(self) -> Iterator[Batch]:
        if self._num_local == 0:
            return
        B, N = self.batch_size, self.total_rows
        first_g = self.start_batch + self.rank
        last_g = self.start_batch + (self._num_local - 1) * self.world_size + self.rank
        begin, end = first_g * B, min((last_g + 1) * B, N)
        # windows this rank needs, with their stream offsets [ws, we)
        needed = []
        ws = 0
        for w, window in enumerate(self._windows()):
            we = ws + sum(u.num_rows for u in window)
            if ws >= end:
                break
            if we > begin:  # windows wholly before this rank's first batch (e.g. on resume) are not read
                needed.append((w, window, ws, we))
            ws = we
        pending: dict[int, list[dict]] = {}
        # background threads read, validate, decode and permute the next windows while this one is
        # turned into batches (pyarrow and numpy release the GIL); memory: PREFETCH_WINDOWS + 1 windows
        pool = ThreadPoolExecutor(max_workers=PREFETCH_WINDOWS, thread_name_prefix="parquet-reader")
        try:
            futures = [pool.submit(self._load_window, *job[:2]) for job in needed[:PREFETCH_WINDOWS]]
            for i, (w, window, ws, we) in enumerate(needed):
                cols = futures.pop(0).result()
                if i + PREFETCH_WINDOWS < len(needed):
                    futures.append(pool.submit(self._load_window, *needed[i + PREFETCH_WINDOWS][:2]))
                for g in range(max(ws // B, first_g), min(-(-we // B), last_g + 1)):
                    if not self._owned(g):
                        continue
                    gs, ge = g * B, min((g + 1) * B, N)
                    lo, hi = max(gs, ws) - ws, min(ge, we) - ws
                    pending.setdefault(g, []).append(self._gather(cols, slice(lo, hi)))
                    if ge <= we:
                        yield self._to_batch(self._concat(pending.pop(g)))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        assert not pending, "internal: a batch was left incomplete"

    def _load_window(self, w: int, window: list[_Unit]) -> dict:
        """Read, validate and decode window ``w``, rows already in stream order (permuted when shuffling)."""
        cols = self._window_columns(pa.concat_tables([self._read_unit(u) for u in window]))
        if self.shuffle:
            perm = np.random.default_rng([self.seed, self.epoch, w, 1]).permutation(cols["n"])
            cols = {"n": cols["n"], **self._gather(cols, perm)}
            for k, v in cols.items():  # multi-hot back to (offsets, lengths, values) for slicing
                if isinstance(v, tuple):
                    lengths, values = v
                    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
                    np.cumsum(lengths, out=offsets[1:])
                    cols[k] = (offsets, lengths, values)
        return cols

    # ----------------------------------------------------------------------------------------
    # Window columns as numpy (gathered per batch with one fancy index per column group)
    # ----------------------------------------------------------------------------------------
    def _window_columns(self, t: pa.Table) -> dict:
        """One numpy array per column (zero-copy from Arrow where possible); multi-hot as
        (offsets, lengths, values); axis columns for cohort_fns stay Arrow arrays."""
        s = self.schema
        t = t.combine_chunks()
        cols: dict = {"n": t.num_rows}
        for c in [s.label, *s.dense, s.weight, s.row_id, TRUE_PROB if self._has_true_prob else None]:
            if c:
                cols[c] = t.column(c).to_numpy()
        for f in s.sparse:
            col = t.column(f.name)
            if f.multi_hot:
                arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
                lengths = arr.value_lengths().to_numpy().astype(np.int64)
                offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
                np.cumsum(lengths, out=offsets[1:])
                cols[f.name] = (offsets, lengths, arr.flatten().to_numpy().astype(np.int64, copy=False))
            else:
                cols[f.name] = col.to_numpy().astype(np.int64, copy=False)
        for axis in self.cohort_fns:
            col = t.column(axis)
            cols[("axis", axis)] = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
        return cols

    def _gather(self, cols: dict, idx) -> dict:
        """Rows ``idx`` (an index array or a slice) of a window's columns."""
        out: dict = {}
        for k, v in cols.items():
            if k == "n":
                continue
            if isinstance(k, tuple):
                out[k] = v.slice(idx.start, idx.stop - idx.start) if isinstance(idx, slice) else v.take(pa.array(idx))
            elif isinstance(v, tuple):
                offsets, lengths, values = v
                if isinstance(idx, slice):
                    out[k] = (lengths[idx], values[offsets[idx.start] : offsets[idx.stop]])
                else:
                    sel = lengths[idx]
                    total = int(sel.sum())
                    # position of each output value in `values`: its row's start plus its rank in the row
                    starts = np.repeat(offsets[idx] - (np.cumsum(sel) - sel), sel)
                    out[k] = (sel, values[starts + np.arange(total)])
            else:
                out[k] = v[idx]
        return out

    @staticmethod
    def _concat(pieces: list[dict]) -> dict:
        if len(pieces) == 1:
            return pieces[0]
        out: dict = {}
        for k, v in pieces[0].items():
            parts = [p[k] for p in pieces]
            if isinstance(k, tuple):
                out[k] = pa.concat_arrays(parts)
            elif isinstance(v, tuple):
                out[k] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
            else:
                out[k] = np.concatenate(parts)
        return out

    # ----------------------------------------------------------------------------------------
    # Reading and validating one row group
    # ----------------------------------------------------------------------------------------
    def _read_unit(self, u: _Unit) -> pa.Table:
        try:
            frag = self._file_fragments[u.file].subset(row_group_ids=[u.row_group])
            table = frag.to_table(columns=self._columns)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{u.file}: row group {u.row_group} cannot be read (corrupt file?): {e}") from None
        self._validate(u, table)
        return table

    def _fail(self, u: _Unit, col: str, what: str, idx: Optional[int] = None, value: object = None) -> None:
        at = "" if idx is None else f" at row {u.first_row + idx}"
        val = "" if value is None else f": offending value {value!r}"
        raise ValueError(f"{u.file}: column '{col}'{at} {what}{val}")

    def _validate(self, u: _Unit, t: pa.Table) -> None:
        s = self.schema
        for col in [s.label, *s.dense, *s.feature_names, s.weight, s.row_id]:
            if col and t.column(col).null_count:
                idx = int(np.flatnonzero(t.column(col).is_null().to_numpy(zero_copy_only=False))[0])
                self._fail(u, col, "is null (missing values are not allowed)", idx)
        label = t.column(s.label).to_numpy()
        bad = np.flatnonzero((label != 0) & (label != 1))
        if bad.size:
            self._fail(u, s.label, "has a label outside {0, 1}", int(bad[0]), label[bad[0]].item())
        for col in [*s.dense, *([s.weight] if s.weight else [])]:
            x = t.column(col).to_numpy()
            bad = np.flatnonzero(~np.isfinite(x))
            if bad.size:
                self._fail(u, col, "has a NaN/inf value", int(bad[0]), x[bad[0]].item())
            if col == s.weight and (x < 0).any():
                i = int(np.flatnonzero(x < 0)[0])
                self._fail(u, col, "has a negative weight", i, x[i].item())
        if self._has_true_prob:
            x = t.column(TRUE_PROB).to_numpy(zero_copy_only=False)  # nulls become NaN: caught below
            bad = np.flatnonzero(~((x >= 0) & (x <= 1)))
            if bad.size:
                self._fail(u, TRUE_PROB, "has a value outside [0, 1]", int(bad[0]), x[bad[0]].item())
        for f in s.sparse:
            col = t.column(f.name)
            lengths = None
            if f.multi_hot:
                arr = col.combine_chunks()
                values = arr.flatten()
                if values.null_count:
                    self._fail(u, f.name, "holds a null id inside a list")
                values = values.to_numpy()
                lengths = arr.value_lengths().to_numpy()
            else:
                values = col.to_numpy()
            bad = find_bad_id(f, values, lengths)
            if bad is not None:
                row, value, what = bad
                self._fail(u, f.name, what, row, value)

    # ----------------------------------------------------------------------------------------
    # Arrow -> tensors
    # ----------------------------------------------------------------------------------------
    def _to_batch(self, c: dict) -> Batch:
        s = self.schema
        n = len(c[s.label])
        labels = torch.from_numpy(c[s.label].astype(np.float32))
        dense_np = np.empty((n, len(s.dense)), dtype=np.float32)
        for j, name in enumerate(s.dense):
            dense_np[:, j] = c[name]
        dense = torch.from_numpy(dense_np)
        values, lengths = [], []
        for f in s.sparse:
            if f.multi_hot:
                lens, vals = c[f.name]
                values.append(vals)
                lengths.append(lens.astype(np.int32))
            else:
                values.append(c[f.name])
                lengths.append(np.ones(n, dtype=np.int32))
        kjt = KeyedJaggedTensor(
            keys=s.feature_names,
            values=torch.from_numpy(np.concatenate(values)) if values else torch.zeros(0, dtype=torch.int64),
            lengths=torch.from_numpy(np.concatenate(lengths)) if lengths else torch.zeros(0, dtype=torch.int32),
            stride=n,
            length_per_key=[len(v) for v in values],
        )
        kjt = self.transform(kjt)
        weights = torch.from_numpy(c[s.weight].astype(np.float32)) if s.weight else torch.ones(n, dtype=torch.float32)
        cohorts = {}
        for axis, fn in self.cohort_fns.items():
            idx = np.asarray(fn(c[("axis", axis)]), dtype=np.int64)
            if idx.shape != (n,):
                raise ValueError(f"cohort_fns['{axis}'] returned shape {idx.shape}, expected ({n},)")
            cohorts[axis] = torch.from_numpy(idx)
        row_id = torch.from_numpy(c[s.row_id].astype(np.int64)) if s.row_id else None
        true_prob = torch.from_numpy(c[TRUE_PROB].astype(np.float32)) if self._has_true_prob else None
        return Batch(dense, kjt, labels, weights, cohorts, row_id, true_prob)
