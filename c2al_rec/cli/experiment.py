"""Multi-seed experiment: baseline vs C2AL (same seeds and data order), controls, lambda sweep.

    c2al-rec experiment --config launch/configs/experiment_synthetic.toml --seeds 5 --out runs/exp

Resumable: runs whose metrics.json exists are skipped. Writes report.md (Table 1-style rows with
seed-level intervals), eval/<variant>.json, summary.json and attention.png.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .options import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--seeds", type=int, default=5, help="seeds per variant (>= 2)")
    parser.add_argument("--out", required=True, help="experiment directory")
    parser.add_argument(
        "--record",
        default=None,
        metavar="DIR",
        help="also copy summary.json / report.md / forest.png / attention.png to DIR/experiment_<name>.* "
        "(e.g. benchmarks/results, name from --record-name)",
    )
    parser.add_argument("--record-name", default="synthetic", help="<name> of the recorded files")


def run(args: argparse.Namespace) -> int:
    from c2al_rec.config import load_config
    from c2al_rec.train.launch import preflight_config_only
    from c2al_rec.workflows.experiment import Experiment

    cfg = preflight_config_only(load_config(args.config, args.overrides))
    command = "c2al-rec experiment " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    out = Path(args.out)
    summary = Experiment(cfg, out, args.seeds, command=command).run()
    print((out / "report.md").read_text())
    print(f"[experiment] finished in {summary['wall_time_s'] / 60:.1f} min; report {out / 'report.md'}")
    if args.record:
        from c2al_rec.workflows.experiment import record_results

        for path in record_results(out, Path(args.record), args.record_name):
            print(f"recorded {path}")
    return 0
