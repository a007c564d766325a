"""Run logs: TensorBoard scalars and hparams, train.log, windowed vs lifetime metrics, MLflow tracking.

Tier 1: ``TrainMetrics`` views and the config flattening (no training). Tier 4: one short in-process
training on the smoke data with TensorBoard and train.log; one with ``train.track = "mlflow"`` against a
local file store (skipped when mlflow is not installed: ``pip install 'c2al-rec[mlflow]'``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from c2al_rec.config import ConfigError, load_config
from c2al_rec.train.launch import launch
from c2al_rec.train.metrics import TrainMetrics
from c2al_rec.train.tracking import flatten, mlflow_available
from tests.trained_runs import SMOKE, SPEC, TrainedRuns


def _short_run(data: Path, out: Path, *extra: str) -> dict:
    overrides = [
        f"--data.path={data}",
        f"--cohorts.spec={SPEC}",
        "--cohorts.enabled=true",
        "--train.max_steps=6",
        "--train.log_every=3",
        "--train.eval_every=0",
        "--train.eval_batches=2",
        "--train.diagnostics_every=0",
        "--checkpoint.every_steps=0",
        *extra,
    ]
    return launch(load_config(SMOKE, overrides), out, nproc_per_node=1)


def test_metric_views_window_and_lifetime_differ() -> None:
    m = TrainMetrics(world_size=1, rank=0, batch_size=8, aux=True, num_segments=2, window_batches=1)
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        y = (torch.rand(8, generator=g) < 0.5).float()
        logits = {k: torch.randn(8, generator=g) * (i + 1) for k in ("primary", "head", "tail")}
        m.update(logits, y, torch.ones(8), {"head": y, "tail": y}, torch.randint(-1, 2, (8,), generator=g))
    views = m.compute_views()
    assert set(views) == {"window", "lifetime"}
    assert views["window"]["primary"]["ne"] != pytest.approx(views["lifetime"]["primary"]["ne"])
    assert set(views["window"]["aux"]) == {"head", "tail"} and len(views["lifetime"]["segments"]) == 3
    assert m.compute() == views["lifetime"]


def test_flatten_config_and_track_validation() -> None:
    flat = flatten({"train": {"dense_lr": 1e-3, "track": "none"}, "model": {"dense_arch": [16, 8]}})
    assert flat == {"train.dense_lr": 1e-3, "train.track": "none", "model.dense_arch": "[16, 8]"}
    with pytest.raises(ConfigError, match="train.track"):
        load_config(SMOKE, ["--train.track=wandb"])


def test_tensorboard_and_train_log(smoke_runs: TrainedRuns, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    metrics = _short_run(smoke_runs.data, run)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {
        "train/loss_primary", "train/loss_head", "train/loss_tail", "train/loss_total",
        "train/lr_dense", "train/lr_sparse", "train/grad_norm_dense", "train/samples_per_s",
        "train/ne_window", "train/ne_lifetime", "train/calibration_window", "train/calibration_lifetime",
        "train/auc_window", "train/head_ne_window", "train/head_ne_lifetime", "train/tail_ne_window",
        "train/tail_ne_lifetime", "valid/ne", "valid/auc", "valid/head_ne", "valid/tail_ne",
    }  # fmt: skip
    assert expected <= tags, expected - tags
    assert "train/auc_lifetime" not in tags  # torchrec keeps AUC over its window only
    assert any(t.startswith("train/cohort_ne_window/user_value:") for t in tags)
    assert any(t.startswith("train/cohort_ne_lifetime/user_value:") for t in tags)
    assert any(t.startswith("valid/cohort_ne/user_value:") for t in tags)
    assert [e.step for e in events.Scalars("train/loss_total")] == [3, 6]
    hparams = EventAccumulator(str(run / "tensorboard" / "hparams"))
    hparams.Reload()
    final = hparams.Scalars("hparam/valid/ne")
    assert final and final[-1].value == pytest.approx(metrics["primary"]["ne"], rel=1e-6)

    log = (run / "train.log").read_text()
    assert "\r" not in log  # no progress-bar frames in the file
    assert f"config: {(run / 'config.toml').resolve()}" in log
    assert "schema hash" in log and "Parquet files" in log
    assert "| window: ne" in log and "| lifetime: ne" in log
    assert "[train] validation at step 6" in log
    final_line = [line for line in log.splitlines() if "final metrics: " in line][-1]
    assert json.loads(final_line.split("final metrics: ", 1)[1])["steps"] == 6


@pytest.mark.skipif(not mlflow_available(), reason="mlflow is not installed (pip install 'c2al-rec[mlflow]')")
def test_mlflow_tracking_to_a_local_file_store(smoke_runs: TrainedRuns, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    run = tmp_path / "run"
    metrics = _short_run(
        smoke_runs.data, run, "--train.track=mlflow", f"--train.mlflow_uri={uri}", "--train.grad_clip=1.0"
    )
    client = MlflowClient(tracking_uri=uri)
    run_id = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    recorded = client.get_run(run_id)
    assert recorded.info.status == "FINISHED"
    assert recorded.data.params["train.max_steps"] == "6"
    assert recorded.data.params["train.track"] == "mlflow"
    assert {"train/loss_total", "train/ne_window", "train/ne_lifetime", "train/grad_norm_dense", "valid/ne"} <= set(
        recorded.data.metrics
    )
    assert "train/cohort_ne_window/user_value:p95_" in recorded.data.metrics  # "p95+": + is not a metric-name char
    assert recorded.data.metrics["valid/ne"] == pytest.approx(metrics["primary"]["ne"], rel=1e-6)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.json", "config.toml", "train.log"} <= artifacts
    local = Path(client.download_artifacts(run_id, "metrics.json", str(tmp_path)))
    assert json.loads(local.read_text())["steps"] == 6
