"""Train the baseline or the C2AL model with DMP (1 process here, or N local ranks, or under torchrun).

    c2al-rec train --config launch/configs/smoke.toml --out runs/smoke
    c2al-rec train --config launch/configs/smoke.toml --out runs/smoke --nproc-per-node 2 --resume auto
    c2al-rec train --config launch/configs/smoke.toml --out runs/smoke --overwrite
    c2al-rec train --config launch/configs/smoke.toml --out runs/smoke --track mlflow --train.mlflow_uri=file:mlruns
    torchrun --nproc_per_node=2 -m c2al_rec.train --config launch/configs/smoke.toml --out runs/smoke

Writes the run directory:
  config.toml        the resolved config
  cohorts.json       the resolved cohort spec (C2AL)
  checkpoints/       step_<N>/ (DCP, each ending with MANIFEST.json), best (names the best validation NE)
  metrics.json       final validation: primary ne/calibration/auc, aux head/tail ne, NE per cohort, throughput
  train.log          the console lines with timestamps, the config path, data fingerprint, final metrics
  tensorboard/       losses (primary, head, tail, total), learning rates, dense grad norm, samples/s,
                     train metrics as <metric>_window (last log_every steps) and <metric>_lifetime,
                     aux and per-cohort NE, valid/*, and the flattened config as hparams (tensorboard/hparams)
  provenance.json    git commit, package versions, data fingerprint (file names, sizes, schema hash)
  .c2al-manifest.json  what the run created there; --overwrite removes only those entries and refuses
                     a directory holding anything else (or one without this manifest)
With --track mlflow (pip install 'c2al-rec[mlflow]'), the same params, metrics and metrics.json go to
MLflow (train.mlflow_uri, train.mlflow_experiment). One writer per run directory: a second `train` on
the same --out is refused while the first runs, and a directory that holds another run is trained
into only with --resume (continue it) or --overwrite (clear it first).
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
        "--overwrite",
        action="store_true",
        help="--out holds another run: delete what its manifest lists and train from scratch",
    )
    parser.add_argument(
        "--track",
        default=None,
        choices=["none", "mlflow"],
        help="also log to an experiment tracker (sets train.track; mlflow: the URI is train.mlflow_uri)",
    )


def run(args: argparse.Namespace) -> int:
    from c2al_rec.train.launch import launch

    overrides = list(args.overrides)
    if args.resume is not None:
        overrides.append(f"--checkpoint.resume={args.resume}")
    if args.init_from is not None:
        overrides.append(f"--checkpoint.init_from={args.init_from}")
    if args.track is not None:
        overrides.append(f"--train.track={args.track}")
    cfg = load_config(args.config, overrides)
    metrics = launch(cfg, Path(args.out), args.nproc_per_node, args.max_restarts, overwrite=args.overwrite)
    if metrics is not None:
        print(json.dumps({"run_dir": args.out, "primary": metrics.get("primary"), "steps": metrics.get("steps")}))
    return 0
