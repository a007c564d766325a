"""Planted-cohort synthetic generator (tier 1, small sizes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from c2al_rec.config import ConfigError, DataConfig, SyntheticConfig
from c2al_rec.data import ParquetReader, load_schema
from c2al_rec.data.sources import ensure_dataset
from c2al_rec.data.synthetic import generate_synthetic

SMALL = SyntheticConfig(rows=6000, max_table_size=1000, seed=3, chunk_rows=2500, row_group_rows=700)


def _table(root: Path, split: str, cols=None):
    return ds.dataset(sorted(str(p) for p in (root / split).glob("*.parquet"))).to_table(columns=cols)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, SMALL)
    return root


def test_schema_and_splits(synth: Path) -> None:
    s = load_schema(synth)
    assert len(s.sparse) == 20 and max(f.num_embeddings for f in s.sparse) == 1000
    assert s.sparse[0].name == "user_id" and [f.name for f in s.sparse if f.multi_hot] == ["user_history"]
    assert {a.name for a in s.axes} == {"user_value", "age_bucket", "surface", "advertiser_size"}
    assert [a.name for a in s.axes if a.sensitive] == ["age_bucket"]
    assert "user_value" not in s.dense + s.feature_names and len(s.dense) == SMALL.num_dense
    ids = []
    for split in ("train", "valid", "test"):
        reader = ParquetReader(synth, s, split=split, batch_size=256, shuffle=False, drop_last=False)
        batches = list(reader)
        ids += [int(r) for b in batches for r in b.row_id]
        assert all(b.true_prob is not None for b in batches)
    assert sorted(ids) == list(range(SMALL.rows))  # splits partition the rows
    n_train = len(_table(synth, "train", ["row_id"]))
    assert 0.7 < n_train / SMALL.rows < 0.9


def test_rates_and_truth(synth: Path) -> None:
    t = _table(synth, "train")
    label, p, z = (t.column(c).to_numpy().astype(np.float64) for c in ("label", "true_prob", "user_value"))
    assert abs(p.mean() - SMALL.base_rate) < 0.01
    assert abs(label.mean() - p.mean()) < 4 * np.sqrt(p.mean() / len(p))  # labels drawn from true_prob
    head, tail = z >= 1.6449, z < -1.6449
    assert 3.0 < p[head].mean() / p[tail].mean() < 8.0  # configured ratio 5 (on few users: noisy)
    hist = t.column("user_history")
    lengths = hist.combine_chunks().value_lengths().to_numpy()
    assert lengths.min() >= 1 and lengths.max() <= SMALL.history_max_len


def test_deterministic_from_seed(tmp_path: Path, synth: Path) -> None:
    generate_synthetic(tmp_path / "a", SMALL)
    assert _table(tmp_path / "a", "valid").equals(_table(synth, "valid"))
    generate_synthetic(tmp_path / "b", dataclasses.replace(SMALL, seed=4))
    assert not _table(tmp_path / "b", "valid").equals(_table(synth, "valid"))
    with pytest.raises(ValueError, match="already holds a dataset"):
        generate_synthetic(tmp_path / "a", SMALL)


def test_planted_interactions_only_in_head_and_tail(tmp_path: Path) -> None:
    """Same rows with and without cohort effects: the logit difference is affine in user_value
    outside head/tail, and inside the head a function of (extra_0, extra_1) only."""
    cfg = dataclasses.replace(SMALL, rows=4000, valid_fraction=0.0, test_fraction=0.0)
    generate_synthetic(tmp_path / "on", cfg)
    generate_synthetic(tmp_path / "off", dataclasses.replace(cfg, cohort_effects=False))
    on, off = _table(tmp_path / "on", "train"), _table(tmp_path / "off", "train")
    assert on.column("row_id").equals(off.column("row_id")) and on.column("user_id").equals(off.column("user_id"))

    def logit(t):
        p = t.column("true_prob").to_numpy()
        return np.log(p / (1 - p))

    diff, z = logit(on) - logit(off), on.column("user_value").to_numpy().astype(np.float64)
    mid = (z < 1.6449) & (z >= -1.6449)
    A = np.stack([np.ones(mid.sum()), z[mid]], 1)
    coef, *_ = np.linalg.lstsq(A, diff[mid], rcond=None)
    resid = diff - (coef[0] + coef[1] * z)
    assert np.abs(resid[mid]).max() < 1e-6
    head = z >= 1.6449
    assert resid[head].std() > 0.3  # a planted effect of real size
    e0, e1 = on.column("extra_0").to_numpy()[head], on.column("extra_1").to_numpy()[head]
    for key in set(zip(e0.tolist(), e1.tolist())):
        sel = (e0 == key[0]) & (e1 == key[1])
        assert np.ptp(resid[head][sel]) < 1e-6


def test_ensure_dataset(tmp_path: Path) -> None:
    cfg = DataConfig(path=str(tmp_path / "ds"), synthetic=dataclasses.replace(SMALL, rows=1500))
    assert ensure_dataset(cfg) == tmp_path / "ds" and (tmp_path / "ds" / "schema.json").is_file()
    mtime = (tmp_path / "ds" / "schema.json").stat().st_mtime_ns
    assert ensure_dataset(cfg) == tmp_path / "ds"  # existing: validated, not regenerated
    assert (tmp_path / "ds" / "schema.json").stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds.tmp")]
    with pytest.raises(FileNotFoundError, match="data.synthetic.rows = 0"):
        ensure_dataset(DataConfig(path=str(tmp_path / "none")))


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="num_sparse must be >= 10"):
        SyntheticConfig(num_sparse=6)
    with pytest.raises(ConfigError, match="base_rate"):
        SyntheticConfig(base_rate=0.7)
