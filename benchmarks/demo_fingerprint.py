"""The demo's numeric fingerprint: numbers that change exactly when what the demo computes changes.

python -m benchmarks.demo_fingerprint              # print the fingerprint as JSON
python -m benchmarks.demo_fingerprint --check      # compare with benchmarks/results/demo.json

A mini pipeline (the demo's own stages on ``launch/configs/demo.toml`` with ``MINI_OVERRIDES``, 1 thread,
under a minute): both runs' per-step training losses, the chosen cohorts, the selection and the evaluation
table, to ``SIGNIFICANT`` digits. ``scripts/record_demo.py`` records it; ``tests/test_readme.py`` fails when
a number moved beyond ``TOLERANCE``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "launch" / "configs" / "demo.toml"
RECORD = REPO / "benchmarks" / "results" / "demo.json"
RERECORD = "make demo && python scripts/record_demo.py"
SIGNIFICANT = 5
# relative tolerance of a recorded number (one unit in about the 5th significant digit), and an
# absolute floor for numbers near zero (NE_diff is a fraction: 1e-7 is 0.00001%)
TOLERANCE = {"rel": 2e-4, "abs": 1e-7}

MINI_OVERRIDES = [
    "--data.synthetic.rows=20000", "--data.synthetic.chunk_rows=20000", "--data.batch_size=256",
    "--data.shuffle_buffer=2048", "--train.max_steps=24", "--train.warmup_steps=2", "--train.log_every=1",
    "--train.eval_every=0", "--train.num_threads=1", "--checkpoint.every_steps=0", "--discover.min_rows=50",
    "--discover.min_positives=2", "--pipeline.nproc_per_node=1", "--pipeline.resamples=100",
]  # fmt: skip


def _sig(x: Optional[float]) -> Optional[float]:
    """``x`` to ``SIGNIFICANT`` significant digits (None stays None)."""
    if x is None or isinstance(x, int) or x == 0 or not math.isfinite(x):
        return x
    return float(f"{x:.{SIGNIFICANT - 1}e}")


def _losses(run_dir: Path) -> list[float]:
    """The per-step total training loss of a run, from its TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0}).Reload()  # returns itself
    return [_sig(e.value) for e in acc.Scalars("train/loss_total")]


def fingerprint_of(out: Path) -> dict[str, Any]:
    """The fingerprint of a finished pipeline directory (its candidate runs, cohorts.json, selection.json, eval/)."""
    spec = json.loads((out / "cohorts.json").read_text())
    chosen = (spec.get("pairs") or [{}])[0]
    selection = json.loads((out / "selection.json").read_text())
    evaluation = json.loads((out / "eval" / "eval.json").read_text())
    return {
        "loss": {name: _losses(out / run) for name, run in selection["runs"].items()},
        "selection": {
            "chosen": selection["chosen"],
            "valid_ne_diff": {
                name: {g: _sig(fig.get("ne_diff")) for g, fig in c["valid"].items()}
                for name, c in selection["candidates"].items()
            },
        },
        "cohorts": {**{k: spec[k] for k in ("axis", "head", "tail")}, "score": _sig(chosen.get("score"))},
        "eval": {
            name: {k: _sig(g.get(k)) for k in ("rows", "ne", "ne_base", "ne_diff", "calibration", "auc")}
            for name, g in evaluation["groups"].items()
        },
    }


def run_mini_pipeline(work: Path) -> dict[str, Any]:
    """Run the mini pipeline into ``work`` (data included) in this process; return its fingerprint."""
    import torch

    from c2al_rec.config import load_config
    from c2al_rec.train.launch import preflight_config_only
    from c2al_rec.workflows.pipeline import Pipeline

    torch.set_num_threads(1)
    cfg = load_config(str(DEMO_CONFIG), [*MINI_OVERRIDES, f"--data.path={work / 'data'}"])
    Pipeline(preflight_config_only(cfg), work / "run").run(stop_after="evaluate")
    return fingerprint_of(work / "run")


def compute() -> dict[str, Any]:
    """The fingerprint of the current code: the mini pipeline in a fresh subprocess on one thread
    (so this process's thread settings and imports change nothing)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="demo_fingerprint_") as tmp:
        argv = [sys.executable, "-m", "benchmarks.demo_fingerprint", "--inline", "--work", tmp]
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"the demo's mini pipeline failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return json.loads((Path(tmp) / "fingerprint.json").read_text())


def differences(recorded: Any, current: Any, where: str = "") -> list[str]:
    """Every place where ``current`` differs from ``recorded`` beyond ``TOLERANCE`` ("path: a -> b")."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        out = [f"{where}/{k}: {'new' if k in current else 'missing'}" for k in sorted(recorded.keys() ^ current.keys())]
        for k in recorded.keys() & current.keys():
            out += differences(recorded[k], current[k], f"{where}/{k}")
        return out
    if isinstance(recorded, list) and isinstance(current, list):
        if len(recorded) != len(current):
            return [f"{where}: {len(recorded)} values -> {len(current)}"]
        return [d for i, (a, b) in enumerate(zip(recorded, current)) for d in differences(a, b, f"{where}[{i}]")]
    if isinstance(recorded, (int, float)) and isinstance(current, (int, float)) and not isinstance(recorded, bool):
        ok = math.isclose(recorded, current, rel_tol=TOLERANCE["rel"], abs_tol=TOLERANCE["abs"])
        return [] if ok else [f"{where}: {recorded} -> {current}"]
    return [] if recorded == current else [f"{where}: {recorded!r} -> {current!r}"]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help=f"compare with {RECORD.relative_to(REPO)}")
    parser.add_argument("--inline", action="store_true", help="run in this process (what --check runs)")
    parser.add_argument("--work", default=None, help="with --inline: working directory (kept)")
    args = parser.parse_args(argv)
    if args.inline:
        work = Path(args.work or tempfile.mkdtemp(prefix="demo_fingerprint_"))
        (work / "fingerprint.json").write_text(json.dumps(run_mini_pipeline(work), indent=1) + "\n")
        return 0
    fp = compute()
    if not args.check:
        print(json.dumps(fp, indent=1))
        return 0
    diffs = differences(json.loads(RECORD.read_text())["fingerprint"], fp)
    print("\n".join(diffs) if diffs else "the demo's fingerprint matches the record")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
