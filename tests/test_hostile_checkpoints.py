"""Tier 4: checkpoints from elsewhere cannot run code, and damaged ones are never silently used.

A pickle payload planted in a real checkpoint's DCP ``.metadata`` (with the manifest recomputed,
so that only the allow-list unpickler stands between the payload and the process) is refused,
with one error line and no side effect, by every path that loads a checkpoint: ``export``,
``evaluate``, ``discover``, ``train --resume auto`` and ``train --init-from``. A damaged newest
checkpoint makes resume and export fall back to the previous one (logged); named explicitly it
is an error; ``checkpoints/best`` cannot point outside the run. A symbolic link in a step (its
manifest, or the step itself) makes only that step incomplete. Table sizes a checkpoint claims
are checked against its own tensor metadata and shard bytes, and the metadata pickle against a
construction budget, before anything large is allocated. Pruning hash-verifies the newest step
before deleting older ones.
"""

from __future__ import annotations

import builtins
import importlib
import json
import logging
import os
import pickle
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from torch.distributed.checkpoint import FileSystemReader

from c2al_rec.cli.main import main
from c2al_rec.config import load_config
from c2al_rec.distributed import checkpoint as ckpt_io
from c2al_rec.io import BASIC_GLOBALS, UnpicklingRefused, restricted_load
from c2al_rec.train.launch import launch
from tests.trained_runs import SMOKE, SPEC


class _Call:
    """Unpickling this calls ``fn(*args)``: the classic pickle payload."""

    def __init__(self, fn: Callable, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--config",
        str(SMOKE),
        "--out",
        str(out),
        *extra,
        f"--data.path={data}",
        f"--cohorts.spec={SPEC}",
        "--cohorts.enabled=false",
        "--train.max_steps=24",
        "--train.eval_every=0",
        "--checkpoint.every_steps=0",
        "--train.log_every=0",
    ]


def _one_error_line(err: str, verb: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("c2al-rec ")]
    assert len(lines) == 1 and lines[0].startswith(f"c2al-rec {verb}: error: "), err
    return lines[0]


# ------------------------------------------------------------------------------- planted payload
@pytest.fixture(scope="module")
def planted(smoke_runs, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A copy of the smoke baseline whose checkpoint metadata runs ``touch <marker>`` when unpickled."""
    root = tmp_path_factory.mktemp("planted")
    run = root / "run"
    shutil.copytree(smoke_runs.baseline, run)
    step = ckpt_io.resolve_checkpoint(run)
    marker = root / "PWNED"
    md = FileSystemReader(str(step)).read_metadata()  # our own checkpoint: a plain read is safe here
    md.storage_meta.modules = [_Call(os.system, f"touch {marker}")]  # the load would go on as normal
    (step / ".metadata").write_bytes(pickle.dumps(md))
    ckpt_io.write_manifest(step)  # the manifest vouches for the payload: only the unpickler is left
    ckpt_io.verify_checkpoint(step)
    FileSystemReader(str(step)).read_metadata()  # DCP's own reader runs the payload...
    assert marker.exists(), "the planted payload does not run: this test would prove nothing"
    marker.unlink()
    return run, step, marker


LOADERS: dict[str, Callable[[Path, Path, Path, Path], list[str]]] = {
    "export": lambda run, step, data, tmp: ["export", "--checkpoint", str(step), "--out", str(tmp / "exp")],
    "export-run-dir": lambda run, step, data, tmp: ["export", "--checkpoint", str(run), "--out", str(tmp / "exp")],
    "evaluate": lambda run, step, data, tmp: [
        "evaluate",
        "--checkpoint",
        str(step),
        "--data",
        str(data),
        "--cohorts",
        str(SPEC),
        "--out",
        str(tmp / "eval"),
    ],
    "discover": lambda run, step, data, tmp: [
        "discover",
        "--checkpoint",
        str(run),
        "--data",
        str(data),
        "--axes",
        "user_value:quantiles=0.05,0.95",
        "--out",
        str(tmp / "c.json"),
    ],
    "train-resume": lambda run, step, data, tmp: _train_args(data, run, "--resume", "auto"),
    "train-init-from": lambda run, step, data, tmp: _train_args(data, tmp / "new", "--init-from", str(step)),
}


@pytest.mark.parametrize("path", list(LOADERS))
def test_planted_metadata_payload_is_refused(path: str, planted, smoke_runs, tmp_path: Path, capsys) -> None:
    run, step, marker = planted
    rc = main(LOADERS[path](run, step, smoke_runs.data, tmp_path))
    err = capsys.readouterr().err
    assert rc == 2
    line = _one_error_line(err, LOADERS[path](run, step, smoke_runs.data, tmp_path)[0])
    assert "refused to unpickle global posix.system" in line and str(step / ".metadata") in line
    assert not marker.exists()
    assert not (tmp_path / "exp").exists() and not (tmp_path / "c.json").exists()
    assert not (tmp_path / "new").exists()  # a failed --init-from leaves no run files: a plain re-run works


# ------------------------------------------------------------------------------- the unpickler itself
def test_unpickler_reads_real_metadata_like_pickle(smoke_runs) -> None:
    meta = ckpt_io.resolve_checkpoint(smoke_runs.c2al) / ".metadata"
    safe = ckpt_io.read_dcp_metadata(meta)
    plain = pickle.loads(meta.read_bytes())  # our own fresh checkpoint
    assert safe.state_dict_metadata == plain.state_dict_metadata and safe.storage_data == plain.storage_data
    assert safe.planner_data == plain.planner_data and len(safe.state_dict_metadata) > 10


@pytest.mark.parametrize(
    "payload, refused",
    [
        (_Call(eval, "1 + 1"), "builtins.eval"),
        (_Call(exec, "import os"), "builtins.exec"),
        (_Call(os.system, "true"), "posix.system"),
        (_Call(getattr, (), "__class__"), "builtins.getattr"),
        (_Call(__import__, "os"), "builtins.__import__"),
        (_Call(open, "/etc/hostname"), "io.open"),
        (_Call(importlib.import_module, "os"), "importlib.import_module"),
    ],
)
def test_unpickler_refuses_functions(payload, refused: str, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    for obj in (payload, {"x": [payload]}, _Call(os.system, f"touch {marker}")):
        with pytest.raises(UnpicklingRefused, match=r"some/step_1/\.metadata: refused to unpickle global"):
            restricted_load(pickle.dumps(obj), ckpt_io.DCP_METADATA_GLOBALS, "some/step_1/.metadata")
    with pytest.raises(ValueError, match=refused.replace(".", r"\.")):
        restricted_load(pickle.dumps(payload), ckpt_io.DCP_METADATA_GLOBALS, "x")
    assert not marker.exists()


def test_allow_list_holds_no_builtin_function() -> None:
    for module, name in ckpt_io.DCP_METADATA_GLOBALS | BASIC_GLOBALS:
        obj = getattr(importlib.import_module(module), name)
        if module == "builtins":
            assert isinstance(obj, type), name
    assert ("builtins", "getattr") not in ckpt_io.DCP_METADATA_GLOBALS and getattr is builtins.getattr


def test_unpickler_plain_data_and_damage(tmp_path: Path) -> None:
    data = {"a": [1, 2.5, "s", b"b", None, True], "t": (1, 2), "s": {3}}
    for protocol in range(3, pickle.HIGHEST_PROTOCOL + 1):  # 0-2 pickle bytes through _codecs.encode: refused
        assert restricted_load(pickle.dumps(data, protocol=protocol), BASIC_GLOBALS, "x") == data
    with pytest.raises(ValueError, match="f.pkl: not a readable pickle"):
        restricted_load(pickle.dumps(data)[:-5], BASIC_GLOBALS, "f.pkl")


# ------------------------------------------------------------------------------- damaged checkpoints
@pytest.fixture(scope="module")
def two_checkpoints(smoke_runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A baseline run holding step_8 and step_16 (16 steps, a checkpoint every 8)."""
    run = tmp_path_factory.mktemp("two_ckpts") / "run"
    overrides = [
        f"--data.path={smoke_runs.data}",
        f"--cohorts.spec={SPEC}",
        "--cohorts.enabled=false",
        "--train.max_steps=16",
        "--train.eval_every=8",
        "--checkpoint.every_steps=8",
        "--train.log_every=0",
    ]
    launch(load_config(SMOKE, overrides), run, nproc_per_node=1)
    assert [p.name for p in ckpt_io.list_checkpoints(run)] == ["step_8", "step_16"]
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_truncated_distcp_export_falls_back_and_named_step_is_an_error(
    two_checkpoints, tmp_path: Path, caplog, capsys
) -> None:
    run = _copy(two_checkpoints, tmp_path)
    shard = next((run / "checkpoints" / "step_16").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="c2al_rec.distributed.checkpoint"):
        assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "exp")]) == 0
    assert f"skipping checkpoint {shard.parent}: {shard} has" in caplog.text
    meta = json.loads((tmp_path / "exp" / "metadata.json").read_text())
    assert Path(meta["source_checkpoint"]).name == "step_8" and meta["source_step"] == 8
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(shard.parent), "--out", str(tmp_path / "exp2")]) == 2
    assert str(shard) in _one_error_line(capsys.readouterr().err, "export")
    assert not (tmp_path / "exp2").exists()


def test_deleted_distcp_resume_falls_back_to_previous(two_checkpoints, smoke_runs, tmp_path: Path, caplog, capsys):
    run = _copy(two_checkpoints, tmp_path)
    shard = next((run / "checkpoints" / "step_16").glob("*.distcp"))
    shard.unlink()
    with caplog.at_level(logging.WARNING, logger="c2al_rec.distributed.checkpoint"):
        assert main(_train_args(smoke_runs.data, run, "--resume", "auto")) == 0
    assert f"skipping checkpoint {shard.parent}: {shard} is missing" in caplog.text
    assert f"resumed from {run / 'checkpoints' / 'step_8'}" in capsys.readouterr().out
    assert ckpt_io.resolve_checkpoint(run).name == "step_24"
    assert ckpt_io.read_train_state(ckpt_io.resolve_checkpoint(run))["step"] == 24


def test_best_marker_outside_the_run_is_refused(two_checkpoints, tmp_path: Path, capsys) -> None:
    run = _copy(two_checkpoints, tmp_path)
    other = tmp_path / "other_run"
    shutil.copytree(two_checkpoints, other)
    marker = run / "checkpoints" / "best"
    marker.write_text(json.dumps({"checkpoint": "../../other_run/checkpoints/step_8"}))
    assert main(["export", "--checkpoint", str(run), "--which", "best", "--out", str(tmp_path / "exp")]) == 2
    line = _one_error_line(capsys.readouterr().err, "export")
    assert str(marker) in line and "sibling step_<N>" in line
    assert not (tmp_path / "exp").exists()


# ------------------------------------------------------------------------------- symbolic links in a step
def _link_manifest(step: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside_manifest.json"
    shutil.move(step / "MANIFEST.json", outside)  # the same bytes, reached through a link
    (step / "MANIFEST.json").symlink_to(outside)


def _link_step(step: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere_step"
    shutil.copytree(step.parent / "step_8", elsewhere)
    (step.parent / "step_24").symlink_to(elsewhere)  # an intact-looking newer step, outside the run


def _link_train_state(step: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside_state.json"
    shutil.move(step / "train_state.json", outside)
    (step / "train_state.json").symlink_to(outside)


@pytest.mark.parametrize(
    "plant, bad_step, reason",
    [
        (_link_manifest, "step_16", "MANIFEST.json is a symbolic link, not a regular file"),
        (_link_step, "step_24", "step_24 is a symbolic link, not a checkpoint directory"),
        (_link_train_state, "step_16", "train_state.json is not a regular file"),
    ],
)
def test_a_link_in_a_step_makes_only_that_step_incomplete(
    plant, bad_step: str, reason: str, two_checkpoints, tmp_path: Path, caplog, capsys
) -> None:
    """Hostile: a linked manifest or step directory passed verification (the link was followed)."""
    run = _copy(two_checkpoints, tmp_path)
    plant(run / "checkpoints" / "step_16", tmp_path)
    step = run / "checkpoints" / bad_step
    with caplog.at_level(logging.WARNING, logger="c2al_rec.distributed.checkpoint"):
        fallback = ckpt_io.resolve_checkpoint(run)
    assert fallback.name == ("step_16" if bad_step == "step_24" else "step_8")
    assert f"skipping checkpoint {step}: " in caplog.text and reason in caplog.text
    with pytest.raises(ckpt_io.IncompleteCheckpoint, match=reason):
        ckpt_io.resolve_checkpoint(step)  # named explicitly: refused
    assert main(["export", "--checkpoint", str(step), "--out", str(tmp_path / "exp")]) == 2
    assert reason in _one_error_line(capsys.readouterr().err, "export")
    assert not (tmp_path / "exp").exists()


# ------------------------------------------------------------------------------- pruning
def test_pruning_hash_verifies_the_newest_step_before_deleting_older_ones(two_checkpoints, tmp_path: Path, caplog):
    """A newest step whose bytes changed at the same size passed the size check and got the older one deleted."""
    run = _copy(two_checkpoints, tmp_path)
    shard = next((run / "checkpoints" / "step_16").glob("*.distcp"))
    original = shard.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    with caplog.at_level(logging.WARNING, logger="c2al_rec.distributed.checkpoint"):
        ckpt_io.prune_checkpoints(run, keep=1, protect=None)
    assert (run / "checkpoints" / "step_8").is_dir()
    assert "not pruning older checkpoints: the newest one fails its manifest check" in caplog.text
    shard.write_bytes(original)
    ckpt_io.prune_checkpoints(run, keep=1, protect=None)  # intact again: pruned as usual
    assert [p.name for p in ckpt_io.list_checkpoints(run)] == ["step_16"]


# ------------------------------------------------------------------------------- memory before allocation
def _claim_rows(run: Path, rows: int) -> Path:
    """Make ``run``'s checkpoint claim ``rows`` rows for its first table (manifest recomputed)."""
    step = ckpt_io.resolve_checkpoint(run)
    state = json.loads((step / "train_state.json").read_text())
    state["schema"]["sparse"][0]["num_embeddings"] = rows
    (step / "train_state.json").write_text(json.dumps(state))
    ckpt_io.write_manifest(step)
    return step


@pytest.mark.parametrize("verb", ["export", "evaluate"])
def test_claimed_table_sizes_are_checked_against_the_tensors_before_allocating(
    verb: str, smoke_runs, tmp_path: Path, capsys
) -> None:
    """Hostile: train_state.json claiming 1e11 rows made export / evaluate allocate (the check lived in training)."""
    run = _copy(smoke_runs.baseline, tmp_path)
    step = _claim_rows(run, 10**11)
    data = tmp_path / "data"  # data that agrees with the claim: evaluate's schema check lets it through
    shutil.copytree(smoke_runs.data, data)
    schema = json.loads((data / "schema.json").read_text())
    schema["sparse"][0]["num_embeddings"] = 10**11
    (data / "schema.json").write_text(json.dumps(schema))
    argv = {
        "export": ["export", "--checkpoint", str(run), "--out", str(tmp_path / "out")],
        "evaluate": ["evaluate", "--checkpoint", str(run), "--data", str(data), "--cohorts", str(SPEC),
                     "--out", str(tmp_path / "out")],
    }[verb]  # fmt: skip
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, verb)
    assert f"{step}/train_state.json describes tensor model.model.sparse_arch.ebc.embedding_bags." in line
    assert "of shape [100000000000, " in line and "refusing to build the model" in line
    assert not (tmp_path / "out").exists()


def test_forged_tensor_metadata_is_checked_against_the_shard_bytes(smoke_runs, tmp_path: Path) -> None:
    """5e8 rows claimed by both train_state.json and .metadata: the shard files do not hold them."""
    from c2al_rec.runs.load import load_run

    run = _copy(smoke_runs.baseline, tmp_path)
    step = _claim_rows(run, 5 * 10**8)
    md = FileSystemReader(str(step)).read_metadata()  # our own checkpoint: a plain read is safe here
    first = json.loads((step / "train_state.json").read_text())["schema"]["sparse"][0]["name"]
    fqn = next(k for k in md.state_dict_metadata if k.endswith(f".embedding_bags.t_{first}.weight"))
    tensor_md = md.state_dict_metadata[fqn]
    tensor_md.size = type(tensor_md.size)([5 * 10**8, *tensor_md.size[1:]])
    tensor_md.chunks[0].sizes = tensor_md.size
    (step / ".metadata").write_bytes(pickle.dumps(md))
    ckpt_io.write_manifest(step)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(
        ValueError, match=rf"{fqn} of shape \[500000000, \d+\] takes \d+ bytes, but its shard files hold"
    ):
        load_run(run)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 256 * 1024  # KiB: nothing was allocated


_BIG_BYTES = b"cbuiltins\nbytes\n(J\xff\xff\xff\x7ftR."  # bytes(2**31 - 1): 2 GiB from 25 bytes
_BIG_STR = b"cbuiltins\nstr\n(cbuiltins\nbytes\n(J\x00\x00\x00\x20tRtR."  # str(bytes(2**29)): a 2 GiB repr


@pytest.mark.parametrize("payload", [_BIG_BYTES, _BIG_STR], ids=["bytes", "str-of-bytes"])
def test_allowed_constructors_cannot_build_gigabytes(payload: bytes, tmp_path: Path) -> None:
    """Hostile: a 44-byte .metadata built a 2 GB string through allow-listed callables before it was refused."""
    meta = tmp_path / "step_1" / ".metadata"
    meta.parent.mkdir()
    meta.write_bytes(payload)
    probe = (
        "import sys\n"
        "from c2al_rec.distributed.checkpoint import read_dcp_metadata\n"
        "try:\n    read_dcp_metadata(sys.argv[1])\nexcept ValueError as e:\n    print(e)\n"
        # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a large pytest process
        # would report its parent's peak; the new address space's high-water mark starts afresh at exec
        "print(next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM:')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(meta)], capture_output=True, text=True, check=True)
    message, peak_kib = out.stdout.strip().splitlines()
    assert (
        message.startswith(f"{meta}: refused to unpickle: its calls of builtins.")
        and "would build more than" in message
    )
    assert int(peak_kib) < 1024 * 1024  # the import of torch and DCP, and no 2 GiB


def test_real_metadata_fits_the_budget_and_oversized_metadata_is_refused(smoke_runs, tmp_path: Path) -> None:
    meta = ckpt_io.resolve_checkpoint(smoke_runs.c2al) / ".metadata"
    with pytest.raises(UnpicklingRefused, match="would build more than 10 bytes"):
        restricted_load(meta.read_bytes(), ckpt_io.DCP_METADATA_GLOBALS, str(meta), max_constructed=10)
    big = tmp_path / "step_1" / ".metadata"
    big.parent.mkdir()
    with open(big, "wb") as f:
        f.truncate(ckpt_io.METADATA_MAX_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ValueError, match=rf"{big} has {ckpt_io.METADATA_MAX_BYTES + 1} bytes, more than the"):
        ckpt_io.read_dcp_metadata(big)


def test_export_help_says_a_foreign_checkpoint_names_the_parity_data(capsys) -> None:
    """The parity rows default to the data.path a checkpoint's config names: --help says so and how to override."""
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "a checkpoint from elsewhere makes export read whatever path it names there" in help_text
    assert "give --data to read your own" in help_text
