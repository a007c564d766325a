"""Tier 1: atomic checkpoint writes, manifests, retention, resolution, safe loads (one process, no process group)."""

import json
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

from c2al_rec.distributed import checkpoint as ckpt_io


def _save(run: Path, step: int, keep: int = 2, protect: str | None = None, extra: dict | None = None) -> Path:
    state = {"model": {"w": torch.full((3,), float(step)), **(extra or {})}}
    return ckpt_io.save_checkpoint(run, step, state, {"step": step}, keep=keep, protect=protect)


def test_save_load_prune_and_resolve(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        _save(tmp_path, step, keep=2, protect="step_10")
    names = [p.name for p in ckpt_io.list_checkpoints(tmp_path)]
    assert names == ["step_10", "step_20", "step_30"]  # step_10 protected (best), newest 2 kept
    _save(tmp_path, 40, keep=2)
    assert [p.name for p in ckpt_io.list_checkpoints(tmp_path)] == ["step_30", "step_40"]
    latest = ckpt_io.resolve_checkpoint(tmp_path)
    assert latest.name == "step_40" and ckpt_io.resolve_checkpoint(latest) == latest
    state = {"model": {"w": torch.zeros(3)}}
    ckpt_io.load_checkpoint(latest, state)
    assert state["model"]["w"].tolist() == [40.0] * 3
    assert ckpt_io.load_rng(latest, 0) is not None and ckpt_io.load_rng(latest, 5) is None


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path: Path) -> None:
    ckpt = _save(tmp_path, 10)
    manifest = json.loads((ckpt / ckpt_io.MANIFEST).read_text())
    on_disk = {p.name for p in ckpt.iterdir()} - {ckpt_io.MANIFEST}
    assert set(manifest["files"]) == on_disk >= {".metadata", "train_state.json", "rng.pt"}
    assert any(n.endswith(".distcp") for n in on_disk)
    for name, entry in manifest["files"].items():
        assert entry == {"bytes": (ckpt / name).stat().st_size, "sha256": ckpt_io.file_sha256(ckpt / name)}
    ckpt_io.verify_checkpoint(ckpt)


def _distcp(ckpt: Path) -> Path:
    return next(ckpt.glob("*.distcp"))


def _truncate(ckpt: Path) -> str:
    f = _distcp(ckpt)
    f.write_bytes(f.read_bytes()[:-7])
    return f.name


def _flip_byte(ckpt: Path) -> str:
    f = _distcp(ckpt)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    return f.name


def _delete(ckpt: Path) -> str:
    f = _distcp(ckpt)
    f.unlink()
    return f.name


def _extra_distcp(ckpt: Path) -> str:
    (ckpt / "__9_0.distcp").write_bytes(b"x")
    return "__9_0.distcp"


def _no_manifest(ckpt: Path) -> str:
    (ckpt / ckpt_io.MANIFEST).unlink()
    return ckpt_io.MANIFEST


def _bad_manifest(ckpt: Path) -> str:
    (ckpt / ckpt_io.MANIFEST).write_text('{"files": [1, 2')
    return ckpt_io.MANIFEST


@pytest.mark.parametrize(
    "damage, why",
    [
        (_truncate, "bytes, its manifest says"),
        (_flip_byte, "sha256 differs"),
        (_delete, "is missing"),
        (_extra_distcp, "is not listed"),
        (_no_manifest, "is missing"),
        (_bad_manifest, "malformed manifest"),
    ],
)
def test_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path: Path, caplog, damage, why: str) -> None:
    _save(tmp_path, 10)
    newest = _save(tmp_path, 20)
    name = damage(newest)
    with caplog.at_level(logging.WARNING, logger="c2al_rec.distributed.checkpoint"):
        assert ckpt_io.resolve_checkpoint(tmp_path).name == "step_10"
    warning = caplog.text
    assert "skipping checkpoint" in warning and str(newest) in warning and name in warning and why in warning
    assert [p.name for p in ckpt_io.list_checkpoints(tmp_path)] == ["step_10"]
    state = {"model": {"w": torch.zeros(3)}}
    ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(tmp_path), state)
    assert state["model"]["w"].tolist() == [10.0] * 3
    # named explicitly, the damaged checkpoint is an error naming the file, not a fallback
    with pytest.raises(ckpt_io.IncompleteCheckpoint, match=name.replace(".", r"\.")):
        ckpt_io.resolve_checkpoint(newest)


def test_only_damaged_checkpoints_is_an_error_naming_each(tmp_path: Path) -> None:
    _truncate(_save(tmp_path, 10))
    with pytest.raises(ValueError, match="no intact checkpoint.*distcp has"):
        ckpt_io.resolve_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="no intact checkpoint"):
        ckpt_io.latest_checkpoint(tmp_path)
    assert ckpt_io.latest_checkpoint(tmp_path / "fresh") is None  # nothing there yet: a fresh run


def test_crash_during_write_leaves_previous_checkpoint_loadable(tmp_path: Path, monkeypatch) -> None:
    _save(tmp_path, 10)
    real_replace = os.replace

    def crash(src, dst):  # the process dies between writing the shards and publishing them
        if Path(dst).name == "step_20":
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt_io.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 20)
    monkeypatch.setattr(ckpt_io.os, "replace", real_replace)
    assert (tmp_path / "checkpoints" / ".tmp_step_20" / ckpt_io.MANIFEST).is_file()  # complete but unpublished
    assert ckpt_io.resolve_checkpoint(tmp_path).name == "step_10"
    state = {"model": {"w": torch.zeros(3)}}
    ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(tmp_path), state)
    assert state["model"]["w"].tolist() == [10.0] * 3
    _save(tmp_path, 30)  # the next save clears the stale temp directory
    assert not list((tmp_path / "checkpoints").glob(".tmp_*"))


def test_resolve_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ckpt_io.resolve_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="best"):
        ckpt_io.resolve_checkpoint(tmp_path, which="best")
    with pytest.raises(ValueError, match="which"):
        ckpt_io.resolve_checkpoint(tmp_path, which="newest")


@pytest.mark.parametrize(
    "marker",
    [
        '{"checkpoint": "../../other_run/checkpoints/step_10"}',
        '{"checkpoint": "step_10/../../../elsewhere"}',
        '{"checkpoint": "/abs/step_10"}',
        '{"checkpoint": ".."}',
        '{"checkpoint": 10}',
        '{"ne": 0.5}',
        "not json",
    ],
)
def test_best_marker_may_only_name_a_sibling_step(tmp_path: Path, marker: str) -> None:
    run = tmp_path / "run"
    ckpt = _save(run, 10)
    ckpt_io.write_best_marker(run, ckpt, 0.5, 10)
    assert ckpt_io.resolve_checkpoint(run, which="best") == ckpt
    marker_file = run / "checkpoints" / "best"
    marker_file.write_text(marker)
    with pytest.raises(ValueError, match=str(marker_file)):
        ckpt_io.resolve_checkpoint(run, which="best")
    with pytest.raises(ValueError, match=str(marker_file)):
        ckpt_io.best_checkpoint_name(run)


def test_metadata_pointing_outside_the_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = _save(tmp_path, 10)
    md = FileSystemReader(str(ckpt)).read_metadata()  # our own fresh file: plain read is fine here
    for info in md.storage_data.values():
        info.relative_path = "../../../etc/passwd"
    (ckpt / ".metadata").write_bytes(pickle.dumps(md))
    ckpt_io.write_manifest(ckpt)
    with pytest.raises(ValueError, match="not a file of this checkpoint"):
        ckpt_io.load_checkpoint(ckpt, {"model": {"w": torch.zeros(3)}})


class _Touch:
    """Unpickling this runs ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_non_tensor_values_load_only_as_plain_data(tmp_path: Path) -> None:
    ckpt = _save(tmp_path, 10, extra={"note": "hello", "lr": 0.25})
    state = {"model": {"w": torch.zeros(3), "note": None, "lr": None}}
    ckpt_io.load_checkpoint(ckpt, state)
    assert state["model"]["note"] == "hello" and state["model"]["lr"] == 0.25
    # a non-tensor value is stored as a torch.save pickle: DCP's own planner would unpickle it freely
    marker = tmp_path / "pwned"
    bad = _save(tmp_path, 20, extra={"note": _Touch(marker)})
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused"):
        ckpt_io.load_checkpoint(bad, {"model": {"w": torch.zeros(3), "note": None}})
    assert not marker.exists()
