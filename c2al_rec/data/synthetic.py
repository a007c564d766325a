"""Planted-cohort synthetic CTR data with a known ground-truth probability.

Every row is an ad impression: user, ad, advertiser, ad category, surface, a multi-hot user
history (ad categories), extra id features and dense counters. The label is drawn from a known
logit:

    logit = b0 + beta * user_value                       (the head/tail positive-rate gap)
          + first-order id effects + dense effects + age effect
          + majority interactions  <user, category> + <surface, category> + <history, category>
          + 1[head] * s * <extra_0, extra_1>             (head: top q of rows by user_value)
          + 1[tail] * s * <extra_2, extra_3>             (tail: bottom q)

so the head and tail cohorts carry interactions on feature pairs that the majority does not
use: a model gains on them only by learning those pairs for those cohorts. ``b0`` and ``beta``
are calibrated on a pilot sample so that the overall positive rate is ``base_rate`` and the
head/tail positive-rate ratio is ``head_tail_plr_ratio``. ``true_prob = sigmoid(logit)`` is
written beside ``label`` so the Bayes NE is computable overall and per cohort. ``user_value`` is
not a model input, but the dense counter ``user_spend`` and the user id correlate with it.

Generation is chunked (``chunk_rows`` rows at a time, one Parquet file per chunk and split);
memory is bounded by the chunk plus the per-entity tables (O(max_table_size)), and that bound is
checked against the host's available memory before anything is generated.

Example::

    schema = generate_synthetic(Path("data/synth"), SyntheticConfig(rows=20000, max_table_size=1000))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..config import SyntheticConfig
from ..io.host import check_host_memory
from .dataset import write_parquet
from .schema import SCHEMA_FILE, Axis, DatasetSchema, SparseFeature

LATENT = 4  # rank of every planted pairwise interaction
NUM_SURFACES = 8
NUM_AGE_BUCKETS = 7
ADVERTISER_SIZES = 4
SPLITS = ("train", "valid", "test")
PILOT_ROWS = 100_000
# Peak memory of generation, measured with tracemalloc at the default num_sparse / num_dense:
# ~87 bytes per max_table_size entity (ids' effects, latents, permutations), ~600 per chunk row,
# ~60 MiB for the calibration pilot. Rounded up, so the check errs towards refusing.
_BYTES_PER_ENTITY = 96
_BYTES_PER_CHUNK_ROW = 768
_BYTES_FIXED = 96 << 20


def generation_memory_bytes(cfg: SyntheticConfig) -> int:
    """An upper estimate of the peak memory ``generate_synthetic`` needs for ``cfg``."""
    extra = max(0, cfg.num_sparse - 20) * cfg.max_table_size // 10 * 8  # wider schemas add entity tables
    return _BYTES_PER_ENTITY * cfg.max_table_size + extra + _BYTES_PER_CHUNK_ROW * cfg.chunk_rows + _BYTES_FIXED


def check_generation_memory(cfg: SyntheticConfig) -> None:
    """Refuse, in one line and before any allocation, a generation that cannot fit in this host's memory.

    Raises:
        ValueError: naming data.synthetic.max_table_size, the GiB needed and the GiB available.
    """
    check_host_memory(
        generation_memory_bytes(cfg),
        f"generating synthetic data with data.synthetic.max_table_size = {cfg.max_table_size}",
        "lower data.synthetic.max_table_size (or data.synthetic.chunk_rows)",
    )


def _sizes(cfg: SyntheticConfig) -> dict[str, int]:
    """Table size per sparse feature (realistic ratios, capped by max_table_size)."""
    m = cfg.max_table_size

    def cap(n: int) -> int:
        return int(max(2, min(n, m)))

    sizes = {
        "user_id": m,
        "ad_id": cap(m // 2),
        "advertiser_id": cap(m // 20),
        "ad_category": cap(500),
        "surface": NUM_SURFACES,
        "user_history": cap(500),
    }
    # extra_0..3 carry the planted cohort interactions: moderate tables so they are learnable
    for i, n in enumerate((20, 50, 20, 50)):
        sizes[f"extra_{i}"] = cap(n)
    rest = cfg.num_sparse - len(sizes)
    for j, n in enumerate(np.geomspace(10, max(10, m // 10), num=rest) if rest > 0 else []):
        sizes[f"extra_{4 + j}"] = cap(int(n))
    return sizes


def synthetic_schema(cfg: SyntheticConfig, root: Path) -> DatasetSchema:
    """The schema the generator writes for ``cfg``."""
    sizes = _sizes(cfg)
    sparse = [SparseFeature(name, n, multi_hot=(name == "user_history")) for name, n in sizes.items()]
    dense = ["user_spend", "ad_impressions", "hour"] + [f"counter_{j}" for j in range(cfg.num_dense - 3)]
    return DatasetSchema(
        label="label",
        dense=dense[: cfg.num_dense],
        sparse=sparse,
        axes=[
            Axis("user_value", "numeric"),
            Axis("age_bucket", "categorical", sensitive=True),
            Axis("surface", "categorical"),
            Axis("advertiser_size", "categorical"),
        ],
        weight=None,
        row_id="row_id",
        splits={s: s for s in SPLITS},
        root=root,
    )


@dataclass
class _World:
    """Entities and ground-truth parameters, fixed by the seed."""

    sizes: dict[str, int]
    user_perm: np.ndarray
    ad_perm: np.ndarray
    user_value: np.ndarray
    user_age: np.ndarray
    user_pref: np.ndarray
    ad_advertiser: np.ndarray
    ad_category: np.ndarray
    advertiser_size: np.ndarray
    first: dict[str, np.ndarray]
    age_effect: np.ndarray
    dense_w: np.ndarray
    lat: dict[str, np.ndarray]
    z_head: float
    z_tail: float
    b0: float = 0.0
    beta: float = 0.0


def _build_world(cfg: SyntheticConfig) -> _World:
    rng = np.random.default_rng([cfg.seed, 0])
    sizes = _sizes(cfg)
    nu, na, nadv, ncat = sizes["user_id"], sizes["ad_id"], sizes["advertiser_id"], sizes["ad_category"]
    first = {
        name: rng.normal(0, 0.3 if name in ("user_id", "ad_id", "ad_category", "surface") else 0.15, n)
        for name, n in sizes.items()
        if name != "user_history"
    }

    def latent(n: int) -> np.ndarray:
        return rng.normal(0, 1, (n, LATENT)) / LATENT**0.25

    lat = {
        "user": latent(nu) * 0.7,
        "cat_u": latent(ncat) * 0.7,
        "surface": latent(NUM_SURFACES) * 0.7,
        "cat_s": latent(ncat) * 0.7,
        "hist": latent(sizes["user_history"]),
        "cat_h": latent(ncat),
        "head_a": latent(sizes["extra_0"]),
        "head_b": latent(sizes["extra_1"]),
        "tail_a": latent(sizes["extra_2"]),
        "tail_b": latent(sizes["extra_3"]),
    }
    # normal quantile of the cohort share: head/tail are planted on rows, user_value ~ N(0, 1)
    zq = -_norm_ppf(cfg.cohort_quantile)
    return _World(
        sizes=sizes,
        user_perm=rng.permutation(nu),
        ad_perm=rng.permutation(na),
        user_value=rng.normal(0, 1, nu).astype(np.float32),
        user_age=rng.choice(NUM_AGE_BUCKETS, nu, p=[0.08, 0.22, 0.24, 0.18, 0.14, 0.09, 0.05]),
        user_pref=rng.integers(0, sizes["user_history"], nu),
        ad_advertiser=np.minimum((nadv * rng.random(na) ** 2).astype(np.int64), nadv - 1),
        ad_category=rng.integers(0, ncat, na),
        advertiser_size=rng.choice(ADVERTISER_SIZES, nadv, p=[0.5, 0.3, 0.15, 0.05]),
        first=first,
        age_effect=rng.normal(0, 0.1, NUM_AGE_BUCKETS),
        dense_w=rng.normal(0, 0.15, cfg.num_dense),
        lat=lat,
        z_head=zq,
        z_tail=-zq,
    )


def _norm_ppf(p: float) -> float:
    """Inverse standard normal CDF (bisection on erf; no scipy needed)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _skewed(rng: np.random.Generator, n: int, size: int, power: float) -> np.ndarray:
    """Ids in [0, n) with a popularity skew (density ~ x^(1/power - 1))."""
    return np.minimum((n * rng.random(size) ** power).astype(np.int64), n - 1)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _rows(world: _World, cfg: SyntheticConfig, rng: np.random.Generator, n: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Draw ``n`` rows: (columns, z = user_value, logit without b0 + beta * z)."""
    s = world.sizes
    user = world.user_perm[_skewed(rng, s["user_id"], n, 2.0)]
    ad = world.ad_perm[_skewed(rng, s["ad_id"], n, 2.0)]
    adv = world.ad_advertiser[ad]
    cat = world.ad_category[ad]
    surface = rng.choice(NUM_SURFACES, n, p=[0.35, 0.25, 0.15, 0.1, 0.06, 0.04, 0.03, 0.02])
    z = world.user_value[user]
    age = world.user_age[user]
    cols: dict[str, object] = {
        "user_id": user,
        "ad_id": ad,
        "advertiser_id": adv,
        "ad_category": cat,
        "surface": surface,
    }
    # multi-hot history: mostly the user's preferred category, otherwise random categories
    lengths = rng.integers(1, cfg.history_max_len + 1, n)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    row_of = np.repeat(np.arange(n), lengths)
    hist = np.where(
        rng.random(offsets[-1]) < 0.6, world.user_pref[user][row_of], rng.integers(0, s["user_history"], offsets[-1])
    )
    cols["user_history"] = (offsets, hist)
    extras = {name: _skewed(rng, size, n, 1.5) for name, size in s.items() if name.startswith("extra_")}
    cols.update(extras)

    logit = np.zeros(n)
    for name, w in world.first.items():
        logit += w[cols[name]]  # type: ignore[index]
    logit += world.age_effect[age]
    # dense counters: user_spend follows user_value (a visible proxy of it), others are noise-ish
    spend = np.log1p(rng.poisson(np.exp(1.0 + 0.8 * z)))
    dense = [spend, np.log1p(rng.poisson(20, n)), rng.integers(0, 24, n) / 24.0]
    for _ in range(cfg.num_dense - 3):
        dense.append(np.log1p(rng.poisson(5, n)))
    dense = dense[: cfg.num_dense]
    for j, d in enumerate(dense):
        logit += world.dense_w[j] * (d - d.mean())
        cols[synthetic_dense_names(cfg)[j]] = d.astype(np.float32)
    lat = world.lat
    logit += _dot(lat["user"][user], lat["cat_u"][cat])
    logit += _dot(lat["surface"][surface], lat["cat_s"][cat])
    hdot = _dot(lat["hist"][hist], lat["cat_h"][cat[row_of]])
    logit += np.add.reduceat(hdot, offsets[:-1]) / lengths
    if cfg.cohort_effects:
        k = cfg.cohort_effect_scale * 1.5
        head, tail = z >= world.z_head, z < world.z_tail
        logit += k * head * _dot(lat["head_a"][extras["extra_0"]], lat["head_b"][extras["extra_1"]])
        logit += k * tail * _dot(lat["tail_a"][extras["extra_2"]], lat["tail_b"][extras["extra_3"]])
    cols["user_value"] = z
    cols["age_bucket"] = age
    cols["advertiser_size"] = world.advertiser_size[adv]
    return cols, z.astype(np.float64), logit


def synthetic_dense_names(cfg: SyntheticConfig) -> list[str]:
    return (["user_spend", "ad_impressions", "hour"] + [f"counter_{j}" for j in range(cfg.num_dense - 3)])[
        : cfg.num_dense
    ]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _calibrate(world: _World, cfg: SyntheticConfig) -> None:
    """Choose b0 and beta on a pilot sample: overall rate = base_rate, head/tail rate ratio as asked."""
    rng = np.random.default_rng([cfg.seed, 1])
    _, z, rest = _rows(world, cfg, rng, PILOT_ROWS)
    head, tail = z >= world.z_head, z < world.z_tail

    def b0_for(beta: float) -> float:
        lo, hi = -20.0, 20.0
        for _ in range(40):
            mid = (lo + hi) / 2
            if _sigmoid(mid + beta * z + rest).mean() < cfg.base_rate:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def ratio(beta: float) -> float:
        p = _sigmoid(b0_for(beta) + beta * z + rest)
        return p[head].mean() / max(p[tail].mean(), 1e-12)

    lo, hi = -3.0, 3.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if ratio(mid) < cfg.head_tail_plr_ratio:
            lo = mid
        else:
            hi = mid
    world.beta = (lo + hi) / 2
    world.b0 = b0_for(world.beta)


def _table(
    cols: dict, schema: DatasetSchema, row_id: np.ndarray, label: np.ndarray, prob: np.ndarray, mask: np.ndarray
) -> pa.Table:
    idx = np.flatnonzero(mask)
    arrays: dict[str, pa.Array] = {
        "row_id": pa.array(row_id[idx]),
        "label": pa.array(label[idx].astype(np.int8)),
        "true_prob": pa.array(prob[idx]),
    }
    for name in schema.dense:
        arrays[name] = pa.array(cols[name][idx])
    for f in schema.sparse:
        if f.multi_hot:
            offsets, values = cols[f.name]
            sel = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.int64))).take(pa.array(idx))
            arrays[f.name] = sel
        else:
            arrays[f.name] = pa.array(cols[f.name][idx].astype(np.int64))
    arrays["user_value"] = pa.array(cols["user_value"][idx].astype(np.float32))
    arrays["age_bucket"] = pa.array(cols["age_bucket"][idx].astype(np.int64))
    arrays["advertiser_size"] = pa.array(cols["advertiser_size"][idx].astype(np.int64))
    return pa.table(arrays)


def generate_synthetic(out: Path, cfg: SyntheticConfig) -> DatasetSchema:
    """Write the planted-cohort dataset (schema.json, train/valid/test Parquet) into ``out``.

    Args:
        out: dataset root to create (must not hold a dataset already).
        cfg: generator knobs; the output is a deterministic function of ``cfg``.

    Returns:
        The written schema.

    Raises:
        ValueError: no rows, ``out`` holds a dataset, or the generation does not fit in this
            host's memory (``check_generation_memory``, before anything is allocated).
    """
    out = Path(out)
    if cfg.rows <= 0:
        raise ValueError(f"data.synthetic.rows must be > 0 to generate, got {cfg.rows}")
    if (out / SCHEMA_FILE).exists():
        raise ValueError(f"{out} already holds a dataset ({SCHEMA_FILE} exists); choose another --out")
    check_generation_memory(cfg)
    schema = synthetic_schema(cfg, out)
    for s in SPLITS:
        (out / s).mkdir(parents=True, exist_ok=True)
    world = _build_world(cfg)
    _calibrate(world, cfg)
    for chunk, start in enumerate(range(0, cfg.rows, cfg.chunk_rows)):
        n = min(cfg.chunk_rows, cfg.rows - start)
        rng = np.random.default_rng([cfg.seed, 2, chunk])
        cols, z, rest = _rows(world, cfg, rng, n)
        prob = _sigmoid(world.b0 + world.beta * z + rest)
        label = rng.random(n) < prob
        u = rng.random(n)
        split_of = np.where(u < cfg.valid_fraction, 1, np.where(u < cfg.valid_fraction + cfg.test_fraction, 2, 0))
        row_id = np.arange(start, start + n, dtype=np.int64)
        for k, split in enumerate(SPLITS):
            table = _table(cols, schema, row_id, label, prob, split_of == k)
            if table.num_rows:
                write_parquet(table, out / split / f"part-{chunk:05d}.parquet", row_group_size=cfg.row_group_rows)
    schema.save(out)
    return schema
