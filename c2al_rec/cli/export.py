"""Export a checkpoint to a primary-only TorchScript serving model (aux heads stripped), parity-gated.

    c2al-rec export --checkpoint runs/c2al --out runs/export [--quantize none|int8|fp16] [--pt2]

Writes model.pt, metadata.json and sample_input.pt; nothing is written if the exported model does
not match the training model's primary head (fp32: max |dp| <= 1e-5; int8/fp16: NE within 0.5% of
fp32). --pt2 also writes model.pt2 (torch.export + AOTInductor, compiled for CPU; needs a C++
compiler; fp32 tables only), gated like model.pt and listed with its sha256 in metadata.json.
Reads a DCP checkpoint without running code from it: its pickled metadata goes through an
allow-list unpickler (DCP's metadata classes, builtin containers and scalars), other values through
torch.load(weights_only=True), and a checkpoint whose MANIFEST.json does not match is refused.
metadata.json is also the model card: model_id, git_commit, config, data_fingerprint, cohort_spec,
evaluation (the checkpoint's validation metrics and the exported model's on the parity rows).

Settings come from the [export] section: --config FILE, the short flags below (each sets one field),
then --export.<field>=value. The parity rows come from --data (data.path); without it, from the
data.path in the checkpoint's config: a checkpoint from elsewhere makes export read whatever path it
names there, so give --data to read your own.
"""

from __future__ import annotations

import argparse
import json

from .options import add_field_flags, field_overrides

# short flag -> the config field it sets
FIELD_FLAGS = {
    "--data": "data.path",
    "--quantize": "export.quantize",
    "--parity-rows": "export.parity_rows",
    "--max-abs-diff": "export.parity_max_abs_diff",
    "--ne-tolerance": "export.parity_ne_tolerance",
}
FIELD_SWITCHES = {"--pt2": ("export.pt2", True)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="run directory or step_<N> directory")
    parser.add_argument("--which", default="latest", choices=["latest", "best"], help="checkpoint of a run directory")
    parser.add_argument("--out", required=True, help="export directory to write")
    parser.add_argument("--split", default="test", help="held-out split for the parity rows")
    add_field_flags(parser, FIELD_FLAGS, FIELD_SWITCHES, sections=("export", "data.path"))


def run(args: argparse.Namespace) -> int:
    from c2al_rec.config import load_config
    from c2al_rec.export.exporter import export_checkpoint

    cfg = load_config(args.config, field_overrides(args))
    meta = export_checkpoint(
        cfg.export, args.checkpoint, args.out, which=args.which, data=cfg.data.path or None, split=args.split
    )
    print(
        json.dumps(
            {"out": args.out, "quantize": meta["quantize"], "parameters": meta["parameters"], "parity": meta["parity"]}
        )
    )
    return 0
