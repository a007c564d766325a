"""Online scoring over HTTP: the ASGI app (FastAPI) around an exported model.

    POST /v1/score   {"rows": [{"<feature>": value, ...}, ...]} -> {"prob": [...], "model_id": "..."}
    GET  /healthz    200 once the model is loaded
    GET  /readyz     200 while the batcher runs and its queue has room, else 503
    GET  /metrics    Prometheus text: latency histogram, batch sizes, rejects, queue depth

The parts, each in its own file: request parsing (``request.py``: ``RowParser``, the one parser of
the request format), the micro-batcher (``batcher.py``), the metrics (``metrics.py``), the settings
and per-request limits (``limits.py``: body size, JSON depth, multi-hot length, number ranges; the
read timeouts live in ``server.py``), each refusal counted in ``/metrics``.

The hot path: ``POST /v1/score`` is served by a plain ASGI handler (``ScoreEndpoint``) in front of
FastAPI (and registered as a FastAPI route for what reaches the router); the other routes go through
FastAPI as usual. The body is decoded with ``json``, checked and queued by ``RowParser.parse``, and
responses are encoded as ``JSONResponse`` encodes them.

Example::

    app = create_app(load_exported("runs/export"), ServeOptions(max_batch_rows=256, max_wait_ms=2))
    uvicorn.run(app, port=8080)
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from typing import Any, Awaitable, Callable, Optional

import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .artifact import ExportedModel
from .batcher import MicroBatcher, Overloaded
from .limits import LimitExceeded, ServeLimits, ServeOptions, check_json_depth, loads_with_long_ints, read_body
from .metrics import ServeMetrics
from .request import Inputs, RequestError, RowParser


def _json(obj: Any) -> bytes:
    """JSON bytes exactly as Starlette's ``JSONResponse`` renders them."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


SCORE_PATH = "/v1/score"
Send = Callable[[dict], Awaitable[None]]


class ScoreEndpoint:
    """``POST /v1/score`` as a plain ASGI callable: read, parse, check, queue, answer (see the module docstring)."""

    def __init__(self, parser: RowParser, batcher: MicroBatcher, metrics: ServeMetrics, limits: ServeLimits) -> None:
        self.parser, self.batcher, self.metrics, self.limits = parser, batcher, metrics, limits
        self.model_id = parser.model.model_id

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Send) -> None:
        if scope["method"] != "POST":
            body = _json({"detail": "Method Not Allowed"})
            await _respond(send, 405, body, ((b"allow", b"POST"),))
            return
        t0 = time.perf_counter()
        try:
            raw = await read_body(scope, receive, self.limits)
            if raw is None:
                return  # the client went away before sending its body: no one to answer
            check_json_depth(raw, self.limits)
        except LimitExceeded as e:  # answered before the body is (fully) read: the server drops the rest
            self.metrics.limit(e.limit)
            self.metrics.answered(e.status, t0)
            await _respond(send, e.status, _json({"error": str(e)}))
            return
        status, answer = await self._answer(raw)
        try:
            body = _json(answer)
        except ValueError as e:  # a NaN probability: say so rather than send invalid JSON
            status, body = 500, _json({"error": f"scoring failed: {e}"})
        self.metrics.answered(status, t0)
        await _respond(send, status, body)

    async def _answer(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        try:
            payload = json.loads(raw)
        except RecursionError:  # only with a --max-json-depth beyond Python's recursion limit
            self.metrics.limit("json_depth")
            return 400, {"error": "JSON nested too deep to parse"}
        except ValueError:
            try:  # e.g. a 5,000-digit integer: parse it as its length so the row check names row and feature
                payload = loads_with_long_ints(raw)
            except (ValueError, RecursionError):
                return 400, {"error": "body is not valid JSON"}
        if not isinstance(payload, dict) or "rows" not in payload:
            return 400, {"error": 'expected a JSON object {"rows": [...]}'}
        try:
            parsed = self.parser.parse(payload["rows"])
            probs = await self.batcher.submit(parsed, parsed.n)
        except RequestError as e:
            if e.limit is not None:
                self.metrics.limit(e.limit)
            return 400, {"error": str(e)}
        except Overloaded as e:
            return 503, {"error": str(e)}
        except Exception as e:  # the model failed: say so, keep serving
            return 500, {"error": f"scoring failed: {e}"}
        self.metrics.rows.inc(len(probs))
        return 200, {"prob": probs, "model_id": self.model_id}


async def _respond(send: Send, status: int, body: bytes, extra: tuple = ()) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ScoringApp(FastAPI):
    """FastAPI whose ``/v1/score`` is answered by ``ScoreEndpoint`` before FastAPI's routing and middleware."""

    score_endpoint: Optional[ScoreEndpoint] = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.score_endpoint is not None and scope["type"] == "http" and scope["path"] == SCORE_PATH:
            await self.score_endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _warm_up(model: ExportedModel) -> None:
    """Before the server accepts requests: run the model on a batch of 1 and of 8 rows (TorchScript's
    profiling executor optimises the graph on its first calls, which take ~1 s), then move every object
    alive after start-up out of the garbage collector's reach (``gc.freeze``), so that a full collection
    during serving walks only the objects of requests, not the ~400k of torch and the model."""
    sample = model.probe_input()
    with torch.inference_mode():
        for _ in range(2):
            model.module.predict(sample)
            model.module.predict(_first_row(sample, model))
    gc.collect()
    gc.freeze()


def _first_row(inputs: Inputs, model: ExportedModel) -> Inputs:
    out = {"dense": inputs["dense"][:1]}
    for f in model.sparse_features:
        lengths = inputs[f"{f['name']}.lengths"]
        out[f"{f['name']}.values"] = inputs[f"{f['name']}.values"][: int(lengths[0])]
        out[f"{f['name']}.lengths"] = lengths[:1]
    return out


def create_app(model: ExportedModel, options: ServeOptions | None = None) -> FastAPI:
    """The scoring service for a loaded exported model (see the module docstring for the routes)."""
    options = options or ServeOptions()
    metrics = ServeMetrics()
    mid = model.model_id
    parser = RowParser(model, options.max_rows_per_request, options.limits.max_multi_hot_ids)
    batcher = MicroBatcher(model.module.predict, options, on_batch=metrics.batch_rows.observe, collate=parser.collate)
    metrics.queue_depth.set_function(batcher.qsize)

    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        await asyncio.get_running_loop().run_in_executor(batcher._executor, _warm_up, model)
        batcher.start()
        yield
        await batcher.stop()

    app = ScoringApp(title="c2al-rec scoring", lifespan=lifespan)
    app.score_endpoint = ScoreEndpoint(parser, batcher, metrics, options.limits)
    # also a route, for what reaches the router (e.g. "/v1/score/" redirects here); the exact path never does
    app.router.add_route(SCORE_PATH, app.score_endpoint, methods=["POST"], include_in_schema=False)
    app.state.batcher, app.state.metrics, app.state.model_id = batcher, metrics, mid

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "model_id": mid})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = batcher.running and not batcher.full()
        return JSONResponse({"ready": ready, "queue": batcher.qsize()}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
