"""Serve an exported model over HTTP: JSON rows in, probabilities out, with dynamic micro-batching.

    c2al-rec serve --model runs/export --port 8080 [--max-batch-rows 256 --max-wait-ms 2 --max-queue 1024]

    curl -s localhost:8080/v1/score -d '{"rows": [{"f0": 3, "history": [1, 2], "spend": 0.5}]}'
    -> {"prob": [0.031], "model_id": "export-3f2a..."}

Routes: POST /v1/score, GET /healthz (200 once loaded), GET /readyz (503 while the queue is full),
GET /metrics (Prometheus). A bad row is a 400 naming the row and feature; a full queue a 503.
Features a row holds that the model does not take are ignored.

Limits of one request (each refusal is counted in /metrics as c2al_limit_rejections_total{limit=...}):
body over --max-body-bytes: 413 (the rest of the body is discarded unread); JSON nested deeper than
--max-json-depth: 400; a multi-hot list longer than --max-multi-hot-ids: 400 naming row and feature;
headers not received within --header-timeout-s or a body within --body-timeout-s: 408, connection
closed; a dense value beyond float32 or an id beyond int64: 400 naming row and feature.
Loads only the exported directory (TorchScript + JSON metadata); model.pt must match the sha256 in
metadata.json and use only the ops an export emits, both checked before it is loaded;
`--format pt2` serves model.pt2 instead (native code: only after its sha256 matches metadata.json).
"""

from __future__ import annotations

import argparse

from .options import add_dataclass_flags, add_format_argument, dataclass_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from c2al_rec.serve.limits import ServeLimits, ServeOptions

    parser.add_argument("--model", required=True, help="exported model directory (from `c2al-rec export`)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all interfaces)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the scoring thread")
    add_dataclass_flags(parser, ServeOptions)  # batching and queue
    add_dataclass_flags(parser, ServeLimits)  # what one request may cost
    add_format_argument(parser)
    parser.add_argument(
        "--no-optimize",
        action="store_true",
        help="serve the exported TorchScript graph as it is (default: frozen and optimised for inference, "
        "after a parity check on the export's sample input)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from c2al_rec.serve.artifact import load_exported, optimize_for_serving
    from c2al_rec.serve.http import create_app
    from c2al_rec.serve.limits import ServeLimits, ServeOptions
    from c2al_rec.serve.server import run_server

    limits = dataclass_from_args(ServeLimits, args)
    options = dataclass_from_args(ServeOptions, args, ServeOptions(limits=limits))
    torch.set_num_threads(args.threads)
    if args.format == "pt2":
        from c2al_rec.serve.pt2_model import load_pt2

        model = load_pt2(args.model)  # compiled ahead of time: nothing to freeze
    else:
        model = load_exported(args.model)
    if args.format == "torchscript" and not args.no_optimize:
        model, what = optimize_for_serving(model)
        print(what, flush=True)
    app = create_app(model, options)
    print(f"serving {args.model} ({app.state.model_id}) on http://{args.host}:{args.port}", flush=True)
    run_server(app, args.host, args.port, limits, app.state.metrics.limit)
    return 0
