"""Dataset schema (schema.json) and the SparseIdTransform shared with export (tier 1)."""

import json
from pathlib import Path

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from c2al_rec.data import Dataset, SparseFeature, SparseIdTransform, load_schema
from c2al_rec.data.schema import schema_from_dict
from tests.data_utils import tiny_schema, write_tiny

DESIGN_EXAMPLE = {
    "label": "label",
    "weight": None,
    "row_id": "row_id",
    "dense": ["hours_per_week", "capital_gain"],
    "sparse": [
        {"name": "user_id", "num_embeddings": 1000, "multi_hot": False, "out_of_range": "error"},
        {"name": "genres", "num_embeddings": 19, "multi_hot": True, "pooling": "sum", "out_of_range": "hash"},
    ],
    "axes": [{"name": "user_value", "kind": "numeric"}, {"name": "gender", "kind": "categorical", "sensitive": True}],
    "splits": {"train": "train", "valid": "valid", "test": "test"},
}


def test_design_example_round_trips(tmp_path: Path) -> None:
    (tmp_path / "schema.json").write_text(json.dumps(DESIGN_EXAMPLE))
    s = load_schema(tmp_path)
    assert s.feature_names == ["user_id", "genres"] and s.sparse[1].multi_hot and s.sparse[1].out_of_range == "hash"
    assert s.sparse[0].pooling == "sum" and s.axis("gender").sensitive and not s.axis("user_value").sensitive
    assert s.split_dir("valid") == tmp_path / "valid"
    assert s.to_dict() == {
        **DESIGN_EXAMPLE,
        "sparse": [{**DESIGN_EXAMPLE["sparse"][0], "pooling": "sum"}, DESIGN_EXAMPLE["sparse"][1]],
        "axes": [{**DESIGN_EXAMPLE["axes"][0], "sensitive": False}, DESIGN_EXAMPLE["axes"][1]],
    }
    (tmp_path / "copy").mkdir()
    s.save(tmp_path / "copy")
    assert load_schema(tmp_path / "copy").schema_hash() == s.schema_hash()
    # hash ignores key order / whitespace, changes with content
    (tmp_path / "schema.json").write_text(json.dumps(dict(reversed(list(DESIGN_EXAMPLE.items()))), indent=4))
    assert load_schema(tmp_path).schema_hash() == s.schema_hash()
    s.sparse[0].num_embeddings = 999
    assert s.schema_hash() != load_schema(tmp_path).schema_hash()


def test_fingerprint_lists_files_and_sizes(tmp_path: Path) -> None:
    s = write_tiny(tmp_path, splits=True)
    ds = Dataset(s)
    fp = ds.fingerprint("train")
    assert fp["schema_hash"] == s.schema_hash()
    assert [f["file"] for f in fp["files"]] == [f"train/part-00{i}.parquet" for i in range(3)]
    assert all(f["bytes"] == (tmp_path / f["file"]).stat().st_size for f in fp["files"])
    assert ds.fingerprint() == fp  # one split only
    assert ds.files("train") == [tmp_path / f["file"] for f in fp["files"]]


def test_dataset_files_name_the_empty_directory(tmp_path: Path) -> None:
    s = write_tiny(tmp_path, splits=True)
    for f in (tmp_path / "train").glob("*.parquet"):
        f.unlink()
    with pytest.raises(ValueError, match=r"no \*\.parquet files in .*train"):
        Dataset(s).files("train")


@pytest.mark.parametrize(
    "change, pattern",
    [
        (
            lambda d: d["axes"].append({"name": "user_id", "kind": "categorical", "sensitive": True}),
            "axis 'user_id' is sensitive and must not also be a dense or sparse feature",
        ),
        (lambda d: d.update(extra=1), r"unknown keys \['extra'\]"),
        (lambda d: d["sparse"][0].update(num_embeddings=0), "'user_id': num_embeddings must be > 0"),
        (lambda d: d["sparse"][0].update(out_of_range="clip"), "out_of_range must be one of"),
        (lambda d: d["sparse"][0].update(pooling="max"), "pooling must be one of"),
        (lambda d: d["sparse"][0].update(size=3), "bad sparse/axes entry"),
        (lambda d: d["dense"].append("user_id"), r"listed twice.*user_id"),
        (lambda d: d["axes"][0].update(kind="ordinal"), "kind must be one of"),
    ],
)
def test_schema_errors_name_the_file(tmp_path: Path, change, pattern: str) -> None:
    d = json.loads(json.dumps(DESIGN_EXAMPLE))
    change(d)
    (tmp_path / "schema.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=pattern) as e:
        load_schema(tmp_path)
    assert "schema.json" in str(e.value)


def test_missing_or_invalid_schema_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="schema.json does not exist"):
        load_schema(tmp_path)
    (tmp_path / "schema.json").write_text("{nope")
    with pytest.raises(ValueError, match="schema.json: not valid JSON"):
        load_schema(tmp_path)
    with pytest.raises(ValueError, match="'label' key"):
        schema_from_dict({"dense": []}, tmp_path)


def _kjt(values, lengths) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(
        keys=["user", "tags", "item"], values=torch.tensor(values), lengths=torch.tensor(lengths, dtype=torch.int32)
    )


def test_sparse_id_transform_scripted_matches_eager(tmp_path: Path) -> None:
    t = SparseIdTransform(tiny_schema(tmp_path).sparse)  # user 50 error, tags 10 error, item 7 hash
    scripted = torch.jit.script(t)
    kjt = _kjt([3, 49, 1, 9, 2, 8, 100, 13], [1, 1, 2, 2, 1, 1])
    for m in (t, scripted):
        out = m(kjt)
        assert out.keys() == kjt.keys() and torch.equal(out.lengths(), kjt.lengths())
        assert out.values().tolist() == [3, 49, 1, 9, 2, 8, 100 % 7, 6]
        assert kjt.values().tolist() == [3, 49, 1, 9, 2, 8, 100, 13]  # the caller's ids are not rewritten
    assert t.transform_values(2, torch.tensor([8, 7, 13])).tolist() == [1, 0, 6]
    # hash mode folds large ids, never negative ones: the reader rejects those, so serving must too
    negative = _kjt([3, 49, 1, 9, 2, 8, 100, -1], [1, 1, 2, 2, 1, 1])
    with pytest.raises(ValueError, match=r"sparse feature 'item': negative id -1"):
        t(negative)
    with pytest.raises(Exception, match=r"sparse feature 'item': negative id -1"):
        scripted(negative)
    with pytest.raises(ValueError, match=r"sparse feature 'item': negative id -8"):
        t.transform_values(2, torch.tensor([-8, 7, 13]))
    bad = _kjt([3, 50, 1, 9, 2, 8, 1, 1], [1, 1, 2, 2, 1, 1])
    with pytest.raises(ValueError, match=r"sparse feature 'user': id 50 outside its table \[0, 50\)"):
        t(bad)
    with pytest.raises(Exception, match=r"sparse feature 'user': id 50 outside its table"):
        scripted(bad)
    with pytest.raises(ValueError, match="sparse feature 'tags': negative id -4"):
        t.transform_values(1, torch.tensor([1, -4]))
    with pytest.raises(ValueError, match="KJT keys"):
        t(KeyedJaggedTensor(keys=["a"], values=torch.tensor([1]), lengths=torch.tensor([1])))


def test_transform_without_features() -> None:
    t = torch.jit.script(SparseIdTransform([SparseFeature("a", 3)]))
    out = t(
        KeyedJaggedTensor(
            keys=["a"], values=torch.zeros(0, dtype=torch.int64), lengths=torch.zeros(2, dtype=torch.int32)
        )
    )
    assert out.values().numel() == 0 and out.stride() == 2


# (no `from __future__ import annotations` in this file: torchrec.fx + script need real annotations)
class _ExportLike(torch.nn.Module):
    """A model that applies the id transform first, like the exported serving model."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.ids = SparseIdTransform(tiny_schema(root).sparse)

    def forward(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.ids(kjt).values()


def test_transform_as_fx_leaf_in_a_scripted_model(tmp_path: Path) -> None:
    """Export path: torchrec.fx traces a model with the transform as a leaf, then scripts it."""
    import torchrec

    traced = torchrec.fx.symbolic_trace(_ExportLike(tmp_path), leaf_modules=["SparseIdTransform"])
    scripted = torch.jit.script(traced)
    kjt = _kjt([3, 49, 1, 9, 2, 8, 100, 5], [1, 1, 2, 2, 1, 1])
    assert scripted(kjt).tolist() == [3, 49, 1, 9, 2, 8, 2, 5]
