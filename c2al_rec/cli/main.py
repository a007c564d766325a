"""`c2al-rec`: one command, one verb per stage of the C2AL workflow.

Each verb is a module of this package with ``add_arguments(parser)``, ``run(args) -> int`` and a
docstring whose first line is the verb's one-line help (the table below repeats it so that
listing the verbs imports nothing; a test keeps the two equal).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from c2al_rec.config.errors import error_line

# verb -> one-line help (the first docstring line of c2al_rec.cli.<verb>), in workflow order
VERBS: dict[str, str] = {
    "config": "Resolve and validate a run config: print it as TOML (file + overrides), or list every field.",
    "data": "Create and check datasets: synthetic planted-cohort data, public datasets; validate any dataset.",
    "train": "Train the baseline or the C2AL model with DMP (1 process here, or N local ranks, or under torchrun).",
    "discover": "Discover contrasting cohorts: score a baseline, rank cohort pairs per axis, write the spec.",
    "evaluate": "Evaluate a model per cohort (NE, calibration, AUC, Bayes NE) and against a baseline (NE_diff).",
    "experiment": "Multi-seed experiment: baseline vs C2AL (same seeds and data order), controls, lambda sweep.",
    "export": "Export a checkpoint to a primary-only TorchScript serving model (aux heads stripped), parity-gated.",
    "predict": "Score Parquet with an exported model: probabilities in input row order, label/row_id/axes passed.",
    "serve": "Serve an exported model over HTTP: JSON rows in, probabilities out, with dynamic micro-batching.",
    "pipeline": "Run the whole C2AL workflow: data, baseline, discovery, C2AL, evaluation, export, predict.",
}


def verb_module(verb: str) -> str:
    return f"c2al_rec.cli.{verb}"


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c2al-rec",
        description="C2AL (Cohort-Contrastive Auxiliary Learning) on TorchRec. `c2al-rec <verb> --help` for each verb.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    for verb, summary in VERBS.items():
        sub.add_parser(verb, help=summary, add_help=False)
    return parser


def build_verb_parser(verb: str) -> argparse.ArgumentParser:
    """The full parser of one verb (imports that verb's module only)."""
    module = importlib.import_module(verb_module(verb))
    doc = (module.__doc__ or "").strip()
    parser = argparse.ArgumentParser(
        prog=f"c2al-rec {verb}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run, verb=verb)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in VERBS:
        _top_parser().parse_args(argv)  # prints help / the usage error and exits
        return 2
    verb, rest = argv[0], argv[1:]
    from c2al_rec.train.quiet import quiet_known_noise  # warnings and torch log records only; imports no torch

    quiet_known_noise()
    parser = build_verb_parser(verb)
    # Config overrides (--section.field=value) are collected by the verbs that take a config.
    args, extra = parser.parse_known_args(rest)
    if extra and not getattr(args, "_accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args._run(args) or 0)
    except BaseException as e:  # DCP's CheckpointException, which wraps a full disk, is a BaseException
        # User errors (bad config or data, an OS error such as a read-only --out or a full disk, out of
        # memory, a refused pickle) end in one line; bugs, KeyboardInterrupt and SystemExit pass through.
        line = error_line(e)
        if line is None:
            raise
        print(f"c2al-rec {verb}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
