"""Tier 4: export (aux heads stripped, parity gate, int8), fresh-process loading, and predict."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from c2al_rec.config import ExportConfig
from c2al_rec.data.reader import ParquetReader
from c2al_rec.data.schema import load_schema
from c2al_rec.export.exporter import ParityError, export_checkpoint, kjt_to_inputs
from c2al_rec.serve.artifact import load_exported
from c2al_rec.serve.predictor import input_files, predict_files

FRESH_PROCESS = r"""
import sys, json, torch, torchrec
model = torch.jit.load(sys.argv[1] + "/model.pt")
inputs = torch.load(sys.argv[2], weights_only=True)
names = json.load(open(sys.argv[1] + "/metadata.json"))["sparse"]
out = {}
for b in (1, 7, 512):
    part = {"dense": inputs["dense"][:b]}
    for f in names:
        n = f["name"]
        lengths = inputs[n + ".lengths"][:b]
        part[n + ".values"] = inputs[n + ".values"][: int(lengths.sum())]
        part[n + ".lengths"] = lengths
    with torch.no_grad():
        out[b] = model.predict(part).tolist()
assert not any(m.startswith("c2al_rec") for m in sys.modules), "c2al_rec was imported"
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def exported(smoke_runs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    out = {"c2al": root / "c2al", "baseline": root / "baseline", "int8": root / "int8"}
    export_checkpoint(ExportConfig(), smoke_runs.c2al, out["c2al"])
    export_checkpoint(ExportConfig(), smoke_runs.baseline, out["baseline"])
    export_checkpoint(ExportConfig(quantize="int8"), smoke_runs.c2al, out["int8"])
    return out


def test_export_directory_contract_and_parity(exported, smoke_runs) -> None:
    d = exported["c2al"]
    assert {p.name for p in d.iterdir()} == {"model.pt", "metadata.json", "sample_input.pt"}
    meta = json.loads((d / "metadata.json").read_text())
    schema = load_schema(smoke_runs.data)
    assert [f["name"] for f in meta["sparse"]] == [f.name for f in schema.sparse]
    assert meta["dense"] == schema.dense and meta["trained_with_c2al"] is True
    assert meta["parity"]["max_abs_diff"] <= 1e-5 and meta["parity"]["rows"] > 1000
    model = load_exported(d)
    assert not [k for k in model.module.state_dict() if "aux_heads" in k]
    sample = torch.load(d / "sample_input.pt", weights_only=True)
    assert sample["dense"].shape[0] == 8 and (d / "sample_input.pt").stat().st_size < 64_000


def test_c2al_export_costs_the_same_as_baseline(exported) -> None:
    a, b = load_exported(exported["c2al"]), load_exported(exported["baseline"])
    assert a.metadata["parameters"] == b.metadata["parameters"]
    assert a.metadata["trained_with_c2al"] and not b.metadata["trained_with_c2al"]
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.module.state_dict().items()}  # noqa: E731
    assert shapes(a) == shapes(b)

    # the whole inlined TorchScript graph, modulo the per-compilation class-name mangling
    def graph(m, method: str) -> str:
        text = str(getattr(m.module, method).inlined_graph)
        text = re.sub(r"___torch_mangle_\d+\.", "", text)
        text = re.sub(r"warn_id=\d+", "warn_id=N", text)  # a process-wide warning counter
        return re.sub(r" # .*", "", text)  # source-location comments name per-trace file keys

    assert graph(a, "forward") == graph(b, "forward")
    assert graph(a, "predict") == graph(b, "predict")
    assert "aux_heads" not in graph(a, "forward")


def test_fresh_process_loads_with_torch_and_torchrec_only(exported, smoke_runs, tmp_path: Path) -> None:
    reader = ParquetReader(smoke_runs.data, None, "test", 512, shuffle=False)
    batch = next(iter(reader))
    inputs = kjt_to_inputs(batch.dense_features, batch.sparse_features)
    torch.save(inputs, tmp_path / "inputs.pt")
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(exported["c2al"]), str(tmp_path / "inputs.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    local = load_exported(exported["c2al"]).predict(inputs).numpy()
    for b in ("1", "7", "512"):
        assert len(out[b]) == int(b)
        np.testing.assert_allclose(out[b], local[: int(b)], atol=1e-6)


def test_int8_export_is_smaller_nonzero_and_within_ne_tolerance(exported) -> None:
    meta = json.loads((exported["int8"] / "metadata.json").read_text())
    assert meta["quantize"] == "int8" and abs(meta["parity"]["ne_rel_change"]) <= 0.005
    model = load_exported(exported["int8"])
    # torchrec's inference EBC is traced into fbgemm ops whose packed uint8 weights become constants
    tables = {k: v for k, v in model.module.state_dict().items() if v.dtype == torch.uint8 and v.numel() > 0}
    assert tables, "no int8 tables in the exported model"
    assert all(bool(v.any()) for v in tables.values()), "an int8 table is all zeros"
    assert (exported["int8"] / "model.pt").stat().st_size < (exported["c2al"] / "model.pt").stat().st_size


def test_failed_parity_gate_writes_nothing(smoke_runs, tmp_path: Path) -> None:
    out = tmp_path / "export"
    gate = ExportConfig()
    gate.parity_max_abs_diff = -1.0  # below any |dp| (the config refuses it, so set after its check)
    with pytest.raises(ParityError, match="parity gate failed.*nothing written"):
        export_checkpoint(gate, smoke_runs.c2al, out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_predict_scores_in_row_order_with_passthrough_columns(exported, smoke_runs, tmp_path: Path) -> None:
    model = load_exported(exported["c2al"])
    out = tmp_path / "preds.parquet"
    rows = predict_files(model, input_files(smoke_runs.data, "test"), out, batch_size=300, progress=False)
    table = pq.read_table(out)
    test = pq.read_table(load_schema(smoke_runs.data).split_dir("test"))
    assert rows == table.num_rows == test.num_rows
    assert table.column("row_id").to_pylist() == test.column("row_id").to_pylist()
    for col in ("label", "user_value", "age_bucket"):
        assert col in table.column_names
    assert table.schema.field("prob").type == "float"
    probs = table.column("prob").to_numpy()
    assert ((probs > 0) & (probs < 1)).all()


def test_predict_errors_name_file_and_column(exported, smoke_runs, tmp_path: Path) -> None:
    model = load_exported(exported["c2al"])
    f = input_files(smoke_runs.data, "test")[0]
    pq.write_table(pq.read_table(f).drop_columns(["user_id"]), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad.parquet: missing feature column\(s\) \['user_id'\]"):
        predict_files(model, [tmp_path / "bad.parquet"], tmp_path / "p.parquet", progress=False)
    t = pq.read_table(f)
    t = t.set_column(t.schema.get_field_index("user_id"), "user_id", t.column("user_id").cast("string"))
    pq.write_table(t, tmp_path / "bad2.parquet")
    with pytest.raises(ValueError, match="bad2.parquet: sparse column 'user_id' has type string, expected int64"):
        predict_files(model, [tmp_path / "bad2.parquet"], tmp_path / "p.parquet", progress=False)
    assert not (tmp_path / "p.parquet").exists()


def test_predict_turns_a_model_side_rejection_into_one_line(exported, smoke_runs, tmp_path: Path, monkeypatch) -> None:
    model = load_exported(exported["c2al"])

    def rejects(inputs):  # what the scripted graph raises for a row its own checks refuse
        raise torch.jit.Error("The following operation failed in the TorchScript interpreter.\nValueError: bad id 7")

    monkeypatch.setattr(model, "predict", rejects)
    f = input_files(smoke_runs.data, "test")[0]
    with pytest.raises(ValueError, match=r"rows 0\.\.\d+: the model rejected the batch: ValueError: bad id 7"):
        predict_files(model, [f], tmp_path / "p.parquet", progress=False)
    assert not (tmp_path / "p.parquet").exists()
