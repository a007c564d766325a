"""Hostile or careless runs: each case ends in a one-line error and nothing is written or lost.

Tiers: 1 (config, run-directory rules, preflight; no training) and 4 (in-process 1-rank training
with the smoke config, a few steps; two real processes for the run-directory lock). The earlier
run's files are compared byte for byte (name, size, mtime) before and after each refused command.
Output directories: ``--overwrite`` removes only what the directory's manifest lists, and no
run file is ever written through a symbolic link.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from c2al_rec.cli.main import main as cli_main
from c2al_rec.config import ConfigError, config_to_dict, load_config
from c2al_rec.distributed import checkpoint as ckpt_io
from c2al_rec.io.owned_dir import MANIFEST_FILE, NotOwned, OwnedDir
from c2al_rec.train import launch as launch_mod
from c2al_rec.train.launch import launch, preflight, run_rank
from c2al_rec.train.rundir import LOCK_FILE, RUN_ENTRIES, RunDirLocked, RunLock, check_run_dir, claim_run_dir
from c2al_rec.train.trainer import FiniteLossCheck, NonFiniteLossError, Trainer
from tests.trained_runs import SMOKE, SPEC, TrainedRuns

REPO = Path(__file__).resolve().parents[1]
FAST = [
    f"--cohorts.spec={SPEC}",
    "--train.eval_every=0",
    "--checkpoint.every_steps=0",
    "--train.log_every=2",
    "--train.diagnostics_every=0",
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime (the lock file aside: a writer may touch it)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def _cfg(data: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(SMOKE, FAST + [f"--data.path={data}", *extra])


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = cli_main(list(argv))
    err = capsys.readouterr().err.strip()
    return rc, err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------- config (tier 1)
@pytest.mark.parametrize(
    "override, field",
    [
        ("--train.dense_lr=nan", "train.dense_lr"),
        ("--train.dense_lr=inf", "train.dense_lr"),
        ("--train.sparse_lr=-inf", "train.sparse_lr"),
        ("--cohorts.lambda_head=nan", "cohorts.lambda_head"),
        ("--train.grad_clip=-1", "train.grad_clip"),
        ("--train.dense_lr=0", "train.dense_lr"),
        ("--pipeline.lambdas=[0.1, nan]", "pipeline.lambdas[1]"),
        ("--data.synthetic.valid_fraction=0.95", "valid_fraction"),
    ],
)
def test_config_rejects_non_finite_and_out_of_range(
    capsys: pytest.CaptureFixture[str], override: str, field: str
) -> None:
    rc, err = _cli(capsys, "config", "--config", str(SMOKE), override)
    assert rc == 2 and field in _one_error_line(err)


def test_config_sections_built_in_code_are_checked_too() -> None:
    cfg = load_config(SMOKE)
    with pytest.raises(ConfigError, match="cohorts.lambda_tail must be a finite number"):
        replace(cfg.cohorts, lambda_tail=float("nan"))
    with pytest.raises(ConfigError, match=r"train.grad_clip must be in \[0, inf\)"):
        replace(cfg.train, grad_clip=-0.5)


# ------------------------------------------------------------------------------- the run directory lock
_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from c2al_rec.train.rundir import RunLock
    lock = RunLock(Path(sys.argv[1]))
    print("locked", flush=True)
    time.sleep(600)
    """
)


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_and_a_crashed_holder_frees_the_lock(
    smoke_runs: TrainedRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(smoke_runs.baseline, run)
    before = _snapshot(run)
    holder = _hold_lock(run)
    try:
        # a second writer (this process) continuing the same run: refused, naming directory, pid and host
        rc, err = _cli(
            capsys, "train", "--config", str(SMOKE), "--out", str(run), "--resume", "auto",
            f"--data.path={smoke_runs.data}", *FAST,
        )  # fmt: skip
        line = _one_error_line(err)
        assert rc == 2 and str(run) in line and f"pid {holder.pid}" in line and "in use" in line
        with pytest.raises(RunDirLocked):
            RunLock(run)
        assert _snapshot(run) == before
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the flock
        holder.wait()
    RunLock(run).release()  # a crashed holder leaves a lock file but no lock


def test_launch_holds_the_lock_for_the_whole_run(
    smoke_runs: TrainedRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While launch() trains (here: a stand-in for the ranks), another process cannot take the lock."""
    probe = "import sys, pathlib; from c2al_rec.train.rundir import RunLock; RunLock(pathlib.Path(sys.argv[1]))"
    seen: dict[str, subprocess.CompletedProcess] = {}

    def fake_run_rank(cfg_dict, run_dir):  # type: ignore[no-untyped-def]
        Path(run_dir, "config.toml").write_text("")  # the run has started writing
        seen["probe"] = subprocess.run([sys.executable, "-c", probe, run_dir], capture_output=True, text=True)
        return {"primary": {}}

    monkeypatch.setattr(launch_mod, "run_rank", fake_run_rank)
    run = tmp_path / "run"
    launch(_cfg(smoke_runs.data), run)
    assert seen["probe"].returncode != 0 and "in use by another training process" in seen["probe"].stderr
    RunLock(run).release()  # released at the end


# ------------------------------------------------------------------------------- reusing --out
def test_train_into_a_finished_run_is_refused(
    smoke_runs: TrainedRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = smoke_runs.c2al
    before = _snapshot(run)
    base = ["train", "--config", str(SMOKE), "--out", str(run), f"--data.path={smoke_runs.data}", *FAST]
    rc, err = _cli(capsys, *base, "--train.max_steps=4")
    line = _one_error_line(err)
    assert rc == 2 and "holds another run" in line and "--resume auto" in line and "--overwrite" in line
    # a checkpoint of another run into it: refused too
    other = ckpt_io.resolve_checkpoint(smoke_runs.baseline)
    rc, err = _cli(capsys, *base, "--resume", str(other))
    assert rc == 2 and "checkpoint of a different run" in _one_error_line(err)
    # contradictory flags
    rc, err = _cli(capsys, *base, "--resume", "auto", "--overwrite")
    assert rc == 2 and "give one of them" in _one_error_line(err)
    assert _snapshot(run) == before


def test_resume_from_an_older_checkpoint_of_the_run_is_refused_while_newer_ones_exist(
    smoke_runs: TrainedRuns, tmp_path: Path
) -> None:
    """The prune bug: new checkpoints pruned in favour of higher steps that belong to something else."""
    run = tmp_path / "run"
    shutil.copytree(smoke_runs.baseline, run)
    (step,) = [p.name for p in ckpt_io.list_checkpoints(run)]
    shutil.copytree(run / "checkpoints" / step, run / "checkpoints" / "step_999")
    before = _snapshot(run)
    cfg = _cfg(smoke_runs.data, "--cohorts.enabled=false", f"--checkpoint.resume={run / 'checkpoints' / step}")
    with pytest.raises(ValueError, match=r"holds checkpoints past step \d+ \(step_999\)"):
        launch(cfg, run)
    assert _snapshot(run) == before


def test_overwrite_removes_only_what_the_runs_manifest_lists(smoke_runs: TrainedRuns, tmp_path: Path) -> None:
    """Hostile: a foreign file in a run directory stops --overwrite (it used to be deleted with the run)."""
    run = tmp_path / "run"
    shutil.copytree(smoke_runs.c2al, run)
    (run / "notes.txt").write_text("old")
    before = _snapshot(run)
    with pytest.raises(NotOwned, match=r"holds notes\.txt, which no run created \(it is not listed in .*manifest"):
        launch(_cfg(smoke_runs.data, "--train.max_steps=3"), run, overwrite=True)
    assert _snapshot(run) == before
    (run / "notes.txt").unlink()
    (run / ".config.toml.k1ll3d").write_text("half")  # the temp file of an atomic write a kill interrupted
    launch(_cfg(smoke_runs.data, "--train.max_steps=3"), run, overwrite=True)
    assert [p.name for p in ckpt_io.list_checkpoints(run)] == ["step_3"]
    assert ckpt_io.best_checkpoint_name(run) == "step_3"
    assert json.loads((run / "metrics.json").read_text())["steps"] == 3
    assert not (run / ".config.toml.k1ll3d").exists()
    assert ckpt_io.resolve_checkpoint(run).name == "step_3"  # export / evaluate read the new run
    assert OwnedDir.read(run).entries == set(RUN_ENTRIES)  # type: ignore[union-attr]


def test_overwrite_refuses_a_directory_of_runs(
    smoke_runs: TrainedRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostile: `train --overwrite --out runs/` next to other runs, a cohorts.json and notes deleted them all."""
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(smoke_runs.baseline, runs / "baseline")
    shutil.copy(SPEC, runs / "cohorts.json")  # a run marker: it made the directory count as a run
    (runs / "notes.md").write_text("precious")
    before = _snapshot(runs)
    rc, err = _cli(capsys, "train", "--config", str(SMOKE), "--out", str(runs), "--overwrite", *FAST,
                   f"--data.path={smoke_runs.data}")  # fmt: skip
    line = _one_error_line(err)
    assert rc == 2 and f"{runs} is not a run directory" in line and MANIFEST_FILE in line and "baseline" in line
    assert _snapshot(runs) == before


def test_a_killed_run_can_be_overwritten(tmp_path: Path) -> None:
    """The manifest lists every run entry before training writes any, so a run killed half-way is still ours."""
    run = tmp_path / "run"
    lock = claim_run_dir(run, "never", overwrite=False)
    assert OwnedDir.read(run).entries == set(RUN_ENTRIES)  # type: ignore[union-attr]
    (run / "config.toml").write_text("")
    (run / "checkpoints" / ".tmp_step_8").mkdir(parents=True)
    (run / ".provenance.json.x7b2").write_text("{")
    lock.release()  # the process dies here: the kernel drops the lock
    with pytest.raises(ValueError, match="holds another run"):
        check_run_dir(run, "never", overwrite=False)
    claim_run_dir(run, "never", overwrite=True).release()
    assert sorted(p.name for p in run.iterdir()) == [MANIFEST_FILE, LOCK_FILE]


def test_workflow_directories_list_their_outputs_and_train_stays_out(smoke_runs: TrainedRuns, tmp_path: Path) -> None:
    """pipeline and experiment write their manifests before their stages write; a run into one is refused."""
    from c2al_rec.workflows.experiment import Experiment
    from c2al_rec.workflows.pipeline import Pipeline

    cfg = _cfg(smoke_runs.data, '--discover.axes=["no_such_axis:categorical"]', "--pipeline.nproc_per_node=1")
    workflows = (
        ("pipeline", lambda out: Pipeline(cfg, out).run(), {"lambda_0.1", "selection.json"}),
        ("experiment", lambda out: Experiment(cfg, out, seeds=2).run(), {"c2al", "scores"}),
    )
    for owner, run, own in workflows:
        out = tmp_path / owner
        with pytest.raises(ValueError, match="'no_such_axis' is not an axis"):
            run(out)
        owned = OwnedDir.read(out)
        assert owned is not None and owned.owner == owner
        assert {"baseline", "cohorts.json", f"{owner}.toml", "report.md", *own} <= owned.entries
        with pytest.raises(NotOwned, match=rf"holds the output of `c2al-rec {owner}`"):
            launch(_cfg(smoke_runs.data), out, overwrite=True)
        assert OwnedDir.read(out).entries == owned.entries  # type: ignore[union-attr]


# ------------------------------------------------------------------------------- symbolic links
def test_a_lock_file_planted_as_a_link_is_never_followed(
    smoke_runs: TrainedRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostile: a `.lock` symlink to a file outside the run had that file truncated and rewritten."""
    run = tmp_path / "run"
    shutil.copytree(smoke_runs.baseline, run)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / LOCK_FILE).unlink()
    (run / LOCK_FILE).symlink_to(victim)
    with pytest.raises(NotOwned, match=r"\.lock is a symbolic link, not a regular file"):
        RunLock(run)
    rc, err = _cli(capsys, "train", "--config", str(SMOKE), "--out", str(run), "--resume", "auto",
                   f"--data.path={smoke_runs.data}", *FAST)  # fmt: skip
    assert rc == 2 and f"{run / LOCK_FILE} is a symbolic link, not a regular file" in _one_error_line(err)
    (run / LOCK_FILE).unlink()
    os.link(victim, run / LOCK_FILE)  # a hard link writes through just the same
    with pytest.raises(NotOwned, match=r"\.lock is a hard link to another file"):
        RunLock(run)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("entry", ["train.log", "metrics.json", "checkpoints"])
def test_a_run_entry_that_is_a_link_is_refused(
    smoke_runs: TrainedRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str
) -> None:
    """Hostile: a resumed run appended to (or pruned checkpoints in) whatever its own entries linked to."""
    run = tmp_path / "run"
    shutil.copytree(smoke_runs.baseline, run)
    target = tmp_path / "outside"
    shutil.move(run / entry, target)
    (run / entry).symlink_to(target)
    before = _snapshot(tmp_path)
    rc, err = _cli(capsys, "train", "--config", str(SMOKE), "--out", str(run), "--resume", "auto",
                   "--train.max_steps=24", f"--data.path={smoke_runs.data}", *FAST)  # fmt: skip
    assert rc == 2 and f"{run / entry} is a symbolic link, not a" in _one_error_line(err)
    assert _snapshot(tmp_path) == before


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path: Path, smoke_runs: TrainedRuns) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="is not a run directory"):
        launch(_cfg(smoke_runs.data), home, overwrite=True)
    assert (home / "thesis.tex").read_text() == "precious"


# ------------------------------------------------------------------------------- non-finite training
def test_diverging_training_stops_naming_the_step_and_writes_no_checkpoint(
    smoke_runs: TrainedRuns, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    cfg = _cfg(smoke_runs.data, "--train.max_steps=12", "--train.dense_optimizer=sgd", "--train.dense_lr=1e30")
    with pytest.raises(NonFiniteLossError, match=r"loss is nan or inf at step \d+") as e:
        launch(cfg, run)
    assert "\n" not in str(e.value)
    assert not ckpt_io.list_checkpoints(run) and not (run / "checkpoints" / "best").exists()
    assert not (run / "metrics.json").exists()


def test_finite_loss_check_names_first_step_and_loss() -> None:
    check = FiniteLossCheck(["primary", "head", "tail"], every=4, device=torch.device("cpu"))
    ok = {f"loss_{k}": torch.tensor(0.5) for k in ("primary", "head", "tail")}
    for step in (1, 2):
        check.record(step, ok)
    check.check()  # finite: nothing
    check.record(3, ok)
    check.record(4, {**ok, "loss_head": torch.tensor(float("nan"))})
    check.record(5, {**ok, "loss_primary": torch.tensor(float("inf"))})
    check.record(6, ok)
    assert check.full()
    with pytest.raises(NonFiniteLossError, match="the head loss is nan or inf at step 4"):
        check.check()


def test_nan_validation_ne_is_never_best(tmp_path: Path) -> None:
    trainer = Trainer.__new__(Trainer)
    trainer.run_dir, trainer.step, trainer.best = tmp_path, 5, None
    trainer.loss_check = FiniteLossCheck(["primary"], 2, torch.device("cpu"))
    trainer.last_eval = {"step": 5, "primary": {"ne": float("nan")}}
    trainer._check_dense_parameters = lambda: None  # type: ignore[method-assign]
    trainer.save_checkpoint = lambda: tmp_path / "checkpoints" / "step_5"  # type: ignore[method-assign]
    trainer._checkpoint_and_mark_best()
    assert trainer.best is None and not (tmp_path / "checkpoints" / "best").exists()
    with pytest.raises(ValueError, match="primary NE is nan"):
        trainer.cfg, trainer.ctx = load_config(SMOKE), type("Ctx", (), {"is_main": True})()
        trainer._check_final_validation()


# ------------------------------------------------------------------------------- preflight
def _copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_schema(data: Path, **sparse0: object) -> None:
    schema = json.loads((data / "schema.json").read_text())
    schema["sparse"][0].update(sparse0)
    (data / "schema.json").write_text(json.dumps(schema))


def test_small_valid_split_fails_before_the_first_step(smoke_runs: TrainedRuns, tmp_path: Path) -> None:
    data = _copy_data(smoke_runs.data, tmp_path / "data")
    files = sorted((data / "valid").glob("*.parquet"))
    pq.write_table(pq.read_table(files[0]).slice(0, 10), files[0])
    for f in files[1:]:
        f.unlink()
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"the valid split 'valid' has 10 rows, fewer than one global batch"):
        launch(_cfg(data), run)
    assert not run.exists()


def test_missing_axis_column_in_valid_fails_before_the_first_step(smoke_runs: TrainedRuns, tmp_path: Path) -> None:
    data = _copy_data(smoke_runs.data, tmp_path / "data")
    first = sorted((data / "valid").glob("*.parquet"))[0]
    pq.write_table(pq.read_table(first).drop_columns(["user_value"]), first)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['user_value'\]"):
        preflight(_cfg(data), generate=False)


@pytest.mark.parametrize("bad", ["1000", 1000.0, True, -3])
def test_num_embeddings_must_be_a_positive_int(smoke_runs: TrainedRuns, tmp_path: Path, bad: object) -> None:
    data = _copy_data(smoke_runs.data, tmp_path / "data")
    _edit_schema(data, num_embeddings=bad)
    name = json.loads((data / "schema.json").read_text())["sparse"][0]["name"]
    with pytest.raises(ValueError, match=rf"schema.json: sparse feature '{name}': num_embeddings must be > 0"):
        preflight(_cfg(data), generate=False)


def test_tables_larger_than_the_machine_fail_before_any_allocation(
    smoke_runs: TrainedRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _copy_data(smoke_runs.data, tmp_path / "data")
    _edit_schema(data, num_embeddings=10**12)
    run = tmp_path / "run"
    rc, err = _cli(capsys, "train", "--config", str(SMOKE), "--out", str(run), f"--data.path={data}", *FAST)
    line = _one_error_line(err)
    assert rc == 2 and "GiB" in line and "this machine has" in line
    assert not run.exists()


def test_synthetic_tables_larger_than_the_machine_fail_before_generation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hostile: max_table_size 1e11 died in a numpy traceback (5e8: killed): generation ran before any check."""
    out = tmp_path / "synth"
    rc, err = _cli(capsys, "data", "synthetic", "--rows", "1000", "--out", str(out), "--max-table-size", str(10**11))
    line = _one_error_line(err)
    assert rc == 2 and "data.synthetic.max_table_size = 100000000000" in line and "GiB available" in line
    assert not out.exists() and not any(tmp_path.iterdir())
    # 5e8 on a host with 16 GiB available: refused by the estimate, whatever this machine has
    from c2al_rec.config import SyntheticConfig
    from c2al_rec.data import synthetic
    from c2al_rec.io import host

    monkeypatch.setattr(host, "host_memory_bytes", lambda: (16 * 2**30, 32 * 2**30))
    assert synthetic.generation_memory_bytes(SyntheticConfig(rows=1, max_table_size=5 * 10**8)) > 40 * 2**30
    run = tmp_path / "run"
    rc, err = _cli(capsys, "train", "--config", str(SMOKE), "--out", str(run), f"--data.path={tmp_path / 'gen'}",
                   "--data.synthetic.max_table_size=500000000", *FAST)  # fmt: skip
    line = _one_error_line(err)
    assert rc == 2 and "max_table_size = 500000000 needs about" in line and "16.0 GiB available" in line
    assert not run.exists() and not (tmp_path / "gen").exists()


def test_planner_topology_comes_from_the_host(smoke_runs: TrainedRuns, tmp_path: Path) -> None:
    """Past the preflight (torchrun on another host shape), the planner itself refuses in one line."""
    data = _copy_data(smoke_runs.data, tmp_path / "data")
    _edit_schema(data, num_embeddings=10**12)
    cfg = replace(_cfg(data), data=replace(_cfg(data).data, path=str(data)))
    with pytest.raises(ValueError, match=r"no sharding plan fits: the embedding tables need .* GiB") as e:
        run_rank(config_to_dict(cfg), str(tmp_path / "run"))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


# ------------------------------------------------------------------------------- workflows
def test_pipeline_with_an_unknown_discover_axis_fails_before_the_baseline_trains(
    smoke_runs: TrainedRuns, tmp_path: Path
) -> None:
    from c2al_rec.workflows.pipeline import Pipeline

    cfg = _cfg(smoke_runs.data, '--discover.axes=["no_such_axis:categorical"]', "--pipeline.nproc_per_node=1")
    out = tmp_path / "pipe"
    with pytest.raises(ValueError, match="'no_such_axis' is not an axis"):
        Pipeline(cfg, out).run()
    assert not (out / "baseline").exists()


@pytest.fixture(autouse=True)
def _no_restart_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(key, raising=False)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
