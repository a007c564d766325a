"""Train the baseline or the C2AL model with DMP (1 process here, or N local ranks, or under torchrun).

    c2al-rec train --config launch/configs/smoke.toml --out runs/smoke
    c2al-rec train --config launch/configs/smoke.toml --out runs/smoke --nproc-per-node 2 --resume auto
    c2al-rec train --config launch/configs/smoke.toml --out runs/smoke --overwrite
    torchrun --nproc_per_node=2 -m c2al_rec.train --config launch/configs/smoke.toml --out runs/smoke

Writes the run directory: config.toml, cohorts.json (C2AL), checkpoints/step_<N>/, checkpoints/best,
metrics.json, tensorboard/, provenance.json. One writer per run directory: a second `train` on the
same --out is refused while the first runs, and a directory that holds another run is trained into
only with --resume (continue it) or --overwrite (clear it first).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from c2al_rec.config import load_config

from .options import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="local ranks (elastic launch, gloo on CPU)")
    parser.add_argument("--max-restarts", type=int, default=0, help="restarts of the local ranks after a failure")
    parser.add_argument("--resume", default=None, help="'auto', 'never' or a checkpoint (sets checkpoint.resume)")
    parser.add_argument("--init-from", default=None, help="start from another run's weights (checkpoint.init_from)")
    parser.add_argument(
        "--overwrite", action="store_true", help="--out holds another run: delete it and train from scratch"
    )


def run(args: argparse.Namespace) -> int:
    from c2al_rec.train.launch import launch

    overrides = list(args.overrides)
    if args.resume is not None:
        overrides.append(f"--checkpoint.resume={args.resume}")
    if args.init_from is not None:
        overrides.append(f"--checkpoint.init_from={args.init_from}")
    cfg = load_config(args.config, overrides)
    metrics = launch(cfg, Path(args.out), args.nproc_per_node, args.max_restarts, overwrite=args.overwrite)
    if metrics is not None:
        print(json.dumps({"run_dir": args.out, "primary": metrics.get("primary"), "steps": metrics.get("steps")}))
    return 0
