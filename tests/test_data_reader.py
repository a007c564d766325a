"""ParquetReader: contents, order, rank split, resume, cohorts, and bad input (tier 1, single process)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from torchrec.streamable import Pipelineable

from c2al_rec.data import Batch, ParquetReader, num_rows
from tests.data_utils import replace_column, write_tiny

N = 1000


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    write_tiny(tmp_path)
    return tmp_path


def ids(reader) -> list[list[int]]:
    return [b.row_id.tolist() for b in reader]


def flat(batches: list[list[int]]) -> list[int]:
    return [r for b in batches for r in b]


def assert_rows_consistent(b: Batch) -> None:
    """Every value of a batch is the function of its row id that ``tiny_table`` wrote."""
    r = b.row_id
    torch.testing.assert_close(b.dense_features, torch.stack([r * 0.5, -r.float()], 1).float())
    torch.testing.assert_close(b.labels, (r % 4 == 0).float())
    kjt = b.sparse_features.to_dict()
    assert kjt["user"].values().tolist() == (r % 50).tolist()
    assert kjt["item"].values().tolist() == ((r % 23) % 7).tolist()  # out_of_range = hash
    assert kjt["tags"].lengths().tolist() == (r % 3).tolist()
    assert kjt["tags"].values().tolist() == [(x + j) % 10 for x in r.tolist() for j in range(x % 3)]


def test_contents_match_rows_in_file_order(ds: Path) -> None:
    reader = ParquetReader(ds, split=None, batch_size=64, shuffle=False, drop_last=False)
    batches = list(reader)
    assert len(batches) == len(reader) == 16 and batches[-1].batch_size == N - 15 * 64
    assert num_rows(ds, None) == N
    rid = torch.cat([b.row_id for b in batches])
    assert rid.tolist() == list(range(N))
    b = batches[1]
    r = b.row_id
    assert isinstance(b, Pipelineable)
    assert b.dense_features.dtype == torch.float32 and b.dense_features.shape == (64, 2)
    torch.testing.assert_close(b.dense_features, torch.stack([r * 0.5, -r.float()], 1).float())
    torch.testing.assert_close(b.labels, (r % 4 == 0).float())
    torch.testing.assert_close(b.weights, torch.ones(64))
    assert b.true_prob is None and b.cohorts == {}
    kjt = b.sparse_features.to_dict()
    assert b.sparse_features.keys() == ["user", "tags", "item"]
    assert kjt["user"].values().tolist() == (r % 50).tolist()
    assert kjt["item"].values().tolist() == ((r % 23) % 7).tolist()  # out_of_range = hash
    assert kjt["tags"].lengths().tolist() == (r % 3).tolist()
    expect_tags = [(x + j) % 10 for x in r.tolist() for j in range(x % 3)]
    assert kjt["tags"].values().tolist() == expect_tags
    assert kjt["user"].values().dtype == torch.int64
    moved = b.to(torch.device("cpu"), non_blocking=True)
    assert isinstance(moved, Batch) and torch.equal(moved.labels, b.labels)


def test_shuffle_is_a_seeded_permutation(ds: Path) -> None:
    def order(**kw):
        return flat(ids(ParquetReader(ds, split=None, batch_size=50, drop_last=False, shuffle_buffer=200, **kw)))

    for b in ParquetReader(ds, split=None, batch_size=50, seed=1, shuffle_buffer=200):
        assert_rows_consistent(b)  # gathers across shuffled windows keep rows intact
    a = order(seed=1, epoch=0)
    assert sorted(a) == list(range(N))  # every row exactly once
    assert a == order(seed=1, epoch=0)
    assert a != order(seed=2, epoch=0) and a != order(seed=1, epoch=1)
    assert a != list(range(N))
    # the window shuffle mixes rows from different row groups within one batch
    first = a[:50]
    assert len({r // 64 for r in first}) > 1


def test_ranks_split_the_global_sequence(ds: Path) -> None:
    kw = dict(split=None, batch_size=32, seed=3, shuffle_buffer=128)
    glob = ids(ParquetReader(ds, **kw))  # world 1: 31 full batches, 8 rows dropped
    assert len(glob) == 31
    r0 = ParquetReader(ds, rank=0, world_size=2, **kw)
    r1 = ParquetReader(ds, rank=1, world_size=2, **kw)
    assert len(r0) == len(r1) == 15
    assert r0.dropped_rows == r1.dropped_rows == N - 30 * 32
    assert ids(r0) == glob[0:30:2] and ids(r1) == glob[1:30:2]
    r = [ParquetReader(ds, rank=k, world_size=3, **kw) for k in range(3)]
    assert [len(x) for x in r] == [10, 10, 10] and r[0].dropped_rows == N - 30 * 32
    assert ids(r[2]) == glob[2:30:3]


def test_resume_loses_and_repeats_no_row(ds: Path) -> None:
    kw = dict(split=None, batch_size=32, seed=5, epoch=2, shuffle_buffer=100)
    full = [ids(ParquetReader(ds, rank=k, world_size=2, **kw)) for k in range(2)]
    uninterrupted = Counter(flat(full[0]) + flat(full[1]))
    assert max(uninterrupted.values()) == 1 and sum(uninterrupted.values()) == 30 * 32
    done = 6  # global batches completed before the interruption (3 rounds of 2 ranks)
    before = flat(full[0][:3]) + flat(full[1][:3])
    for world in (2, 3):  # resume at the same and at another world size
        after = []
        for k in range(world):
            rd = ParquetReader(ds, rank=k, world_size=world, start_batch=done, **kw)
            assert len(rd) == (31 - done) // world
            after += flat(ids(rd))
        assert Counter(before + after) == uninterrupted, world
    # world 1 can also use batch 30, which the 2-rank run dropped: exactly batches 0..30
    glob = ids(ParquetReader(ds, **kw))
    after = flat(ids(ParquetReader(ds, start_batch=done, **kw)))
    assert Counter(before + after) == Counter(flat(glob)) and len(set(before + after)) == 31 * 32
    # resumed batches are exactly the global batches after `done`, batch by batch
    assert ids(ParquetReader(ds, rank=1, world_size=3, start_batch=done, **kw)) == glob[done + 1 : done + 25 : 3]


def test_resume_past_the_end_yields_nothing(ds: Path) -> None:
    rd = ParquetReader(ds, split=None, batch_size=32, start_batch=40)
    assert len(rd) == 0 and list(rd) == []


def test_cohort_fns_weights_true_prob(tmp_path: Path) -> None:
    def add(i, t):
        t = t.append_column("w", pa.array(np.full(t.num_rows, 2.0, dtype=np.float32)))
        return t.append_column("true_prob", pa.array(np.full(t.num_rows, 0.25)))

    schema = write_tiny(tmp_path, splits=True, table_fn=add)
    schema.weight = "w"
    schema.save()
    fns = {
        "value": lambda a: np.digitize(a.to_numpy(), [5.0, 95.0]) - 1,  # -1 below 5
        "gender": lambda a: (np.asarray(a.to_pylist()) == "F").astype(np.int64),
    }
    b = next(iter(ParquetReader(tmp_path, batch_size=100, cohort_fns=fns, seed=1)))
    r = b.row_id
    assert b.cohorts["value"].tolist() == (np.digitize((r % 100).numpy(), [5.0, 95.0]) - 1).tolist()
    assert b.cohorts["gender"].tolist() == (r % 2 == 0).long().tolist()
    torch.testing.assert_close(b.weights, torch.full((100,), 2.0))
    torch.testing.assert_close(b.true_prob, torch.full((100,), 0.25))
    with pytest.raises(ValueError, match="'nope' is not an axis"):
        ParquetReader(tmp_path, batch_size=10, cohort_fns={"nope": fns["value"]})


def test_argument_errors(ds: Path) -> None:
    with pytest.raises(ValueError, match="drop_last=False is only allowed with world_size == 1"):
        ParquetReader(ds, split=None, batch_size=8, world_size=2, drop_last=False)
    with pytest.raises(ValueError, match="rank must be in"):
        ParquetReader(ds, split=None, batch_size=8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        ParquetReader(ds, split=None, batch_size=0)


# ---------------------------------------------------------------------------------------------
# Bad input: every error names the file and the column
# ---------------------------------------------------------------------------------------------


def _bad(tmp_path: Path, fn, bad_file: int = 1):
    """A dataset whose file ``bad_file`` is rewritten by ``fn(table)``."""
    write_tiny(tmp_path, table_fn=lambda i, t: fn(t) if i == bad_file else t)
    return tmp_path


def _read_all(root: Path, **kw):
    return sum(b.batch_size for b in ParquetReader(root, split=None, batch_size=64, **kw))


@pytest.mark.parametrize(
    "fn, pattern",
    [
        (lambda t: t.drop_columns(["d1"]), r"part-001.parquet: missing column\(s\) \['d1'\]"),
        (lambda t: t.drop_columns(["gender"]), r"part-001.parquet: missing column\(s\) \['gender'\]"),
        (
            lambda t: replace_column(t, "d0", np.arange(t.num_rows)),
            r"part-001.parquet: column 'd0' \(dense\).*int64.*float32",
        ),
        (
            lambda t: replace_column(t, "user", [str(x) for x in range(t.num_rows)]),
            r"column 'user' \(sparse\).*string.*int64",
        ),
        (
            lambda t: replace_column(t, "tags", np.arange(t.num_rows)),
            r"column 'tags' \(sparse\).*list<int64> \(multi_hot = true",
        ),
        (lambda t: replace_column(t, "user", [[1]] * t.num_rows), r"column 'user' \(sparse\).*multi_hot = false"),
        (lambda t: replace_column(t, "label", np.full(t.num_rows, 0.5)), r"column 'label' \(label\) has type double"),
    ],
    ids=[
        "missing-dense",
        "missing-axis",
        "dense-int",
        "sparse-string",
        "multi-as-single",
        "single-as-list",
        "float-label",
    ],
)
def test_preflight_errors(tmp_path: Path, fn, pattern: str) -> None:
    root = _bad(tmp_path, fn)
    with pytest.raises(ValueError, match=pattern):
        ParquetReader(root, split=None, batch_size=8)


def _at(t: pa.Table, col: str, row: int, value, type=None) -> pa.Table:
    vals = t.column(col).to_pylist()
    vals[row] = value
    return replace_column(t, col, vals, type or t.schema.field(col).type)


@pytest.mark.parametrize(
    "fn, pattern",
    [
        (lambda t: _at(t, "user", 70, -3), r"part-001.parquet: column 'user' at row 70 has a negative id.*-3"),
        (lambda t: _at(t, "tags", 5, [1, -2]), r"part-001.parquet: column 'tags' at row 5 has a negative id.*-2"),
        (
            lambda t: _at(t, "user", 7, 50),
            r"part-001.parquet: column .user. at row 7 \(sparse feature .user.\) has an id outside "
            r"its table \[0, 50\).*50",
        ),
        (
            lambda t: _at(t, "tags", 9, [3, 12]),
            r"column 'tags' at row 9 \(sparse feature 'tags'\) has an id outside.*12",
        ),
        (
            lambda t: _at(t, "d0", 3, float("nan")),
            r"part-001.parquet: column 'd0' at row 3 has a NaN/inf value: offending value nan",
        ),
        (lambda t: _at(t, "d1", 130, float("inf")), r"column 'd1' at row 130 has a NaN/inf value: offending value inf"),
        (
            lambda t: _at(t, "label", 11, 2),
            r"part-001.parquet: column 'label' at row 11 has a label outside \{0, 1\}: offending value 2",
        ),
        (lambda t: _at(t, "d0", 2, None), r"column 'd0' at row 2 is null"),
    ],
    ids=["neg-id", "neg-multi", "oor", "oor-multi", "nan", "inf", "label", "null"],
)
def test_value_errors_name_file_column_row(tmp_path: Path, fn, pattern: str) -> None:
    root = _bad(tmp_path, fn)
    reader = ParquetReader(root, split=None, batch_size=64, shuffle=False)
    with pytest.raises(ValueError, match=pattern):
        _read_all(root, shuffle=False)
    assert len(reader) > 0


def test_hash_feature_accepts_large_but_not_negative_ids(tmp_path: Path) -> None:
    root = _bad(tmp_path, lambda t: _at(t, "item", 0, 10**12))
    assert _read_all(root, shuffle=False) == N // 64 * 64
    root2 = _bad(tmp_path / "neg", lambda t: _at(t, "item", 0, -1))
    with pytest.raises(ValueError, match="column 'item' at row 0 has a negative id"):
        _read_all(root2)


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    write_tiny(tmp_path)
    f = tmp_path / "part-002.parquet"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"part-002.parquet: not a readable Parquet file \(truncated or corrupt"):
        ParquetReader(tmp_path, split=None, batch_size=8)
    f.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="part-002.parquet: not a readable Parquet file"):
        ParquetReader(tmp_path, split=None, batch_size=8)
    # footer intact, data pages garbled: caught when the row group is read
    write_tiny(tmp_path / "g")
    g = tmp_path / "g" / "part-000.parquet"
    raw = bytearray(g.read_bytes())
    raw[4:2000] = b"\xff" * 1996
    g.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="part-000.parquet"):
        _read_all(tmp_path / "g", shuffle=False)


def test_empty_dataset(tmp_path: Path) -> None:
    write_tiny(tmp_path, rows_per_file=(0,))
    with pytest.raises(ValueError, match="empty dataset: the Parquet files in .* hold no rows"):
        ParquetReader(tmp_path, split=None, batch_size=8)
    (tmp_path / "part-000.parquet").unlink()
    with pytest.raises(ValueError, match=r"empty dataset: no \*.parquet files in"):
        ParquetReader(tmp_path, split=None, batch_size=8)
    write_tiny(tmp_path / "s", splits=True)
    with pytest.raises(ValueError, match="no split 'valid'"):
        ParquetReader(tmp_path / "s", split="valid", batch_size=8)


@pytest.mark.parametrize(
    "batch, world, start", [(7, 1, 0), (7, 3, 5), (50, 4, 2), (33, 2, 9), (128, 3, 0), (1000, 2, 0)]
)
def test_rank_split_invariant(ds: Path, batch: int, world: int, start: int) -> None:
    """Ranks take disjoint, equal-count shares that together are global batches [start, start + rounds * W)."""
    kw = dict(split=None, batch_size=batch, seed=11, shuffle_buffer=90)
    glob = ids(ParquetReader(ds, **kw))
    rounds = (N // batch - start) // world
    per_rank = [ids(ParquetReader(ds, rank=k, world_size=world, start_batch=start, **kw)) for k in range(world)]
    assert all(len(p) == rounds for p in per_rank)
    interleaved = [per_rank[k][i] for i in range(rounds) for k in range(world)]
    assert interleaved == glob[start : start + rounds * world]
    assert (
        ParquetReader(ds, world_size=world, start_batch=start, **kw).dropped_rows
        == N - (start + rounds * world) * batch
    )


# ---------------------------------------------------------------------------------------------
# Lanes: each rank reads and decodes only its share of every window
# ---------------------------------------------------------------------------------------------


def _spy(monkeypatch) -> dict[int, list]:
    """Record, per reader (by id), the row groups it decodes and the row pieces it converts."""
    log: dict = {"decoded": [], "pieces": []}
    read, piece = ParquetReader._read_unit, ParquetReader._piece_columns

    def read_unit(self, index):
        log["decoded"].append((self.rank, self._units[index].file.name, self._units[index].row_group))
        return read(self, index)

    def piece_columns(self, u, lo, t):
        out = piece(self, u, lo, t)
        log["pieces"].extend((self.rank, r) for r in t.column("row_id").to_pylist())
        return out

    monkeypatch.setattr(ParquetReader, "_read_unit", read_unit)
    monkeypatch.setattr(ParquetReader, "_piece_columns", piece_columns)
    return log


@pytest.fixture
def aligned(tmp_path: Path) -> Path:
    """2048 rows in 32 row groups of 64: with batch 32 the 8 lanes are exactly 4 row groups each."""
    write_tiny(tmp_path, rows_per_file=(1024, 1024), row_group=64)
    return tmp_path


@pytest.mark.parametrize("world", [2, 4, 8])
def test_ranks_decode_disjoint_row_groups(aligned: Path, monkeypatch, world: int) -> None:
    log = _spy(monkeypatch)
    kw = dict(split=None, batch_size=32, seed=7, epoch=1, shuffle_buffer=100)
    per_rank = [flat(ids(ParquetReader(aligned, rank=k, world_size=world, **kw))) for k in range(world)]
    assert all(len(p) == 2048 // world for p in per_rank)
    assert sorted(flat(per_rank)) == list(range(2048))  # disjoint and covering, nothing dropped
    decoded = Counter(x[1:] for x in log["decoded"])
    assert len(decoded) == 32 and max(decoded.values()) == 1  # every row group decoded by one rank, once
    for k in range(world):
        mine = [x for x in log["decoded"] if x[0] == k]
        assert len(mine) == 32 // world  # exactly its share of the row groups
        converted = sorted(r for rank, r in log["pieces"] if rank == k)
        assert converted == sorted(per_rank[k])  # no other rank's row is validated or converted


def test_ranks_are_disjoint_and_cover_every_window(ds: Path, monkeypatch) -> None:
    """Unaligned row groups (lane borders inside row groups, a remainder lane): the two ranks'
    rows are disjoint, cover every window of the epoch, and each rank decodes about half."""
    log = _spy(monkeypatch)
    kw = dict(split=None, batch_size=25, seed=2, shuffle_buffer=60)  # 40 batches: nothing dropped
    readers = [ParquetReader(ds, rank=k, world_size=2, **kw) for k in range(2)]
    per_rank = [flat(ids(r)) for r in readers]
    assert readers[0].dropped_rows == 0 and len(per_rank[0]) == len(per_rank[1]) == N // 2
    assert not set(per_rank[0]) & set(per_rank[1])
    # every window's rows (from the plan, no data) are yielded exactly once across the ranks
    first = {}
    start = 0
    for u in readers[0]._units:
        first.setdefault(u.file, start - u.first_row)
        start += u.num_rows
    order = readers[0]._order()
    for lane in order.lanes:
        for win in lane.windows:
            rows = [
                first[readers[0]._units[p.unit].file] + readers[0]._units[p.unit].first_row + r
                for p in win.pieces
                for r in range(p.lo, p.hi)
            ]
            assert Counter(per_rank[0] + per_rank[1]) >= Counter(rows)
    assert sorted(per_rank[0] + per_rank[1]) == list(range(N))
    # converted rows: only the rank's own (rows of a shared remainder window are the only overlap)
    remainder = {
        first[readers[0]._units[p.unit].file] + readers[0]._units[p.unit].first_row + r
        for w in order.lanes[-1].windows
        for p in w.pieces
        for r in range(p.lo, p.hi)
    }
    conv = [{r for k, r in log["pieces"] if k == rank} for rank in range(2)]
    assert conv[0] & conv[1] <= remainder
    for rank in range(2):
        assert set(per_rank[rank]) <= conv[rank]
        assert len(conv[rank]) <= N // 2 + len(remainder)


def test_same_seed_same_batches(ds: Path) -> None:
    kw = dict(split=None, batch_size=40, seed=9, epoch=4, shuffle_buffer=70, rank=1, world_size=2)
    a, b = list(ParquetReader(ds, **kw)), list(ParquetReader(ds, **kw))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert torch.equal(x.row_id, y.row_id) and torch.equal(x.dense_features, y.dense_features)
        assert torch.equal(x.sparse_features.values(), y.sparse_features.values())
        assert torch.equal(x.sparse_features.lengths(), y.sparse_features.lengths())
        assert_rows_consistent(x)
    assert ids(ParquetReader(ds, **{**kw, "seed": 10})) != ids(a)


@pytest.mark.parametrize("world, start", [(1, 7), (2, 4), (2, 5), (4, 8)])
def test_resume_equals_tail_of_uninterrupted_read(ds: Path, world: int, start: int) -> None:
    kw = dict(split=None, batch_size=16, seed=4, shuffle_buffer=90)
    glob = ids(ParquetReader(ds, **kw))
    for k in range(world):
        full = ids(ParquetReader(ds, rank=k, world_size=world, **kw))
        resumed = list(ParquetReader(ds, rank=k, world_size=world, start_batch=start, **kw))
        rounds = (N // 16 - start) // world
        assert len(resumed) == rounds
        assert [b.row_id.tolist() for b in resumed] == glob[start + k : start + rounds * world : world]
        if start % world == 0:  # a resume at a round boundary continues each rank's own list
            assert [b.row_id.tolist() for b in resumed] == full[start // world : start // world + rounds]
        for b in resumed:
            assert_rows_consistent(b)


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_equal_batch_counts_and_lane_plan(ds: Path, world: int) -> None:
    kw = dict(split=None, batch_size=24, seed=1, shuffle_buffer=50)
    readers = [ParquetReader(ds, rank=k, world_size=world, **kw) for k in range(world)]
    counts = [len(list(r)) for r in readers]
    assert counts == [len(r) for r in readers] == [(N // 24) // world] * world
    order = readers[0]._order()
    assert sum(lane.rows for lane in order.lanes) == N  # every row in exactly one lane
    assert [lane.rows for lane in order.lanes[:-1]] == [order.per_lane * 24] * order.num_lanes


def test_multi_hot_and_hash_survive_the_row_gather(tmp_path: Path) -> None:
    write_tiny(tmp_path, rows_per_file=(700, 900, 33), row_group=50)
    kw = dict(split=None, batch_size=48, seed=3, shuffle_buffer=120)
    for world in (1, 2):
        seen = []
        for k in range(world):
            for b in ParquetReader(tmp_path, rank=k, world_size=world, **kw):
                assert_rows_consistent(b)
                assert b.sparse_features.values().dtype == torch.int64
                assert b.sparse_features.lengths().dtype == torch.int32
                seen += b.row_id.tolist()
        assert len(seen) == len(set(seen)) == (1633 // 48) // world * world * 48
