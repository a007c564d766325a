"""`c2al-rec`: one command, one verb per stage of the C2AL workflow.

Each verb lives in the package that implements it, as a module with ``add_arguments(parser)``,
``run(args) -> int`` and a docstring whose first line is the verb's one-line help. A verb is
listed once its module exists, so ``--help`` never shows an unimplemented verb.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Optional, Sequence

# verb -> module implementing it (listed in workflow order)
VERBS: dict[str, str] = {
    "config": "c2al_rec.config_cli",
    "data": "c2al_rec.data.cli",
    "train": "c2al_rec.train.cli",
    "discover": "c2al_rec.cohorts.cli",
    "evaluate": "c2al_rec.analysis.evaluate_cli",
    "experiment": "c2al_rec.analysis.experiment_cli",
    "export": "c2al_rec.export.cli",
    "predict": "c2al_rec.serve.cli",
    "pipeline": "c2al_rec.pipeline",
}


def available_verbs() -> dict[str, str]:
    """Verbs whose implementing module exists in this installation."""
    return {verb: mod for verb, mod in VERBS.items() if importlib.util.find_spec(mod) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c2al-rec",
        description="C2AL (Cohort-Contrastive Auxiliary Learning) on TorchRec. `c2al-rec <verb> --help` for each verb.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    for verb, module_name in available_verbs().items():
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else verb
        p = sub.add_parser(verb, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Config overrides (--section.field=value) are collected by the verbs that take a config.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "_accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # User errors (bad config, bad data, bad paths) end in one clear line, not a traceback.
        print(f"c2al-rec {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
