"""Hostile and unlucky cases of issue 23 items 5 and 6: OS errors end in one line, echoed values are short.

Tiers: 1 (the error boundary, the value echo, config / schema messages; no training), 4 (the real CLI in a
subprocess, 1 and 2 ranks, a few training steps into a directory that cannot be written or fills up).

How the OS errors are produced, and why:
- Read-only ``--out`` and a 0555 parent (EACCES): the CLI runs as an unprivileged user. As root, where
  ``chmod 0555`` does not stop writes, the subprocess drops to uid/gid 65534 (``nobody``); where that user
  cannot read the checkout, the test skips with the reason, and ``test_injected_permission_error_*`` still
  checks the same boundary with an injected PermissionError inside a rank.
- A full disk mid-run: (a) real ENOSPC from a private 256 KiB tmpfs (``unshare --mount``; needs root with
  CAP_SYS_ADMIN, skipped with the reason elsewhere): every write fails as on a real disk, including
  train.log and TensorBoard; (b) everywhere, ``RLIMIT_FSIZE``: the kernel fails the same write(2) calls
  of the checkpoint writers in every rank (inherited by the spawned ranks) with EFBIG instead of ENOSPC.
  Both go through the real DCP writer threads, its CheckpointException, the elastic launch and the CLI,
  which a monkeypatched writer would skip; the rendering of the errno is the same code for both.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from c2al_rec.cli import config as config_verb
from c2al_rec.cli.main import main as cli_main
from c2al_rec.config import load_config
from c2al_rec.config.errors import ECHO_LIMIT, echo, error_line
from c2al_rec.data.schema import schema_from_dict
from tests.trained_runs import SMOKE, SPEC

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
FOUR_STEPS = [
    f"--cohorts.spec={SPEC}",
    "--train.max_steps=4",
    "--train.eval_every=0",
    "--checkpoint.every_steps=0",  # the one checkpoint is the final one, at step 4
    "--train.log_every=0",
    "--train.diagnostics_every=0",
]


def _one_error_line(err: str) -> str:
    """The only line of ``err``; it reports an error and no traceback came with it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err[-3000:]
    return lines[0]


# ------------------------------------------------------------------------------- item 6: short echoes
def test_echo_caps_strings_numbers_and_containers() -> None:
    big = echo("x" * 50_000_000)
    assert len(big) < ECHO_LIMIT + 60 and big.endswith("(50000000 characters)")
    assert echo("short") == "'short'" and echo(3) == "3" and echo([1, 2]) == "[1, 2]"
    assert echo(10**5000) == "<an integer of about 5000 digits>"  # repr() itself refuses it
    assert len(echo(list(range(10**6)))) < 100
    assert len(echo([["a" * 10_000] * 100] * 100)) <= ECHO_LIMIT + 20


def test_a_50mb_override_value_gives_an_error_line_under_1kb(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["config", "--train.max_steps=" + "7" * 10 + "x" * 50_000_000]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert len(line) < 1024, len(line)
    assert line.startswith("c2al-rec config: error: override --train.max_steps: train.max_steps: expected an integer")
    assert "(50000010 characters)" in line


def test_a_50mb_string_in_a_config_file_or_a_50mb_key_gives_a_short_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    toml = tmp_path / "big.toml"
    toml.write_text('[train]\nmax_steps = "' + "x" * 50_000_000 + '"\n')
    assert cli_main(["config", "--config", str(toml)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert len(line) < 1024 and f"{toml}: train.max_steps: expected an integer, got str 'xxx" in line
    assert cli_main(["config", "--train." + "k" * 1_000_000 + "=1"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert len(line) < 1024 and "unknown key 'train.kkk" in line


def test_an_integer_past_python_s_digit_limit_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["config", "--train.max_steps=" + "9" * 5000]) == 2
    assert "error: override --train.max_steps: Exceeds the limit (4300 digits)" in capsys.readouterr().err
    assert cli_main(["config", "--train.max_steps=-" + "9" * 4000]) == 2
    assert "train.max_steps must be >= 0, got <an integer of about 4000 digits>" in capsys.readouterr().err


def test_schema_json_values_and_names_are_echoed_short(tmp_path: Path) -> None:
    for sparse in (
        {"name": "f", "num_embeddings": "9" * 1_000_000},
        {"name": "f", "num_embeddings": 10, "pooling": "p" * 1_000_000},
        {"name": "n" * 1_000_000, "num_embeddings": -1},
    ):
        with pytest.raises(ValueError) as e:
            schema_from_dict({"label": "label", "sparse": [sparse]}, tmp_path)
        assert len(str(e.value)) < 1024 and "characters)" in str(e.value)


# ------------------------------------------------------------------------------- item 5: the error boundary
def _raise(exc: BaseException):  # type: ignore[no-untyped-def]
    def run(args: Any) -> int:
        raise exc

    return run


def _checkpoint_exception(inner: BaseException) -> BaseException:
    """What DCP raises when a rank's write fails: each rank's exception with its stack."""
    import traceback

    from torch.distributed.checkpoint.api import CheckpointException

    return CheckpointException("write", {1: (inner, traceback.extract_stack())})


@pytest.mark.parametrize(
    "exc, expected",
    [
        (PermissionError(errno.EACCES, "Permission denied", "/r/.lock"), "/r/.lock: Permission denied (EACCES)"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/run"), "/ro/run: Read-only file system (EROFS)"),
        (OSError(errno.ENOSPC, "No space left on device", "/r/x"), "/r/x: No space left on device (ENOSPC)"),
        (MemoryError("Unable to allocate 745. GiB"), "out of memory: Unable to allocate 745. GiB"),
        (pickle.UnpicklingError("invalid load key, 'x'."), "cannot unpickle: invalid load key, 'x'."),
        (ValueError("line one\nline two"), "line one | line two"),
    ],
)
def test_the_cli_boundary_reports_user_errors_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, exc: BaseException, expected: str
) -> None:
    monkeypatch.setattr(config_verb, "run", _raise(exc))
    assert cli_main(["config"]) == 2
    assert _one_error_line(capsys.readouterr().err) == f"c2al-rec config: error: {expected}"


def test_a_full_disk_inside_dcp_s_checkpoint_exception_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/r/checkpoints")
    full.add_note("writing checkpoint step_8")
    monkeypatch.setattr(config_verb, "run", _raise(_checkpoint_exception(full)))
    assert cli_main(["config"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == "c2al-rec config: error: /r/checkpoints: No space left on device (ENOSPC); writing checkpoint step_8"


@pytest.mark.parametrize("bug", [RuntimeError("a bug"), KeyError("k"), KeyboardInterrupt()])
def test_bugs_and_interrupts_keep_their_traceback(monkeypatch: pytest.MonkeyPatch, bug: BaseException) -> None:
    monkeypatch.setattr(config_verb, "run", _raise(bug))
    with pytest.raises(type(bug)):
        cli_main(["config"])
    assert error_line(_checkpoint_exception(RuntimeError("a bug in a rank"))) is None


def test_torchelastic_s_dump_of_a_rank_s_user_error_is_dropped_and_a_bug_s_kept() -> None:
    from c2al_rec.train.launch import _DropRankFailedDump

    def record(msg: str, exc_text: str = "") -> logging.LogRecord:
        exc = RuntimeError(exc_text) if exc_text else None
        info = (type(exc), exc, None) if exc else None
        return logging.LogRecord("torch", logging.ERROR, __file__, 0, msg, (), info)

    trace = "Traceback (most recent call last):\n  File x\nc2al_rec.train.launch.RankFailed: rank 1: /r: ..."
    quiet = _DropRankFailedDump()
    assert quiet.filter(record("failed (exitcode: 1)", "Traceback ...\nRuntimeError: a bug"))
    assert not quiet.filter(record("failed (exitcode: 1)", trace))
    assert not quiet.filter(record("Terminating process 13 via signal SIGTERM"))
    assert quiet.filter(record("failed (exitcode: -9)"))  # a killed rank: torchelastic's report stands


def test_train_log_on_a_full_disk_raises_naming_the_file(tmp_path: Path) -> None:
    from c2al_rec.train.tracking import RunLog

    class Full:
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None:
            pass

    log = RunLog(tmp_path)
    log.file.stream = Full()
    logging.getLogger("c2al_rec.data").warning("a library warning")  # logging calls elsewhere do not raise
    with pytest.raises(OSError) as e:
        log.line("step 10")
    assert error_line(e.value) == f"{tmp_path / 'train.log'}: No space left on device (ENOSPC)"
    log.file.stream = None
    log.close()


# ------------------------------------------------------------------------------- item 5: training (tier 4)
@pytest.fixture(scope="module")
def shared_root() -> Iterator[Path]:
    """A world-readable directory (not pytest's 0700 tmp) with the smoke dataset: an unprivileged user reads it."""
    from c2al_rec.data.sources import ensure_dataset

    root = Path(tempfile.mkdtemp(prefix="c2al-errors-"))
    try:
        root.chmod(0o755)
        ensure_dataset(load_config(SMOKE, [f"--data.path={root / 'data'}"]).data)
        for p in [root / "data", *(root / "data").rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (root / "home").mkdir(mode=0o777)
        (root / "home").chmod(0o777)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _train_argv(root: Path, out: Path | str, nproc: int) -> list[str]:
    return [
        sys.executable, "-m", "c2al_rec.cli", "train", "--config", str(SMOKE), "--out", str(out),
        f"--data.path={root / 'data'}", *FOUR_STEPS, "--nproc-per-node", str(nproc),
    ]  # fmt: skip


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ, HOME=str(root / "home"), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _unprivileged(root: Path) -> dict[str, Any]:
    """subprocess kwargs that make permission bits bind: nothing for a user, uid/gid 65534 for root."""
    if os.geteuid() != 0:
        return {}
    as_nobody = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import c2al_rec.cli.main"], cwd=root, env=_env(root), capture_output=True,
            text=True, timeout=120, **as_nobody,
        )  # fmt: skip
        why = probe.stderr.strip().splitlines()[-1:] if probe.returncode else None
    except OSError as e:  # e.g. the interpreter lives under a directory only root may enter
        why = [str(e)]
    if why is not None:
        pytest.skip(
            f"running as root, where chmod 0555 does not stop writes, and uid {NOBODY} cannot run this Python "
            f"({why}); the read-only file system and injected PermissionError tests cover the boundary"
        )
    return as_nobody


# --out is claimed by the launching process before any rank starts: one case per launch shape is enough
@pytest.mark.parametrize("case, nproc", [("read-only --out", 2), ("0555 parent", 1)])
def test_an_unwritable_out_is_one_line_naming_the_path(shared_root: Path, case: str, nproc: int) -> None:
    base = Path(tempfile.mkdtemp(dir=shared_root))
    if case == "read-only --out":
        out, named = base, base / ".lock"
    else:
        out, named = base / "run", base / "run"
    base.chmod(0o555)
    proc = subprocess.run(
        _train_argv(shared_root, out, nproc), cwd=shared_root, env=_env(shared_root), capture_output=True,
        text=True, timeout=300, **_unprivileged(shared_root),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert _one_error_line(proc.stderr) == f"c2al-rec train: error: {named}: Permission denied (EACCES)"
    assert sorted(p.name for p in base.iterdir()) == []


def test_injected_permission_error_in_a_rank_is_one_line_and_writes_no_metrics(
    shared_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Works as root too: a rank's first write into --out fails as it would in a read-only directory."""
    from c2al_rec.train import trainer as trainer_mod

    run = tmp_path / "run"

    def refused(run_dir: Path, *args: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(run_dir / "config.toml"))

    monkeypatch.setattr(trainer_mod, "write_run_files", refused)
    rc = cli_main(_train_argv(shared_root, run, 1)[3:])
    assert rc == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"c2al-rec train: error: {run / 'config.toml'}: Permission denied (EACCES)"
    )
    assert not (run / "metrics.json").exists()


def test_a_failure_after_metrics_json_removes_it(
    shared_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The TensorBoard hparams (written after metrics.json) hit a full disk: the run must not look finished."""
    from c2al_rec.train.tracking import RunTracker

    run = tmp_path / "run"

    def full(self: RunTracker, *args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "tensorboard" / "hparams"))

    monkeypatch.setattr(RunTracker, "finish", full)
    rc = cli_main(_train_argv(shared_root, run, 1)[3:])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"c2al-rec train: error: {run / 'tensorboard' / 'hparams'}: No space left on device (ENOSPC)"
    assert not (run / "metrics.json").exists()


# where torch's zip writer met the failed write, its own words (the errno lost) follow in parentheses
_STEP_LINE = r"c2al-rec train: error: (rank \d: )?{root}: {meaning}; writing checkpoint step_4( \(torch's writer: .*\))?"  # noqa: E501


def _assert_failed_without_claiming_success(files: list[str]) -> None:
    assert "metrics.json" not in files, files
    assert not [f for f in files if re.match(r"checkpoints/step_\d+(/|$)", f)], files  # only .tmp_step_4/
    assert "checkpoints/best" not in files, files


def test_a_write_limit_mid_run_is_one_line_from_every_rank(shared_root: Path, tmp_path: Path) -> None:
    """RLIMIT_FSIZE (EFBIG): the kernel fails the checkpoint shards' writes on both ranks, as a full disk would."""
    run = tmp_path / "run"
    limit = 100 * 1024  # the run's small files fit; each rank's shard of the step-4 checkpoint (~300 KiB) does not

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: write() fails

    proc = subprocess.run(
        _train_argv(shared_root, run, 2), cwd=shared_root, env=_env(shared_root), capture_output=True,
        text=True, timeout=600, preexec_fn=limit_file_size,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_error_line(proc.stderr)
    pattern = _STEP_LINE.format(root=re.escape(str(run / "checkpoints")), meaning=r"File too large \(EFBIG\)")
    assert re.fullmatch(pattern, line), line
    files = [str(p.relative_to(run)) for p in run.rglob("*")]
    _assert_failed_without_claiming_success(files)


@pytest.mark.parametrize("case, nproc", [("read-only --out", 1), ("its parent read-only", 2)])
def test_a_read_only_file_system_is_one_line_naming_the_path(
    shared_root: Path, tmp_path: Path, case: str, nproc: int
) -> None:
    """Real EROFS, which binds root too: --out on a private read-only tmpfs."""
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    if not _private_tmpfs_available(mount_point):
        pytest.skip("no private mount namespace with tmpfs here (needs root with CAP_SYS_ADMIN)")
    out, named = (mount_point, mount_point / ".lock") if case == "read-only --out" else (mount_point / "run",) * 2
    script = 'mount -t tmpfs -o ro c2al-test "$0" && "$@"'
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, str(mount_point), *_train_argv(shared_root, out, nproc)],
        cwd=shared_root, env=_env(shared_root), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert _one_error_line(proc.stderr) == f"c2al-rec train: error: {named}: Read-only file system (EROFS)"


def _private_tmpfs_available(mount_point: Path) -> bool:
    cmd = ["unshare", "--mount", "sh", "-c", f"mount -t tmpfs -o size=64k c2al-test '{mount_point}'"]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.parametrize("nproc", [1, 2])
def test_a_full_disk_mid_run_is_one_line_from_every_rank(shared_root: Path, tmp_path: Path, nproc: int) -> None:
    """Real ENOSPC: --out on a private 256 KiB tmpfs that the step-4 checkpoint (~0.7 MiB) overfills."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if not _private_tmpfs_available(mount_point):
        pytest.skip(
            "no private mount namespace with tmpfs here (needs root with CAP_SYS_ADMIN); "
            "the RLIMIT_FSIZE test covers the same path with EFBIG"
        )
    run = mount_point / "run"
    # the tmpfs vanishes with the namespace: list what the run left before leaving it
    script = 'mount -t tmpfs -o size=256k c2al-test "$0" && "$@"; rc=$?; echo "--- files"; cd "$0/run" && find . -mindepth 1 -printf "%P\\n"; exit $rc'  # noqa: E501
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, str(mount_point), *_train_argv(shared_root, run, nproc)],
        cwd=shared_root, env=_env(shared_root), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_error_line(proc.stderr)
    pattern = _STEP_LINE.format(root=re.escape(str(run / "checkpoints")), meaning=r"No space left on device \(ENOSPC\)")
    assert re.fullmatch(pattern, line), line
    files = proc.stdout.split("--- files\n", 1)[1].split()
    assert "config.toml" in files, files  # the run started; its first checkpoint filled the disk
    _assert_failed_without_claiming_success(files)
