"""Tier 1: the manifest of an owned output directory (``c2al_rec.io.owned_dir``); no training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from c2al_rec.io.owned_dir import MANIFEST_FILE, NotOwned, OwnedDir, open_for_append


def test_entries_are_listed_before_they_exist_and_clear_removes_only_them(tmp_path: Path) -> None:
    out = tmp_path / "out"
    owned = OwnedDir.open(out, "pipeline", ["pipeline.toml", out / "baseline" / "metrics.json", tmp_path / "elsewhere"])
    doc = json.loads((out / MANIFEST_FILE).read_text())
    assert doc == {"owner": "pipeline", "entries": [MANIFEST_FILE, "baseline", "pipeline.toml"]}
    (out / "baseline" / "checkpoints").mkdir(parents=True)
    (out / "pipeline.toml").write_text("")
    (out / ".pipeline.toml.abc123").write_text("")  # an atomic write killed half-way
    owned.add("report.md")
    assert OwnedDir.read(out).entries == {MANIFEST_FILE, "baseline", "pipeline.toml", "report.md"}  # type: ignore[union-attr]
    assert owned.foreign() == []
    OwnedDir.read(out).clear()  # type: ignore[union-attr]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE]
    assert OwnedDir.read(out).entries == {MANIFEST_FILE}  # type: ignore[union-attr]


def test_a_foreign_entry_stops_clear_and_nothing_is_removed(tmp_path: Path) -> None:
    owned = OwnedDir.open(tmp_path, "train", ["config.toml"])
    (tmp_path / "config.toml").write_text("x")
    (tmp_path / "b_notes.txt").write_text("mine")
    (tmp_path / "a_thesis").mkdir()
    with pytest.raises(NotOwned, match=r"holds a_thesis, which `c2al-rec train` did not create"):
        owned.clear()
    assert (tmp_path / "config.toml").exists() and (tmp_path / "b_notes.txt").exists()


def test_links_are_removed_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    out = tmp_path / "out"
    owned = OwnedDir.open(out, "train", ["tensorboard"])
    (out / "tensorboard").symlink_to(target)
    owned.clear()
    assert not (out / "tensorboard").is_symlink() and (target / "keep.txt").read_text() == "keep"


def test_another_owner_a_linked_or_malformed_manifest_is_refused(tmp_path: Path) -> None:
    OwnedDir.open(tmp_path / "a", "train")
    with pytest.raises(NotOwned, match=r"holds the output of `c2al-rec train`.*not of experiment"):
        OwnedDir.open(tmp_path / "a", "experiment")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / MANIFEST_FILE).symlink_to(tmp_path / "a" / MANIFEST_FILE)
    with pytest.raises(NotOwned, match="is a symbolic link, not a regular file"):
        OwnedDir.read(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / MANIFEST_FILE).write_text(json.dumps({"owner": "train", "entries": ["../up"]}))
    with pytest.raises(NotOwned, match=r"'\.\./up' is not the name of an entry"):
        OwnedDir.read(tmp_path / "c")
    (tmp_path / "c" / MANIFEST_FILE).write_text("[1]")
    with pytest.raises(NotOwned, match="malformed manifest"):
        OwnedDir.read(tmp_path / "c")
    assert OwnedDir.read(tmp_path) is None


def test_open_for_append_refuses_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "train.log").symlink_to(victim)
    with pytest.raises(NotOwned, match="train.log is a symbolic link"):
        open_for_append(tmp_path / "train.log")
    with open_for_append(tmp_path / "own.log") as f:
        f.write("line\n")
    assert victim.read_text() == "precious" and (tmp_path / "own.log").read_text() == "line\n"
