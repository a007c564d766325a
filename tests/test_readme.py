"""The README holds: its guide runs as printed, in order; its result tables and demo block are the recorded
results; the demo's numeric fingerprint still matches its record.

Tier: integration (subprocesses through the CLI, torchrun, torchx and HTTP), plus config-only checks.
``test_the_guide_runs_in_order`` runs every command of the README's code blocks in a scratch copy of
the repository, in order, the way a reader pastes them: each must exit 0. A command that cannot run
here or is not cheap (more than a minute) carries the visible mark ``# not run by the tests: <why>``;
``serve`` is started on a free port, asked once and stopped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks import demo_fingerprint, readme_tables
from c2al_rec.cli.main import VERBS, build_verb_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
NOT_RUN = "# not run by the tests:"
COMMAND_TIMEOUT_S = 300  # far above the minute a guide command may take; the bound is for hangs, not speed
# what a fresh clone has and a reader's commands may read; runs/, .cache/, mlruns/ start empty
COPIED = ("launch", "components", "benchmarks", "c2al_rec", "docs", "docker", "scripts", ".torchxconfig", "setup.py")


@dataclass
class Step:
    """One command of the guide: its language, text and, when the README marks it, why it is not run."""

    lang: str
    text: str
    not_run: str | None = None


def guide_steps(readme: str = README) -> list[Step]:
    """Every command of the README's ```bash and ```python blocks, in order (continuation lines joined;
    a python block is one step)."""
    steps = []
    for lang, block in re.findall(r"```(bash|python)\n(.*?)```", readme, re.S):
        if lang == "python":
            steps.append(Step("python", block))
            continue
        for line in block.replace("\\\n", " ").splitlines():
            why = line.split(NOT_RUN, 1)[1].strip() if NOT_RUN in line else None
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                steps.append(Step("bash", " ".join(line.split()), why))
    return steps


STEPS = guide_steps()
C2AL_COMMANDS = [s.text for s in STEPS if s.text.startswith("c2al-rec ")]


def test_the_readme_shows_the_main_verbs() -> None:
    shown = {shlex.split(c)[1] for c in C2AL_COMMANDS}
    assert {"train", "discover", "evaluate", "experiment", "export", "predict", "serve", "data"} <= shown


def test_every_mark_says_why() -> None:
    for step in STEPS:
        assert step.not_run is None or len(step.not_run) > 5, f"say why it is not run: {step.text}"
    assert any(s.not_run for s in STEPS) and sum(s.not_run is None for s in STEPS) >= 15


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


def _scratch_clone(root: Path) -> Path:
    """A directory that looks like a fresh clone with its venv: the tracked parts, linked."""
    clone = root / "clone"
    clone.mkdir()
    for name in (*COPIED, "README.md"):
        (clone / name).symlink_to(REPO / name)
    (clone / ".venv").symlink_to(Path(sys.executable).parents[1])
    return clone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ask_server(cmd: str, clone: Path, env: dict[str, str]) -> None:
    """Start ``serve`` on a free port, score one test row through /v1/score, stop it."""
    port = _free_port()
    cmd = re.sub(r"--port \d+", f"--port {port}", cmd)
    proc = subprocess.Popen(["bash", "-c", cmd], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        meta = json.loads((clone / "runs/export/metadata.json").read_text())
        import pyarrow.parquet as pq

        names = meta["dense"] + [f["name"] for f in meta["sparse"]]
        row = pq.read_table(clone / ".cache/datasets/smoke/test", columns=names).slice(0, 1).to_pylist()
        deadline = time.monotonic() + 120
        while True:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/score",
                    data=json.dumps({"rows": row}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=30) as r:
                    answer = json.loads(r.read())
                break
            except OSError:
                assert proc.poll() is None, f"serve exited: {proc.stdout.read().decode()[-2000:]}"
                assert time.monotonic() < deadline, "serve did not answer within 120 s"
                time.sleep(0.5)
        assert len(answer["prob"]) == 1 and 0 < answer["prob"][0] < 1, answer
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_guide_runs_in_order(tmp_path: Path) -> None:
    clone = _scratch_clone(tmp_path)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(REPO)}
    results = {p.name: p.stat().st_mtime_ns for p in readme_tables.RESULTS.iterdir()}
    took = []
    for step in STEPS:
        if step.not_run:
            continue
        t0 = time.monotonic()
        if step.text.startswith("c2al-rec serve"):
            _ask_server(step.text, clone, env)
        else:
            argv = ["bash", "-c", step.text] if step.lang == "bash" else [sys.executable, "-c", step.text]
            proc = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
            output = f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            assert proc.returncode == 0, f"README command failed: {step.text}\n{output}"
        took.append((round(time.monotonic() - t0, 1), step.text[:70]))
    print("\n".join(f"{s:7.1f} s  {t}" for s, t in took))
    now = {p.name: p.stat().st_mtime_ns for p in readme_tables.RESULTS.iterdir()}
    assert now == results, "a README command wrote into benchmarks/results/ (only --record may)"


def test_result_tables_are_the_recorded_results() -> None:
    assert readme_tables.render(README) == README, "run: python -m benchmarks.readme_tables --write"


def test_demo_plot_is_drawn_from_the_record(tmp_path: Path) -> None:
    png = readme_tables.write_demo_plot(tmp_path / "demo_ne_diff.png")
    assert png is not None and png.read_bytes() == readme_tables.DEMO_PNG.read_bytes(), (
        "docs/demo_ne_diff.png is not the record's plot: run python -m benchmarks.readme_tables --write"
    )


def test_demo_record_layout() -> None:
    rec = json.loads(demo_fingerprint.RECORD.read_text())
    assert {"commit", "wall_s", "groups", "fingerprint", "command"} <= set(rec)
    for g in ("overall", "head", "tail"):
        assert {"ne", "ne_diff", "ci95"} <= set(rec["groups"][g]) or rec["groups"][g].get("reason")
    assert not any(str(REPO) in line for line in demo_fingerprint.RECORD.read_text().splitlines())


def test_demo_fingerprint_matches_the_record() -> None:
    """The mini pipeline (the demo's stages on a few thousand rows, 1 process, 1 thread) computes what
    the record says, to about 5 significant digits: a change to what the demo computes re-records."""
    recorded = json.loads(demo_fingerprint.RECORD.read_text())["fingerprint"]
    diffs = demo_fingerprint.differences(recorded, demo_fingerprint.compute())
    assert not diffs, (
        "the demo computes different numbers than benchmarks/results/demo.json records "
        f"(re-record: {demo_fingerprint.RERECORD}):\n" + "\n".join(diffs[:20])
    )


def test_recorded_results_carry_no_machine_paths() -> None:
    """Recorded results name files relative to the repository, never by the recording machine's path."""
    machine_path = re.compile(r"""["'](/(?:work|home|root|tmp|Users|mnt|data)/[^"']*)["']""")
    found = {
        p.name: machine_path.findall(p.read_text())
        for p in readme_tables.RESULTS.iterdir()
        if p.suffix in (".json", ".md") and machine_path.search(p.read_text())
    }
    assert not found, found


def test_relative_paths_rewrites_only_paths_under_the_root(tmp_path: Path) -> None:
    from c2al_rec.io import relative_paths

    obj = {"a": str(tmp_path / "x" / "y.json"), "b": ["/elsewhere/z", str(tmp_path)], "c": 3, "d": "text"}
    assert relative_paths(obj, tmp_path) == {"a": "x/y.json", "b": ["/elsewhere/z", str(tmp_path)], "c": 3, "d": "text"}
