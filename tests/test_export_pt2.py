"""Tier 4: ``export --pt2`` (torch.export + AOTInductor), its parity with TorchScript and eager, the host-side
id checks, the sha256 gate on loading, the refusals, and predict / serve from either format.

One AOTInductor compile per session (tens of seconds on 2 cores): every test reuses ``pt2_export``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from c2al_rec.config import ExportConfig
from c2al_rec.data.transforms import SparseIdTransform
from c2al_rec.export.exporter import export_checkpoint
from c2al_rec.export.pt2 import Pt2ExportError
from c2al_rec.export.torchscript import ServingModel
from c2al_rec.io.digest import file_digest
from c2al_rec.runs.load import load_run
from c2al_rec.serve.artifact import load_exported
from c2al_rec.serve.predictor import input_files, predict_files
from c2al_rec.serve.pt2_model import load_pt2
from c2al_rec.serve.request import rows_to_inputs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pt2_export(smoke_runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pt2") / "export"
    export_checkpoint(ExportConfig(pt2=True), smoke_runs.c2al, out)
    return out


@pytest.fixture(scope="module")
def eager(smoke_runs) -> ServingModel:
    loaded = load_run(smoke_runs.c2al)
    return ServingModel(SparseIdTransform(loaded.schema.sparse), loaded.model.without_aux_heads()).eval()


def _random_inputs(meta: dict, batch: int, seed: int, empty_multi_hot: bool = False, max_ids: bool = False) -> dict:
    """A predict input dict: multi-hot rows of 0..5 ids (none when ``empty_multi_hot``), ids drawn in
    range, or every id the last of its table (``max_ids``)."""
    g = torch.Generator().manual_seed(seed)
    inputs = {"dense": torch.randn(batch, len(meta["dense"]), generator=g)}
    for f in meta["sparse"]:
        if f["multi_hot"]:
            lengths = (
                torch.zeros(batch, dtype=torch.int64) if empty_multi_hot else torch.randint(0, 6, (batch,), generator=g)
            )
        else:
            lengths = torch.ones(batch, dtype=torch.int64)
        n = int(lengths.sum())
        size = f["num_embeddings"]
        values = torch.full((n,), size - 1) if max_ids else torch.randint(0, size, (n,), generator=g)
        inputs[f"{f['name']}.values"], inputs[f"{f['name']}.lengths"] = values, lengths
    return inputs


def _eager_predict(eager: ServingModel, inputs: dict, meta: dict) -> torch.Tensor:
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    names = [f["name"] for f in meta["sparse"]]
    kjt = KeyedJaggedTensor(
        keys=names,
        values=torch.cat([inputs[f"{n}.values"] for n in names]),
        lengths=torch.cat([inputs[f"{n}.lengths"] for n in names]),
    )
    with torch.no_grad():
        return eager(inputs["dense"], kjt)


def test_pt2_export_writes_both_artifacts_gated_and_listed(pt2_export) -> None:
    assert {p.name for p in pt2_export.iterdir()} == {"model.pt", "model.pt2", "metadata.json", "sample_input.pt"}
    meta = json.loads((pt2_export / "metadata.json").read_text())
    assert meta["artifacts"]["model.pt2"] == file_digest(pt2_export / "model.pt2")
    assert meta["parity"]["pt2"]["max_abs_diff"] <= 1e-5 and meta["parity"]["rows"] > 1000
    assert "pt2" in meta["input_signature"] and meta["pt2_export_seconds"] > 0
    # model.pt stays the contract artifact: the model id derives from it, whatever the format served
    assert load_pt2(pt2_export).model_id == load_exported(pt2_export).model_id == meta["model_id"]


@pytest.mark.parametrize(
    "batch, seed, edge",
    [
        (1, 0, {}),
        (7, 1, {}),
        (300, 2, {}),
        (1, 3, {"empty_multi_hot": True}),
        (9, 4, {"empty_multi_hot": True}),
        (1, 5, {"max_ids": True}),
        (33, 6, {"max_ids": True}),
    ],
)
def test_pt2_matches_torchscript_and_eager(pt2_export, eager, batch, seed, edge) -> None:
    pt2, ts = load_pt2(pt2_export), load_exported(pt2_export)
    inputs = _random_inputs(ts.metadata, batch, seed, **edge)
    want = _eager_predict(eager, inputs, ts.metadata)
    got_pt2, got_ts = pt2.predict(inputs), ts.predict(inputs)
    assert got_pt2.shape == want.shape == (batch,)
    torch.testing.assert_close(got_pt2, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(got_pt2, got_ts, atol=1e-6, rtol=0)


def test_pt2_refuses_bad_ids_before_the_call_with_the_torchscript_messages(pt2_export) -> None:
    pt2, ts = load_pt2(pt2_export), load_exported(pt2_export)
    meta = ts.metadata
    checked = next(f for f in meta["sparse"] if f["out_of_range"] == "error" and not f["multi_hot"])
    for bad_id in (-3, checked["num_embeddings"], 2**40):
        inputs = _random_inputs(meta, 4, 0)
        inputs[f"{checked['name']}.values"][-1] = bad_id
        with pytest.raises(Exception) as ts_error:
            ts.predict(inputs)
        with pytest.raises(ValueError) as pt2_error:
            pt2.predict(inputs)
        assert str(pt2_error.value) in str(ts_error.value), (pt2_error.value, ts_error.value)
    multi = next(f["name"] for f in meta["sparse"] if f["multi_hot"])
    inputs = _random_inputs(meta, 4, 0)
    inputs[f"{multi}.lengths"][0] += 1  # lengths sum past the ids: would read past the values
    with pytest.raises(ValueError, match=rf"'{multi}.lengths' must be >= 0 and sum to the \d+ ids of '{multi}.values'"):
        pt2.predict(inputs)
    inputs = _random_inputs(meta, 4, 0)
    inputs[f"{checked['name']}.lengths"][:2] = torch.tensor([2, 0])  # a single-hot feature: one id per row
    with pytest.raises(ValueError, match=rf"single-hot feature '{checked['name']}' takes one id per row"):
        pt2.predict(inputs)
    del inputs[f"{checked['name']}.values"]
    with pytest.raises(ValueError, match=r"missing input"):
        pt2.predict(inputs)


def test_stale_or_corrupt_pt2_is_refused_in_one_line(pt2_export, tmp_path: Path) -> None:
    copy = tmp_path / "export"
    shutil.copytree(pt2_export, copy)
    data = bytearray((copy / "model.pt2").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.pt2").write_bytes(bytes(data))
    stale = r"model.pt2: sha256 \w+\.\.\., but metadata.json lists \w+\.\.\.: the file was replaced"
    with pytest.raises(ValueError, match=stale) as e:
        load_pt2(copy)
    assert "\n" not in str(e.value)
    meta = json.loads((copy / "metadata.json").read_text())
    del meta["artifacts"]["model.pt2"]
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"no 'artifacts' entry for model.pt2"):
        load_pt2(copy)
    (copy / "model.pt2").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no model.pt2 \(export with --pt2 to write it\)"):
        load_pt2(copy)


def test_pt2_export_refusals_are_one_line(smoke_runs, tmp_path: Path) -> None:
    with pytest.raises(Pt2ExportError, match=r"--pt2 with --quantize int8: .*fbgemm::bounds_check_indices"):
        export_checkpoint(ExportConfig(quantize="int8", pt2=True), smoke_runs.c2al, tmp_path / "int8")
    # no C++ compiler: CXX names a missing file and PATH holds only the interpreter's directory (no g++)
    bin_dir = Path(sys.executable).parent
    assert not (bin_dir / "g++").exists()
    env = {**os.environ, "CXX": "/nonexistent/c++", "PATH": str(bin_dir), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "c2al_rec.cli", "export", "--checkpoint", str(smoke_runs.c2al)]
    proc = subprocess.run([*cmd, "--out", str(tmp_path / "x"), "--pt2"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("c2al-rec export: error: --pt2: AOTInductor compiles model.pt2 with a C++ compiler")
    assert "/nonexistent/c++" in lines[-1] and not (tmp_path / "x").exists()


def test_predict_and_serve_answer_identically_from_either_format(smoke_runs, pt2_export, tmp_path: Path) -> None:
    files = input_files(smoke_runs.data, "test")
    for fmt, model in (("pt", load_exported(pt2_export)), ("pt2", load_pt2(pt2_export))):
        predict_files(model, files, tmp_path / f"{fmt}.parquet", batch_size=500, progress=False)
    a, b = (pq.read_table(tmp_path / f"{fmt}.parquet") for fmt in ("pt", "pt2"))
    assert a.schema.metadata[b"model_id"] == b.schema.metadata[b"model_id"]
    np.testing.assert_allclose(a["prob"].to_numpy(), b["prob"].to_numpy(), atol=1e-5, rtol=0)

    from tests.test_serve_http import _post, _start_server

    meta = json.loads((pt2_export / "metadata.json").read_text())
    names = meta["dense"] + [f["name"] for f in meta["sparse"]]
    rows = pq.read_table(Path(smoke_runs.data) / "test", columns=names).slice(0, 32).to_pylist()
    ts = load_exported(pt2_export)
    want = ts.predict(rows_to_inputs(rows, ts)).numpy()
    proc, port = _start_server(pt2_export, "--format", "pt2")
    try:
        status, body = _post(port, {"rows": rows})
        bad_status, bad_body = _post(port, {"rows": [{**rows[0], meta["dense"][0]: "x"}]})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert status == 200 and body["model_id"] == ts.model_id
    np.testing.assert_allclose(body["prob"], want, atol=1e-5, rtol=0)
    assert bad_status == 400 and "row 0" in bad_body["error"]
