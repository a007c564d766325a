"""Tier 2/4: the trainer on 2 gloo ranks, end to end; launches are shared between assertions.

Launches (each costs seconds of imports): A = uninterrupted 2-rank C2AL run; B = the same run
through the CLI under elastic restarts with rank 1 SIGKILLed mid-training; C = A's step-20
checkpoint resumed on 1 rank; D = C's 1-rank checkpoint loaded on 2 ranks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

from c2al_rec.config import load_config
from c2al_rec.distributed import checkpoint as ckpt_io
from c2al_rec.runs.load import load_run
from c2al_rec.train.launch import launch

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "launch" / "configs" / "smoke.toml"
OVERRIDES = [f"--cohorts.spec={REPO / 'launch/cohorts/user_value_p5_p95.json'}"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data") / "smoke"


@pytest.fixture(scope="module")
def run_a(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("runs") / "a"
    cfg = load_config(SMOKE, OVERRIDES + [f"--data.path={data_dir}"])
    launch(cfg, out, nproc_per_node=2)
    return out


def _params(run: Path | str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in load_run(run).model.state_dict().items()}


def _assert_same_params(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    diff = {k: float((a[k] - b[k]).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not diff, diff


def test_run_directory_and_metrics_contract(run_a: Path) -> None:
    for name in ("config.toml", "cohorts.json", "metrics.json", "provenance.json"):
        assert (run_a / name).is_file(), name
    assert any((run_a / "tensorboard").iterdir())
    metrics = json.loads((run_a / "metrics.json").read_text())
    assert set(metrics["primary"]) == {"ne", "calibration", "auc"}
    assert 0.3 < metrics["primary"]["ne"] < 1.0  # learned something, and NE is sane
    # 30 steps of ~7 positives a batch: AUC lands at 0.52-0.56 depending on the data order alone
    assert metrics["primary"]["auc"] > 0.51
    assert set(metrics["aux"]) == {"head", "tail"} and metrics["aux"]["head"]["ne"] > 0
    cohorts = metrics["cohorts"]["user_value"]
    assert set(cohorts) == {"p0-p5", "p5-p95", "p95+"}
    assert all(c["rows"] > 0 and 0 <= c["positive_rate"] <= 1 for c in cohorts.values())
    # head (p95+) has the higher positive rate by construction of the planted data
    assert cohorts["p95+"]["positive_rate"] > cohorts["p0-p5"]["positive_rate"]
    assert metrics["steps"] == 30 and metrics["samples"] == 30 * 256 * 2 and metrics["samples_per_s"] > 0
    # quantile spec resolved into frozen numeric bounds
    spec = json.loads((run_a / "cohorts.json").read_text())
    assert "quantiles" not in spec and isinstance(spec["cohorts"][0]["upper"], float)
    # in-training diagnostics every 10 steps: gradient split and attention statistics (rank 0)
    rows = [json.loads(line) for line in (run_a / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30]
    g = rows[-1]["gradients"]["all"]
    assert -1 <= g["cosine"] <= 1 and g["norm_orthogonal"] <= g["norm_aux"] + 1e-12
    assert abs(g["norm_parallel"] ** 2 + g["norm_orthogonal"] ** 2 - g["norm_aux"] ** 2) <= 1e-9 * max(
        1, g["norm_aux"] ** 2
    )
    assert (
        len(rows[-1]["attention"]) == 2 and 0 <= rows[-1]["attention"][next(iter(rows[-1]["attention"]))]["gini"] <= 1
    )
    assert (run_a / "diagnostics.png").is_file()
    prov = json.loads((run_a / "provenance.json").read_text())
    assert prov["world_size"] == 2 and "torchrec" in prov["packages"] and prov["data"]["schema_hash"]


def test_checkpoint_retention_and_best_marker(run_a: Path) -> None:
    names = [p.name for p in ckpt_io.list_checkpoints(run_a)]
    best = ckpt_io.best_checkpoint_name(run_a)
    assert best is not None and best in names
    # newest K = 2 kept, plus the best one if it is older
    assert names[-2:] == ["step_20", "step_30"]
    assert set(names) <= {"step_20", "step_30", best}
    assert not list((run_a / "checkpoints").glob(".tmp_*"))
    state = ckpt_io.read_train_state(run_a / "checkpoints" / "step_30")
    assert state["batches_in_epoch"] == 60 and state["world_size"] == 2
    # every table is owned by the fused sparse optimizer, none also by the dense one
    keys = FileSystemReader(str(run_a / "checkpoints" / "step_30")).read_metadata().state_dict_metadata
    tables = {
        k.split(".embedding_bags.")[1].split(".")[0] for k in keys if k.startswith("model.") and ".embedding_bags." in k
    }
    fused = {k.split(".embedding_bags.")[1].split(".")[0] for k in keys if k.startswith("optim.state.sparse.")}
    assert len(tables) == 10 and fused == tables
    assert not [k for k in keys if k.startswith("optim.state.dense.") and ".embedding_bags." in k]


def test_killed_rank_restarts_and_matches_uninterrupted_run(run_a: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    env = {**os.environ, "C2AL_FAULT_KILL_AT_STEP": "17", "C2AL_FAULT_KILL_RANK": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "c2al_rec.cli",
            "train",
            "--config",
            str(SMOKE),
            "--out",
            str(out),
            "--nproc-per-node",
            "2",
            "--max-restarts",
            "1",
            "--resume",
            "auto",
            *OVERRIDES,
            f"--data.path={data_dir}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "fault injection: SIGKILL rank 1 at step 17" in log
    assert "resumed from" in log and "step_15" in log
    _assert_same_params(_params(run_a), _params(out))
    a = ckpt_io.read_train_state(ckpt_io.resolve_checkpoint(run_a))
    b = ckpt_io.read_train_state(ckpt_io.resolve_checkpoint(out))
    assert (a["samples"], a["batches_in_epoch"], a["step"]) == (b["samples"], b["batches_in_epoch"], b["step"])


def test_resume_across_world_sizes(run_a: Path, data_dir: Path, tmp_path: Path) -> None:
    # C: A's 2-rank step-20 checkpoint resumed on 1 rank for 10 more steps.
    src = tmp_path / "c_src"
    shutil.copytree(run_a, src)
    cfg = load_config(SMOKE, OVERRIDES + [f"--data.path={data_dir}", f"--checkpoint.resume={src}/checkpoints/step_20"])
    run_c = tmp_path / "c"
    launch(cfg, run_c, nproc_per_node=1)
    c_state = ckpt_io.read_train_state(ckpt_io.resolve_checkpoint(run_c))
    a20 = ckpt_io.read_train_state(src / "checkpoints" / "step_20")
    assert c_state["step"] == 30 and c_state["world_size"] == 1
    # 40 global batches consumed at step 20 by 2 ranks, then one per step on 1 rank
    assert c_state["batches_in_epoch"] == a20["batches_in_epoch"] + 10 == 50
    assert c_state["samples"] == a20["samples"] + 10 * 256

    # D: C's 1-rank checkpoint loaded on 2 ranks (no further steps): same weights as C.
    cfg_d = replace(cfg, checkpoint=replace(cfg.checkpoint, resume=str(ckpt_io.resolve_checkpoint(run_c))))
    run_d = tmp_path / "d"
    launch(cfg_d, run_d, nproc_per_node=2)
    _assert_same_params(_params(run_c), _params(run_d))
    assert ckpt_io.read_train_state(ckpt_io.resolve_checkpoint(run_d))["batches_in_epoch"] == 50


def test_unsharded_model_reproduces_the_sharded_models_validation_ne(run_a: Path, data_dir: Path) -> None:
    """The DMP model (trainer's validation) and the unsharded reload must compute the same function.

    Validation ran unshuffled with drop_last over 2 ranks: global batches 0..7 of 256 rows, i.e. the
    first 2048 rows of the valid split in file order.
    """
    from c2al_rec.analysis.stats import normalized_entropy
    from c2al_rec.runs.scoring import score_split

    metrics = json.loads((run_a / "metrics.json").read_text())
    table = score_split(load_run(run_a), data_dir, "valid", progress=False).slice(0, 2048)
    ne = normalized_entropy(table.column("prob").to_numpy(), table.column("label").to_numpy())
    assert ne == pytest.approx(metrics["primary"]["ne"], rel=1e-4)
