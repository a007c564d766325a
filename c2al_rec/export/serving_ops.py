"""The serving allow-list (``c2al_rec/serve/serving_ops.json``): what the archives ``export`` writes refer to.

``serve``, ``predict`` and ``load_exported`` refuse a ``model.pt`` whose code or pickles refer to
anything not on that list (``c2al_rec.serve.archive_scan``), before ``torch.jit.load`` runs it. The
list is derived, never hand-written: this module scripts the serving model exactly as ``export``
does (``build_serving``: aux heads dropped, FM in plain-PyTorch math, optional torchrec inference
quantization, fx-trace + script) for every kind of model the project can export, saves each archive,
and takes the union of what they refer to. The variants: fp32, int8 and fp16; baseline and C2AL;
single-hot only and with multi-hot features (sum and mean pooling, ``error`` and ``hash`` ids); with
and without dense features; every DHEN interaction module, the static FM attention, the sum
combiner, a representation MLP. Weights are left at their initialisation: the graph, not the values,
decides what an archive refers to.

    python -m c2al_rec.export.serving_ops            # print the list it would write
    python -m c2al_rec.export.serving_ops --write    # regenerate serving_ops.json

``tests/test_serving_ops.py`` regenerates the list and compares it with the committed file, so a
change of the model, of torch or of torchrec that changes what an export refers to fails there
until the list is regenerated (and the change reviewed).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import torch

from c2al_rec.config import CohortsConfig, Config, ModelConfig
from c2al_rec.config.model import DHEN_MODULE_TYPES, DotConfig, FMConfig, LinearConfig
from c2al_rec.data.schema import DatasetSchema, SparseFeature
from c2al_rec.modules.model import build_run_model
from c2al_rec.runs.load import TrainedRun
from c2al_rec.serve.archive_scan import ALLOW_LIST_FILE, Inventory, inventory

from .exporter import QUANT_DTYPES, build_serving

QUANTIZE = ("none", *QUANT_DTYPES)
SINGLE_HOT = [SparseFeature("user", 64), SparseFeature("ad", 32, out_of_range="hash")]
MULTI_HOT = [
    SparseFeature("history", 48, multi_hot=True, pooling="sum"),
    SparseFeature("tags", 16, multi_hot=True, pooling="mean", out_of_range="hash"),
]
DENSE = ["d0", "d1"]
# every registered interaction module in one over-arch (a new module type is covered without an edit
# here); the variants below add the remaining model options
ALL_MODULES = [list(DHEN_MODULE_TYPES), ["fm", "linear"]]
SUM_MODULES = [["fm", "linear", "dot"], ["fm"]]  # the sum combiner needs equal token counts (2 each)
SMALL = dict(
    embedding_dim=8,
    dense_arch=[8],
    fm=FMConfig(rank=2, compressed_tokens=2, out_tokens=2, mlp=[8]),
    linear=LinearConfig(out_tokens=2),
    dot=DotConfig(out_tokens=2),
    primary_head=[8],
    aux_head=[4],
    dhen_layers=ALL_MODULES,
)
STATIC_FM = FMConfig(rank=2, attention="static", compressed_tokens=2, out_tokens=2, mlp=[8])
ARCHITECTURES = {
    "all_modules": ModelConfig(**SMALL),
    "static_fm_sum_combine_repr_mlp": ModelConfig(
        **SMALL
        | dict(fm=STATIC_FM, combine="sum", repr_mlp=[8], aux_projection=4, dhen_layers=SUM_MODULES)
    ),
}


@dataclasses.dataclass
class Variant:
    """One kind of exported model: its architecture, quantization, C2AL or not, and input features."""

    architecture: str
    quantize: str
    c2al: bool
    multi_hot: bool
    dense: bool

    @property
    def name(self) -> str:
        return (
            f"{self.architecture}-{self.quantize}-{'c2al' if self.c2al else 'baseline'}-"
            f"{'multi' if self.multi_hot else 'single'}-{'dense' if self.dense else 'nodense'}"
        )


def variants() -> Iterator[Variant]:
    """Every combination of quantization, C2AL, multi-hot and dense features for the main architecture;
    the other architectures in fp32 and int8, with every feature kind."""
    for q, c2al, multi, dense in itertools.product(QUANTIZE, (False, True), (False, True), (False, True)):
        yield Variant("all_modules", q, c2al, multi, dense)
    for arch in ARCHITECTURES:
        if arch != "all_modules":
            for q in ("none", "int8"):
                yield Variant(arch, q, True, True, True)


def build_variant(v: Variant) -> torch.jit.ScriptModule:
    """The scripted serving model ``export`` would write for a freshly initialised model of ``v``."""
    schema = DatasetSchema(
        label="label", dense=DENSE if v.dense else [], sparse=SINGLE_HOT + (MULTI_HOT if v.multi_hot else [])
    )
    cohorts = CohortsConfig(enabled=True, spec="unused.json") if v.c2al else CohortsConfig()
    cfg = dataclasses.replace(Config(), model=ARCHITECTURES[v.architecture], cohorts=cohorts)
    torch.manual_seed(0)
    model = build_run_model(cfg, schema, torch.device("cpu"))
    run = TrainedRun(schema, model, cfg, None, Path("unused"), {})
    scripted, _ = build_serving(run, v.quantize)
    return scripted


def collect(progress: bool = False) -> Inventory:
    """The union of what the archives of every variant refer to."""
    total = Inventory()
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants():
            path = Path(tmp) / f"{v.name}.pt"
            build_variant(v).save(str(path))
            total.update(inventory(path))
            if progress:
                print(f"scanned {v.name}", file=sys.stderr, flush=True)
    return total


def allow_list_json(inv: Inventory) -> str:
    """The allow-list file's text: the versions it was derived with, then the names by kind."""
    import torchrec

    head = {
        "generated_by": "python -m c2al_rec.export.serving_ops --write",
        "torch": torch.__version__,
        "torchrec": getattr(torchrec, "__version__", "unknown"),
    }
    return json.dumps({**head, **inv.to_json()}, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {ALLOW_LIST_FILE} (default: print it)")
    args = parser.parse_args(argv)
    text = allow_list_json(collect(progress=True))
    if args.write:
        ALLOW_LIST_FILE.write_text(text)
        print(f"wrote {ALLOW_LIST_FILE}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
