"""Arguments shared by several verbs."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` plus ``--section.field=value`` overrides (every field listed in the epilog)."""
    from c2al_rec.config import config_help

    parser.add_argument("--config", default=None, help="TOML run config (launch/configs/*.toml)")
    parser.epilog = (parser.epilog or "") + "\nconfig overrides (after --config):\n" + config_help()
    parser.set_defaults(_accepts_overrides=True)
