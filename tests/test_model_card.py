"""The exported model's card (metadata.json) and the model id that predict and serve carry.

Tier 4: exports the session's smoke C2AL run (tests/trained_runs.py) once for the module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from c2al_rec.config import ExportConfig
from c2al_rec.export.exporter import export_checkpoint
from c2al_rec.serve.artifact import MODEL_FILE, compute_model_id, load_exported
from c2al_rec.serve.http import create_app
from c2al_rec.serve.predictor import input_files, predict_files
from tests.trained_runs import TrainedRuns


@pytest.fixture(scope="module")
def exported(smoke_runs: TrainedRuns, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("card") / "export"
    export_checkpoint(ExportConfig(parity_rows=512), smoke_runs.c2al, out)
    return out


def test_metadata_is_a_model_card(exported: Path, smoke_runs: TrainedRuns) -> None:
    meta = json.loads((exported / "metadata.json").read_text())
    provenance = json.loads((smoke_runs.c2al / "provenance.json").read_text())
    metrics = json.loads((smoke_runs.c2al / "metrics.json").read_text())
    assert meta["git_commit"] == provenance["git_commit"] and meta["export_git_commit"]
    assert meta["config"]["cohorts"]["enabled"] is True and meta["config"]["data"]["path"] == str(smoke_runs.data)
    assert meta["data_fingerprint"] == provenance["data"]
    assert meta["cohort_spec"]["axis"] == "user_value" and {"head", "tail"} <= set(meta["cohort_spec"])
    evaluation = meta["evaluation"]
    assert evaluation["step"] == meta["source_step"] == metrics["steps"]
    assert evaluation["validation"]["source"] == "metrics.json"
    assert evaluation["validation"]["primary"] == metrics["primary"]
    assert evaluation["exported"]["rows"] == 512 and 0 < evaluation["exported"]["ne"] < 2


def test_model_id_is_the_same_everywhere(exported: Path, tmp_path: Path, smoke_runs: TrainedRuns) -> None:
    meta = json.loads((exported / "metadata.json").read_text())
    expected = compute_model_id(exported, exported / MODEL_FILE)
    assert meta["model_id"] == expected and expected.startswith("export-") and len(expected.split("-")[-1]) == 12
    model = load_exported(exported)
    assert model.model_id == create_app(model).state.model_id == expected
    # a directory exported before model_id was recorded gets the same id computed
    model.metadata.pop("model_id")
    assert model.model_id == create_app(model).state.model_id == expected

    out = tmp_path / "preds.parquet"
    predict_files(load_exported(exported), input_files(smoke_runs.data, "test"), out, progress=False)
    assert pq.read_schema(out).metadata[b"model_id"].decode() == expected
    assert "model_id" not in pq.read_schema(out).names  # metadata, not a column: the columns stay the contract's


def test_predict_outputs_carry_no_autograd_history(exported: Path) -> None:
    model = load_exported(exported)
    probs = model.predict(model.sample_input())
    assert probs.grad_fn is None and not probs.requires_grad and torch.is_inference(probs)
