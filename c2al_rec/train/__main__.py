"""Per-rank entry point for torchrun / torchx:  torchrun --nproc_per_node=2 -m c2al_rec.train --config X --out DIR"""

from __future__ import annotations

import argparse
import os
import sys

from c2al_rec.config import config_to_dict, load_config

from .launch import preflight, run_rank, wait_for_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m c2al_rec.train", description=__doc__)
    parser.add_argument("--config", default=None, help="TOML run config")
    parser.add_argument("--out", required=True, help="run directory")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(args.config, overrides)
    if int(os.environ.get("RANK", "0")) == 0:
        cfg = preflight(cfg)  # generates synthetic data when configured
    else:
        wait_for_dataset(cfg)
        cfg = preflight(cfg, generate=False)
    run_rank(config_to_dict(cfg), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
