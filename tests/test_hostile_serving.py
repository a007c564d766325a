"""Hostile serving artifacts: a model.pt that writes files when loaded, a swapped model, a pickled sample input.

Tier 1: the crafted archives are scripted here in seconds (no training; the benign ones are the
allow-list generator's fresh-weight serving models), and `predict` / `serve` run in-process through
the CLI's error boundary. Every refusal happens before ``torch.jit.load``: the file a payload would
write never exists.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Dict, Tuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from c2al_rec.cli.main import main
from c2al_rec.export.serving_ops import Variant, build_variant
from c2al_rec.io.digest import file_digest
from c2al_rec.serve.archive_scan import ArchiveRefused, check_archive, scan_records
from c2al_rec.serve.artifact import ArtifactMismatch, load_exported, verify_artifact
from tests.serving_exports import export_variant, write_export

TORCH_LOG_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ ")


# ------------------------------------------------------------------------------ crafted archives
class WritesOnLoad(torch.nn.Module):
    """Calls ``torch.from_file(path, shared=True, size=16)`` (creates and maps ``path``) in
    ``__setstate__``, which ``torch.jit.load`` runs, and in ``predict``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.buf = torch.zeros(16, dtype=torch.uint8)

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool, torch.Tensor]:
        return (self.path, self.training, self.buf)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool, torch.Tensor]) -> None:
        self.path = state[0]
        self.training = state[1]
        self.buf = torch.from_file(self.path, True, 16, dtype=torch.uint8)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return dense.sum(1)

    @torch.jit.export
    def predict(self, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        buf = torch.from_file(self.path, True, 16, dtype=torch.uint8)
        return torch.sigmoid(inputs["dense"].sum(1) + buf.sum())


class RunsOnUnpickle:
    """A pickle payload: unpickling it runs ``os.system``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (self.command,))


BENIGN = Variant("all_modules", "none", c2al=False, multi_hot=False, dense=True)


@pytest.fixture(scope="module")
def benign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh-weight fp32 export of the generator's single-hot model with dense features."""
    return export_variant(tmp_path_factory.mktemp("benign") / "export", BENIGN)


def _one_line(capsys: pytest.CaptureFixture, *argv: object) -> str:
    """Run the CLI; it must exit 2 with exactly one stderr line (no traceback). Returns that line."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not TORCH_LOG_LINE.match(line)]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------ model.pt that runs code
def test_archive_that_writes_a_file_on_load_is_refused_before_loading(tmp_path: Path, capsys) -> None:
    target = tmp_path / "written_by_the_model"
    export = write_export(tmp_path / "export", torch.jit.script(WritesOnLoad(str(target))), ["d0"], [])
    refused = r"refused before loading: op aten::from_file \(code/__torch__/\S+\.py line \d+\)"
    with pytest.raises(ArchiveRefused, match=refused):
        load_exported(export)
    assert not target.exists()
    data = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"d0": [0.5]}), data)
    for argv in (
        ("predict", "--model", export, "--data", data, "--out", tmp_path / "preds.parquet"),
        ("serve", "--model", export, "--port", "0"),
    ):
        line = _one_line(capsys, *argv)
        assert f"{export / 'model.pt'}: refused before loading: op aten::from_file" in line, line
        assert not target.exists()
    assert not (tmp_path / "preds.parquet").exists()
    torch.jit.load(str(export / "model.pt"))  # the payload is live: a plain load writes the file
    assert target.exists()


def test_exports_of_every_kind_pass_the_scan(benign: Path) -> None:
    check_archive(benign / "model.pt")
    assert load_exported(benign).predict(load_exported(benign).sample_input()).shape == (2,)


@pytest.mark.parametrize(
    "code, refused",
    [
        ("def f(x: Tensor) -> Tensor:\n  return ops.aten.from_file('p', True, 4)\n", "op aten::from_file"),
        ("def f(x: Tensor) -> Tensor:\n  return torch.ops.aten.save(x, 'p')\n", "op aten::save"),
        ("def f(x: Tensor) -> Tensor:\n  return torch.from_file.default('p')\n", "op aten::from_file.default"),
        ("def f(x: Tensor) -> Tensor:\n  _0 = torch\n  return x\n", "op torch "),
        ("def f(x: Tensor) -> Tensor:\n  print(x)\n  return x\n", "global name print"),
        ("def f(x: Tensor) -> Tensor:\n  return x.share_memory_()\n", "method share_memory_"),
        ("def f(x: Tensor) -> Tensor:\n  y = print\n  print = 1\n  return x\n", "global name print"),
        ("def f(x: Tensor) -> Tensor:\n  return [torch.relu(v) for v in [x]][0]\n", "syntax ListComp"),
        ("def f(x: Tensor) -> Tensor:\n  return x  # torch.from_file('p', True, 4)\n", "op aten::from_file"),
        ("def f(x: Tensor) -> Tensor:\n  s = 'ops.aten.save'\n  return x\n", "op aten::save"),
        ("def f(x: __torch__.torch.classes.foo.Bar) -> Tensor:\n  return x\n", "TorchBind class __torch__.torch"),
        ("def f(x: Tensor) -> Tensor:\n  return __torch__.nowhere.g(x)\n", "not defined in the archive"),
        ("def f(x: Tensor) -> Tensor:\n  return x ++\n", "syntax unparsable code"),
    ],
)
def test_code_outside_the_allow_list_is_named(code: str, refused: str) -> None:
    records = {"data.pkl": pickle.dumps(0, protocol=2), "code/__torch__/m.py": code.encode()}
    allowed = _allowed()
    bad = [r for r in scan_records(records) if r.name not in allowed[r.kind]]
    assert bad, code
    assert refused in f"{_word(bad[0].kind)} {bad[0].name} ({bad[0].where})", bad[0]


def test_code_the_allow_list_covers_passes() -> None:
    code = (
        "def f(x: Tensor, n: int=2) -> Tensor:\n"
        "  _0 = __torch__.m.g\n"
        "  y = torch.relu(x)\n"
        "  for i in range(n):\n"
        "    y = torch.add(y, _0(y))\n"
        "  if torch.gt(ops.prim.min([1, 2]), 0):\n"
        "    y = torch.relu(y)\n"
        "  return y\n"
        "def g(x: Tensor) -> Tensor:\n"
        "  return x\n"
    )
    records = {"data.pkl": pickle.dumps(0, protocol=2), "code/__torch__/m.py": code.encode()}
    allowed = _allowed()
    assert [r for r in scan_records(records) if r.name not in allowed[r.kind]] == []


@pytest.mark.parametrize("protocol", [2, 4])  # GLOBAL, and STACK_GLOBAL from memoized strings
def test_pickle_globals_outside_the_allow_list_are_named(protocol: int) -> None:
    records = {"data.pkl": pickle.dumps(RunsOnUnpickle("true"), protocol=protocol)}
    allowed = _allowed()
    bad = [r for r in scan_records(records) if r.name not in allowed[r.kind]]
    assert [(r.kind, r.name) for r in bad] == [("pickle_globals", "posix.system")]


def test_not_a_torchscript_zip_is_refused(tmp_path: Path, benign: Path) -> None:
    flat = tmp_path / "flat.pt"
    flat.write_bytes(b"\x00\x00\x00\x00PTMF" + b"\x00" * 64)
    with pytest.raises(ArchiveRefused, match="flatbuffer"):
        check_archive(flat)
    tricky = tmp_path / "tricky.pt"  # a zip whose bytes 4..8 say flatbuffer: torch.jit.load would read a flatbuffer
    raw = bytearray((benign / "model.pt").read_bytes())
    raw[4:8] = b"PTMF"
    tricky.write_bytes(bytes(raw))
    with pytest.raises(ArchiveRefused, match="flatbuffer"):
        check_archive(tricky)
    for payload in (b"", b"PK\x03\x04 not a zip"):
        flat.write_bytes(payload)
        with pytest.raises(ArchiveRefused, match="not a loadable TorchScript model"):
            check_archive(flat)


def test_rezipped_archive_is_scanned_as_torch_reads_it(tmp_path: Path, benign: Path) -> None:
    edited = tmp_path / "edited.pt"
    src = zipfile.ZipFile(benign / "model.pt")
    edits: list[str] = []
    with zipfile.ZipFile(edited, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith(".py") and b"torch.cat(" in data and not edits:
                data = data.replace(b"torch.cat(", b"torch.from_file(")
                edits.append(info.filename.split("/", 1)[1])
            z.writestr(info.filename, data)
    with pytest.raises(ArchiveRefused, match=rf"op aten::from_file \({re.escape(edits[0])} line \d+\)"):
        check_archive(edited)


# ------------------------------------------------------------------------------ model.pt swapped
def test_a_swapped_model_is_refused_not_served_under_the_old_id(tmp_path: Path, benign: Path, capsys) -> None:
    export = tmp_path / "export"
    shutil.copytree(benign, export)
    other = build_variant(Variant("all_modules", "none", c2al=True, multi_hot=False, dense=True))
    other.save(str(export / "model.pt"))  # same inputs, other weights: it would answer, under the old model_id
    line = _one_line(capsys, "serve", "--model", export, "--port", "0")  # by its size, or its sha256 if equal
    assert re.search(r"model.pt: (\d+ bytes|sha256 \w{12}\.\.\.), but metadata.json lists .* replaced", line), line
    (export / "model.pt").write_bytes((benign / "model.pt").read_bytes() + b"\0")
    size = (benign / "model.pt").stat().st_size
    with pytest.raises(ArtifactMismatch, match=f"model.pt: {size + 1} bytes, but metadata.json lists {size}: "):
        load_exported(export)
    shutil.copy(benign / "model.pt", export / "model.pt")
    raw = bytearray((export / "model.pt").read_bytes())
    raw[raw.index(b"data/0") + 100] ^= 1  # one weight byte (or its header): same size, other bytes
    (export / "model.pt").write_bytes(bytes(raw))
    with pytest.raises(ArtifactMismatch, match=r"model.pt: sha256 \w{12}\.\.\., but metadata.json lists \w{12}"):
        load_exported(export)
    meta = json.loads((export / "metadata.json").read_text())
    meta["artifacts"]["model.pt"] = file_digest(export / "model.pt")  # hashes updated, model_id left as it was
    (export / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactMismatch, match="model_id .* does not end with the sha256 of model.pt"):
        load_exported(export)
    (export / "model.pt").write_bytes((export / "model.pt").read_bytes()[:1000])
    with pytest.raises(ArtifactMismatch, match=r"model.pt: 1000 bytes, but metadata.json lists \d+"):
        load_exported(export)


def test_verify_artifact_names_the_artifact(tmp_path: Path, benign: Path) -> None:
    meta = json.loads((benign / "metadata.json").read_text())
    assert verify_artifact(benign, "model.pt", meta) == meta["artifacts"]["model.pt"]
    with pytest.raises(ArtifactMismatch, match="no 'artifacts' entry for model.pt2"):
        verify_artifact(benign, "model.pt2", meta)
    with pytest.raises(ArtifactMismatch, match="no 'artifacts' entry for model.pt .*export it again"):
        verify_artifact(benign, "model.pt", {k: v for k, v in meta.items() if k != "artifacts"})
    with pytest.raises(ArtifactMismatch, match="'artifacts.model.pt' must be"):
        verify_artifact(benign, "model.pt", {"artifacts": {"model.pt": {"bytes": "12", "sha256": "ab"}}})


# ------------------------------------------------------------------------------ sample_input.pt
def test_pickled_sample_input_stops_serve_in_one_line(tmp_path: Path, benign: Path, capsys) -> None:
    export = tmp_path / "export"
    shutil.copytree(benign, export)
    ran = tmp_path / "ran"
    torch.save({"dense": RunsOnUnpickle(f"touch {ran}")}, export / "sample_input.pt")
    line = _one_line(capsys, "serve", "--model", export, "--port", "0")
    assert f"{export / 'sample_input.pt'}: not a tensor file that loads with torch.load(weights_only=True)" in line
    assert not ran.exists()
    torch.save([torch.zeros(1)], export / "sample_input.pt")  # tensors, but not the export's dict
    line = _one_line(capsys, "serve", "--model", export, "--port", "0", "--no-optimize")
    assert "sample_input.pt: expected a Dict[str, Tensor] with a 'dense' entry" in line


def _allowed() -> dict:
    from c2al_rec.serve.archive_scan import allow_list

    return allow_list()


def _word(kind: str) -> str:
    from c2al_rec.serve.archive_scan import _KIND_WORDS

    return _KIND_WORDS[kind]
