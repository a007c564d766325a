"""Resolve and validate a run config: print it as TOML (file + overrides), or list every field.

c2al-rec config --config launch/configs/smoke.toml --train.max_steps=10
c2al-rec config --fields        # every --section.field with type, default and doc
"""

from __future__ import annotations

import argparse

from c2al_rec.config import config_help, dump_toml, load_config

from .options import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--fields", action="store_true", help="list every config field and exit")


def run(args: argparse.Namespace) -> int:
    if args.fields:
        print(config_help())
        return 0
    print(dump_toml(load_config(args.config, args.overrides)), end="")
    return 0
