"""Small trained runs shared by the export / serving / discovery / evaluation tests (one training per session)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from c2al_rec.config import load_config
from c2al_rec.train.launch import launch

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "launch" / "configs" / "smoke.toml"
SPEC = REPO / "launch" / "cohorts" / "user_value_p5_p95.json"


@dataclass
class TrainedRuns:
    data: Path
    baseline: Path
    c2al: Path


def train_smoke_pair(root: Path, steps: int = 16) -> TrainedRuns:
    data = root / "data"
    common = [
        f"--data.path={data}",
        f"--cohorts.spec={SPEC}",
        f"--train.max_steps={steps}",
        "--train.eval_every=0",
        "--checkpoint.every_steps=0",
        "--train.log_every=0",
    ]
    runs = TrainedRuns(data, root / "baseline", root / "c2al")
    launch(load_config(SMOKE, common + ["--cohorts.enabled=false"]), runs.baseline, nproc_per_node=1)
    launch(load_config(SMOKE, common + ["--cohorts.enabled=true"]), runs.c2al, nproc_per_node=1)
    return runs
