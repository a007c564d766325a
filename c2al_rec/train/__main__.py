"""Per-rank entry point for torchrun / torchx:  torchrun --nproc_per_node=2 -m c2al_rec.train --config X --out DIR

Rank 0 checks the run directory, runs the preflight and holds the run directory's lock for the
whole run (``--overwrite`` clears a previous run first); the other ranks wait for the dataset and
join the process group, which they can only do once rank 0 holds the directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from c2al_rec.config import config_to_dict, load_config
from c2al_rec.config.errors import error_line

from .launch import claim, job_hosts, preflight, run_rank, wait_for_dataset
from .quiet import quiet_known_noise
from .rundir import check_run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m c2al_rec.train", description=__doc__)
    parser.add_argument("--config", default=None, help="TOML run config")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--overwrite", action="store_true", help="clear --out first (what its manifest lists)")
    args, overrides = parser.parse_known_args(argv)
    quiet_known_noise()
    cfg = load_config(args.config, overrides)
    world_size, hosts = int(os.environ.get("WORLD_SIZE", "1")), job_hosts()
    if int(os.environ.get("RANK", "0")) == 0:
        check_run_dir(Path(args.out), cfg.checkpoint.resume, args.overwrite)
        cfg = preflight(cfg, world_size=world_size, hosts=hosts)  # generates synthetic data when configured
    else:
        wait_for_dataset(cfg)
        cfg = preflight(cfg, generate=False, world_size=world_size, hosts=hosts)
    lock = claim(cfg, Path(args.out), args.overwrite)
    try:
        run_rank(config_to_dict(cfg), args.out)
    finally:
        if lock is not None:
            lock.release()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BaseException as e:  # user errors (config, data, OS, memory): one line; torchrun shows each rank's exit
        line = error_line(e)
        if line is None:
            raise
        print(f"c2al_rec.train (rank {os.environ.get('RANK', '0')}): error: {line}", file=sys.stderr)
        sys.exit(2)
