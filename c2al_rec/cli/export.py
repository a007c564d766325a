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
"""

from __future__ import annotations

import argparse
import json

from c2al_rec.config import ExportConfig

_D = ExportConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="run directory or step_<N> directory")
    parser.add_argument("--which", default="latest", choices=["latest", "best"], help="checkpoint of a run directory")
    parser.add_argument("--out", required=True, help="export directory to write")
    parser.add_argument("--quantize", default=_D.quantize, choices=["none", "int8", "fp16"], help="embeddings")
    parser.add_argument(
        "--data",
        default=None,
        help="dataset root for the parity rows (default: the data.path in the checkpoint's config; a checkpoint "
        "from elsewhere makes export read whatever path it names there: give --data to read your own)",
    )
    parser.add_argument("--split", default="test", help="held-out split for the parity rows")
    parser.add_argument("--parity-rows", type=int, default=_D.parity_rows, help="rows the parity gate scores")
    parser.add_argument("--max-abs-diff", type=float, default=_D.parity_max_abs_diff, help="fp32 gate limit")
    parser.add_argument("--ne-tolerance", type=float, default=_D.parity_ne_tolerance, help="int8/fp16 NE limit")
    parser.add_argument(
        "--pt2",
        action="store_true",
        default=_D.pt2,
        help="also write model.pt2 (torch.export + AOTInductor for CPU, same gate; needs a C++ compiler, fp32 only)",
    )


def run(args: argparse.Namespace) -> int:
    from c2al_rec.export.exporter import ExportOptions, export_checkpoint

    meta = export_checkpoint(
        ExportOptions(
            checkpoint=args.checkpoint,
            out=args.out,
            which=args.which,
            quantize=args.quantize,
            data=args.data,
            split=args.split,
            parity_rows=args.parity_rows,
            max_abs_diff=args.max_abs_diff,
            ne_tolerance=args.ne_tolerance,
            pt2=args.pt2,
        )
    )
    print(
        json.dumps(
            {"out": args.out, "quantize": meta["quantize"], "parameters": meta["parameters"], "parity": meta["parity"]}
        )
    )
    return 0
