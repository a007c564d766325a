"""Online scoring over HTTP: an ASGI app (FastAPI) around an exported model, with dynamic micro-batching.

    POST /v1/score   {"rows": [{"<feature>": value, ...}, ...]} -> {"prob": [...], "model_id": "..."}
    GET  /healthz    200 once the model is loaded
    GET  /readyz     200 while the batcher runs and its queue has room, else 503
    GET  /metrics    Prometheus text: latency histogram, batch sizes, rejects, queue depth

Requests are validated with the training-time rules (the same ``find_bad_id`` the reader uses)
before they are queued, so one bad request is a 400 naming its row and feature and never fails a
batch. Valid requests wait in a bounded queue; one batcher task merges them into batches of up to
``max_batch_rows`` rows, waiting at most ``max_wait_ms`` for more, and runs the model in one worker
thread. A full queue answers 503 at once (nothing is lost or answered twice: every request gets
exactly one response).

Example::

    app = create_app(load_exported("runs/export"), ServeOptions(max_batch_rows=256, max_wait_ms=2))
    uvicorn.run(app, port=8080)
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from c2al_rec.data.transforms import find_bad_id

from .artifact import ExportedModel
from .predictor import sparse_feature

Inputs = dict[str, torch.Tensor]


@dataclass
class ServeOptions:
    """Micro-batching and queue settings of the scoring service."""

    max_batch_rows: int = 256
    """Most rows the model scores in one call (requests are merged up to this)."""
    max_wait_ms: float = 2.0
    """How long the batcher waits for more requests after the first one of a batch."""
    max_queue: int = 1024
    """Requests waiting at most; beyond it the service answers 503."""
    max_rows_per_request: int = 4096
    """Largest request accepted (400 beyond it)."""

    def __post_init__(self) -> None:
        for name in ("max_batch_rows", "max_queue", "max_rows_per_request"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.max_wait_ms) and self.max_wait_ms >= 0):
            raise ValueError(f"--max-wait-ms must be a finite number >= 0, got {self.max_wait_ms}")


class RequestError(ValueError):
    """A request the model cannot score (HTTP 400); the message names the row and feature."""


class Overloaded(RuntimeError):
    """The queue is full (HTTP 503)."""


# ------------------------------------------------------------------------------------ parsing
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def rows_to_inputs(rows: Any, model: ExportedModel, max_rows: int = 4096) -> Inputs:
    """JSON rows -> the ``predict`` input dict, checked with the training-time rules.

    Args:
        rows: ``[{"<dense>": number, "<single-hot>": int, "<multi-hot>": [int, ...]}, ...]``.

    Returns:
        ``{"dense": float32 [B, D], "<f>.values": int64 [N_f], "<f>.lengths": int64 [B]}``.

    Raises:
        RequestError: not a non-empty list of objects, a missing feature, a wrong type, a
            non-finite dense value, a negative id or an id outside its table under ``error``.
    """
    if not isinstance(rows, list) or not rows:
        raise RequestError("'rows' must be a non-empty list of objects")
    if len(rows) > max_rows:
        raise RequestError(f"{len(rows)} rows in one request; at most {max_rows}")
    dense_names = model.dense_features
    features = [sparse_feature(f) for f in model.sparse_features]
    dense = np.empty((len(rows), len(dense_names)), np.float32)
    values: dict[str, list[int]] = {f.name: [] for f in features}
    lengths = {f.name: np.empty(len(rows), np.int64) for f in features}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(f"row {i}: expected an object of feature values, got {type(row).__name__}")
        for j, name in enumerate(dense_names):
            v = row.get(name)
            if v is None:
                raise RequestError(f"row {i}: missing dense feature '{name}'")
            if not _is_number(v) or not math.isfinite(v):
                raise RequestError(f"row {i}: dense feature '{name}' must be a finite number, got {v!r}")
            dense[i, j] = v
        for f in features:
            v = row.get(f.name)
            if v is None:
                raise RequestError(f"row {i}: missing sparse feature '{f.name}'")
            if f.multi_hot:
                if not isinstance(v, list) or not all(_is_id(x) for x in v):
                    raise RequestError(
                        f"row {i}: multi-hot feature '{f.name}' must be a list of integer ids, got {v!r}"
                    )
                values[f.name].extend(v)
                lengths[f.name][i] = len(v)
            else:
                if not _is_id(v):
                    raise RequestError(f"row {i}: sparse feature '{f.name}' must be an integer id, got {v!r}")
                values[f.name].append(v)
                lengths[f.name][i] = 1
    inputs: Inputs = {"dense": torch.from_numpy(dense)}
    for f in features:
        vals = np.asarray(values[f.name], dtype=np.int64)
        bad = find_bad_id(f, vals, lengths[f.name])
        if bad is not None:
            row, value, what = bad
            raise RequestError(f"row {row}: feature '{f.name}' {what}: id {value}")
        inputs[f"{f.name}.values"] = torch.from_numpy(vals)
        inputs[f"{f.name}.lengths"] = torch.from_numpy(lengths[f.name])
    return inputs


def merge_inputs(parts: list[Inputs]) -> Inputs:
    """Concatenate ``predict`` input dicts row-wise (dense on dim 0, each feature's values and lengths)."""
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


# ------------------------------------------------------------------------------------ batching
@dataclass
class _Pending:
    inputs: Inputs
    rows: int
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Merges queued requests into model calls of up to ``max_batch_rows`` rows.

    Args:
        predict: ``Inputs -> probabilities [B]`` (the exported model's ``predict``).
        options: batch size, wait and queue bound.
        on_batch: called with the row count of every model call (metrics).
    """

    def __init__(self, predict: Any, options: ServeOptions, on_batch: Any = None) -> None:
        self.predict, self.options, self.on_batch = predict, options, on_batch
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=options.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="c2al-score")
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, inputs: Inputs, rows: int) -> torch.Tensor:
        """Queue one request; its probabilities [rows] once scored. Raises Overloaded at once if full."""
        pending = _Pending(inputs, rows, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(pending)
        except asyncio.QueueFull:
            raise Overloaded(f"queue full ({self.options.max_queue} requests waiting)") from None
        return await pending.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Pending | None = None
        while True:
            first = carry or await self.queue.get()
            carry = None
            batch, rows = [first], first.rows
            deadline = loop.time() + self.options.max_wait_ms / 1000
            while rows < self.options.max_batch_rows:
                timeout = deadline - loop.time()
                try:
                    nxt = self.queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self.queue.get(), timeout)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if rows + nxt.rows > self.options.max_batch_rows:
                    carry = nxt  # starts the next batch; a request is never split
                    break
                batch.append(nxt)
                rows += nxt.rows
            try:
                probs = await loop.run_in_executor(self._executor, self._score, [p.inputs for p in batch])
            except Exception as e:  # a model failure answers every request of the batch (500)
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
            if self.on_batch is not None:
                self.on_batch(rows)
            start = 0
            for p in batch:
                if not p.future.done():  # a client that went away has a cancelled future
                    p.future.set_result(probs[start : start + p.rows])
                start += p.rows

    def _score(self, parts: list[Inputs]) -> torch.Tensor:
        with torch.inference_mode():
            return self.predict(merge_inputs(parts) if len(parts) > 1 else parts[0]).float()


# ------------------------------------------------------------------------------------ the app
class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "c2al_score_latency_seconds",
            "Time from receiving a /v1/score request to its response",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "c2al_batch_rows",
            "Rows per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=self.registry,
        )
        self.responses = Counter("c2al_score_responses", "Responses by HTTP status", ["status"], registry=self.registry)
        self.rows = Counter("c2al_scored_rows", "Rows scored", registry=self.registry)
        self.queue_depth = Gauge("c2al_queue_depth", "Requests waiting to be batched", registry=self.registry)


def create_app(model: ExportedModel, options: ServeOptions | None = None) -> FastAPI:
    """The scoring service for a loaded exported model (see the module docstring for the routes)."""
    options = options or ServeOptions()
    metrics = _Metrics()
    mid = model.model_id
    batcher = MicroBatcher(model.module.predict, options, on_batch=metrics.batch_rows.observe)
    metrics.queue_depth.set_function(batcher.queue.qsize)

    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="c2al-rec scoring", lifespan=lifespan)
    app.state.batcher, app.state.metrics, app.state.model_id = batcher, metrics, mid

    def answer(status: int, body: dict[str, Any], t0: float) -> JSONResponse:
        metrics.responses.labels(str(status)).inc()
        metrics.latency.observe(time.perf_counter() - t0)
        return JSONResponse(body, status_code=status)

    @app.post("/v1/score")
    async def score(request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        try:
            body = await request.json()
        except ValueError:
            return answer(400, {"error": "body is not valid JSON"}, t0)
        if not isinstance(body, dict) or "rows" not in body:
            return answer(400, {"error": 'expected a JSON object {"rows": [...]}'}, t0)
        try:
            inputs = rows_to_inputs(body["rows"], model, options.max_rows_per_request)
            probs = await batcher.submit(inputs, len(body["rows"]))
        except RequestError as e:
            return answer(400, {"error": str(e)}, t0)
        except Overloaded as e:
            return answer(503, {"error": str(e)}, t0)
        except Exception as e:  # the model failed: say so, keep serving
            return answer(500, {"error": f"scoring failed: {e}"}, t0)
        metrics.rows.inc(len(probs))
        return answer(200, {"prob": probs.tolist(), "model_id": mid}, t0)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "model_id": mid})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = batcher.running and not batcher.queue.full()
        return JSONResponse({"ready": ready, "queue": batcher.queue.qsize()}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
