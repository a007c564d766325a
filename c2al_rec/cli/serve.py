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

from .options import add_format_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from c2al_rec.serve.limits import ServeLimits, ServeOptions

    d, lim = ServeOptions(), ServeLimits()
    parser.add_argument("--model", required=True, help="exported model directory (from `c2al-rec export`)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all interfaces)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port")
    parser.add_argument("--max-batch-rows", type=int, default=d.max_batch_rows, help="rows per model call at most")
    parser.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, help="wait for more requests (ms)")
    parser.add_argument("--max-queue", type=int, default=d.max_queue, help="waiting requests before 503")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the scoring thread")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=lim.max_body_bytes,
        help=f"largest request body; larger is 413, discarded unread (default {lim.max_body_bytes})",
    )
    parser.add_argument(
        "--max-json-depth",
        type=int,
        default=lim.max_json_depth,
        help=f"deepest JSON nesting of a request; deeper is 400 (default {lim.max_json_depth})",
    )
    parser.add_argument(
        "--max-multi-hot-ids",
        type=int,
        default=lim.max_multi_hot_ids,
        help=f"most ids in one multi-hot feature of one row; more is 400 (default {lim.max_multi_hot_ids})",
    )
    parser.add_argument(
        "--header-timeout-s",
        type=float,
        default=lim.header_timeout_s,
        help=f"seconds to receive a request's headers; then 408, closed (default {lim.header_timeout_s:g})",
    )
    parser.add_argument(
        "--body-timeout-s",
        type=float,
        default=lim.body_timeout_s,
        help=f"seconds to receive a request's body; then 408, closed (default {lim.body_timeout_s:g})",
    )
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

    limits = ServeLimits(
        args.max_body_bytes, args.max_json_depth, args.max_multi_hot_ids, args.header_timeout_s, args.body_timeout_s
    )
    options = ServeOptions(args.max_batch_rows, args.max_wait_ms, args.max_queue, limits=limits)
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
