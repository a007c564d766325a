"""Score Parquet with an exported model: probabilities in input row order, label/row_id/axes passed.

    c2al-rec predict --model runs/export --data DATA [--split test] --out preds.parquet

Writes Parquet: `prob` (float32) in input row order, plus `label`, `row_id`, `weight` and the axis
columns when the input has them. The model id (`<export dir>-<sha256 of model.pt, 12 hex>`, the
`model_id` of metadata.json and of the HTTP service's answers) is the file's Parquet key-value
metadata under `model_id`: pyarrow.parquet.read_schema(PATH).metadata[b"model_id"].

Uses only the exported directory (TorchScript + JSON metadata); nothing else is unpickled, and
model.pt must match the sha256 in metadata.json and use only the ops an export emits, both checked
before it is loaded. With `--format pt2` it loads model.pt2 instead (native code: only after its
sha256 matches metadata.json).
Rows are checked with the training-time rules (ids the schema rejects, negative ids in hash mode
included, non-finite dense values): an error names the input file, row and column, and nothing is
written. Input without rows (an empty shard) gives a predictions file without rows, same columns.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .options import add_format_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="exported model directory (from `c2al-rec export`)")
    parser.add_argument("--data", required=True, help="dataset root (with --split), a directory of Parquet, or a file")
    parser.add_argument("--split", default="test", help="split of a dataset root (default: test)")
    parser.add_argument("--out", required=True, help="predictions Parquet to write")
    parser.add_argument("--batch-size", type=int, default=4096, help="rows per scoring call")
    add_format_argument(parser)


def run(args: argparse.Namespace) -> int:
    from c2al_rec.serve.artifact import load_exported
    from c2al_rec.serve.predictor import input_files, predict_files

    if args.format == "pt2":
        from c2al_rec.serve.pt2_model import load_pt2

        model = load_pt2(args.model)
    else:
        model = load_exported(args.model)
    files = input_files(args.data, args.split)
    t0 = time.perf_counter()
    # a progress bar on a terminal only: in logs it would bury the one-line error
    rows = predict_files(model, files, Path(args.out), args.batch_size, progress=sys.stderr.isatty())
    dt = time.perf_counter() - t0
    print(f"wrote {args.out}: {rows} rows in {dt:.1f}s ({rows / max(dt, 1e-9):,.0f} rows/s)")
    return 0
