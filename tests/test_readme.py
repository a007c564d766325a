"""The README holds: its commands parse (the cheap ones run), and its result tables are the recorded ones.

Tier 1 (config only) plus a few cheap subprocesses.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import readme_tables
from c2al_rec.cli.main import VERBS, build_verb_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
# commands that take seconds and touch nothing but stdout: run them for real
CHEAP = ("c2al-rec --help", "c2al-rec config ")


def _commands() -> list[str]:
    """Every shell command in the README's ```bash blocks (continuation lines joined)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


C2AL_COMMANDS = [c for c in _commands() if c.startswith("c2al-rec ")]


def test_the_readme_shows_the_main_verbs() -> None:
    shown = {shlex.split(c)[1] for c in C2AL_COMMANDS}
    assert {"train", "discover", "evaluate", "experiment", "export", "predict", "serve", "data"} <= shown


@pytest.mark.parametrize("command", C2AL_COMMANDS)
def test_every_c2al_rec_command_parses(command: str) -> None:
    from c2al_rec.config import load_config

    argv = shlex.split(command)[1:]
    if argv[0] == "--help":
        return
    verb = argv[0]
    assert verb in VERBS, f"README uses an unknown verb: {command}"
    if verb == "data":  # nested sub-commands: argparse itself checks them
        build_verb_parser(verb).parse_args(argv[1:])
        return
    args, extra = build_verb_parser(verb).parse_known_args(argv[1:])
    assert not extra or getattr(args, "_accepts_overrides", False), f"unknown flags {extra} in: {command}"
    if extra:
        load_config(None, extra)  # every --section.field=value names a real field with a valid value


@pytest.mark.parametrize("command", [c for c in C2AL_COMMANDS if c.startswith(CHEAP)])
def test_cheap_commands_run(command: str) -> None:
    bin_dir = Path(sys.executable).parent
    argv = [str(bin_dir / "c2al-rec"), *shlex.split(command)[1:]]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_result_tables_are_the_recorded_results() -> None:
    assert readme_tables.render(README) == README, "run: python -m benchmarks.readme_tables --write"
