"""Exported directories without training, for serving tests: the allow-list generator's fresh-weight
serving models (``c2al_rec.export.serving_ops.build_variant``), or any scripted module, written as
`export` writes them (model.pt, metadata.json with model_id and artifacts, sample_input.pt)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from c2al_rec.export.serving_ops import DENSE, MULTI_HOT, SINGLE_HOT, Variant, build_variant
from c2al_rec.io.digest import file_digest
from c2al_rec.serve.artifact import compute_model_id


def write_export(out: Path, module: torch.jit.ScriptModule, dense: list[str], sparse: list[dict]) -> Path:
    """``out`` as an exported directory around any scripted module with a ``predict`` method."""
    out.mkdir(parents=True)
    module.save(str(out / "model.pt"))
    meta = {
        "model_id": compute_model_id(out, out / "model.pt"),
        "dense": dense,
        "sparse": sparse,
        "artifacts": {"model.pt": file_digest(out / "model.pt")},
    }
    (out / "metadata.json").write_text(json.dumps(meta))
    sample = {"dense": torch.zeros(2, len(dense))}
    for f in sparse:
        sample[f"{f['name']}.values"] = torch.zeros(2, dtype=torch.int64)
        sample[f"{f['name']}.lengths"] = torch.ones(2, dtype=torch.int64)
    torch.save(sample, out / "sample_input.pt")
    return out


def export_variant(out: Path, variant: Variant) -> Path:
    """The fresh-weight serving model of ``variant`` as an exported directory."""
    features = SINGLE_HOT + (MULTI_HOT if variant.multi_hot else [])
    return write_export(out, build_variant(variant), DENSE if variant.dense else [], [asdict(f) for f in features])
