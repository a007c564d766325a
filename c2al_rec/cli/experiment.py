"""Multi-seed experiment: baseline vs C2AL (same seeds and data order), controls, lambda sweep.

    c2al-rec experiment --config launch/configs/experiment_synthetic.toml --seeds 5 --out runs/exp

Resumable: runs whose metrics.json exists are skipped. Writes report.md (Table 1-style rows with
seed-level intervals), eval/<variant>.json, summary.json and attention.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--seeds", type=int, default=5, help="seeds per variant (>= 2)")
    parser.add_argument("--out", required=True, help="experiment directory")


def run(args: argparse.Namespace) -> int:
    from c2al_rec.config import load_config
    from c2al_rec.train.launch import preflight_config_only
    from c2al_rec.workflows.experiment import Experiment

    cfg = preflight_config_only(load_config(args.config, args.overrides))
    summary = Experiment(cfg, Path(args.out), args.seeds).run()
    print((Path(args.out) / "report.md").read_text())
    print(f"[experiment] finished in {summary['wall_s'] / 60:.1f} min; report {Path(args.out) / 'report.md'}")
    return 0
