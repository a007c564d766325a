"""Online scoring over HTTP: an ASGI app (FastAPI) around an exported model, with dynamic micro-batching.

    POST /v1/score   {"rows": [{"<feature>": value, ...}, ...]} -> {"prob": [...], "model_id": "..."}
    GET  /healthz    200 once the model is loaded
    GET  /readyz     200 while the batcher runs and its queue has room, else 503
    GET  /metrics    Prometheus text: latency histogram, batch sizes, rejects, queue depth

Requests are validated with the training-time rules (the same ``find_bad_id`` the reader uses)
before they are queued, so one bad request is a 400 naming its row and feature and never fails a
batch. Valid requests wait in a bounded queue; one batcher task merges them into batches of up to
``max_batch_rows`` rows, waiting at most ``max_wait_ms`` (counted from the arrival of the batch's
first request) for more, and runs the model in one worker thread. A full queue answers 503 at once
(nothing is lost or answered twice: every request gets exactly one response).

What one request may cost is bounded by ``ServeLimits`` (``limits.py``: body size, JSON depth,
multi-hot length, number ranges; the read timeouts live in ``server.py``), each refusal counted in
``/metrics``.

The hot path: ``POST /v1/score`` is served by a plain ASGI handler (``ScoreEndpoint``) in front of
FastAPI; the other routes go through FastAPI as usual. The body is decoded with ``json``, each row
is checked in plain Python by ``RowParser`` (no NumPy or torch call per request; a request that
fails a check is re-checked by ``rows_to_inputs``, so the 400 message names the first bad row and
feature exactly as before), and the rows of a whole micro-batch become the ``predict`` tensors in
one step in the scoring thread (``RowParser.collate``: one array for the dense values, one for all
single-hot ids). Probabilities come back as one list per batch, sliced per request, and responses
are encoded as ``JSONResponse`` encodes them.

Example::

    app = create_app(load_exported("runs/export"), ServeOptions(max_batch_rows=256, max_wait_ms=2))
    uvicorn.run(app, port=8080)
"""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, Sequence

import numpy as np
import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from c2al_rec.data.transforms import find_bad_id

from .artifact import ExportedModel
from .limits import (
    FLOAT32_MAX,
    INT64_END,
    LIMIT_NAMES,
    LimitExceeded,
    LongInt,
    ServeLimits,
    check_json_depth,
    loads_with_long_ints,
    read_body,
    show_number,
)
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
    limits: ServeLimits = field(default_factory=ServeLimits)
    """Body size, JSON depth, multi-hot length and read timeouts of one request (``limits.py``)."""

    def __post_init__(self) -> None:
        for name in ("max_batch_rows", "max_queue", "max_rows_per_request"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.max_wait_ms) and self.max_wait_ms >= 0):
            raise ValueError(f"--max-wait-ms must be a finite number >= 0, got {self.max_wait_ms}")


class RequestError(ValueError):
    """A request the model cannot score (HTTP 400); the message names the row and feature.

    ``limit``: the ``ServeLimits`` limit it passed (its name in ``/metrics``), if any.
    """

    def __init__(self, message: str, limit: Optional[str] = None) -> None:
        super().__init__(message)
        self.limit = limit


class Overloaded(RuntimeError):
    """The queue is full (HTTP 503)."""


# ------------------------------------------------------------------------------------ parsing
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number_error(i: int, name: str, v: Any) -> Optional[RequestError]:
    """A dense value that is a finite number but does not fit float32 (1e39, a 400-digit integer)."""
    if type(v) is float:
        too_big = math.isfinite(v) and not -FLOAT32_MAX <= v <= FLOAT32_MAX
    else:  # compared as integers: no float conversion that could overflow
        too_big = isinstance(v, LongInt) or (_is_id(v) and not -FLOAT32_MAX <= v <= FLOAT32_MAX)
    if too_big:
        return RequestError(
            f"row {i}: dense feature '{name}' = {show_number(v)} does not fit float32 (|x| <= {FLOAT32_MAX:.8g})",
            limit="number_range",
        )
    return None


def _id_error(i: int, name: str, v: Any) -> Optional[RequestError]:
    """An integer id that does not fit int64 (2**63 and above, an integer too long to parse)."""
    if isinstance(v, LongInt) or (_is_id(v) and not -INT64_END <= v < INT64_END):
        return RequestError(
            f"row {i}: feature '{name}' id {show_number(v)} does not fit int64 (ids must be < 2**63)",
            limit="number_range",
        )
    return None


def rows_to_inputs(
    rows: Any, model: ExportedModel, max_rows: int = 4096, max_multi_hot_ids: Optional[int] = None
) -> Inputs:
    """JSON rows -> the ``predict`` input dict, checked with the training-time rules.

    Args:
        rows: ``[{"<dense>": number, "<single-hot>": int, "<multi-hot>": [int, ...]}, ...]``; features
            the model does not take are ignored.
        max_multi_hot_ids: most ids in one multi-hot feature of one row (None: no limit).

    Returns:
        ``{"dense": float32 [B, D], "<f>.values": int64 [N_f], "<f>.lengths": int64 [B]}``.

    Raises:
        RequestError: not a non-empty list of objects, a missing feature, a wrong type, a
            non-finite dense value or one beyond float32, an id beyond int64, a negative id or an id
            outside its table under ``error``, a multi-hot list over ``max_multi_hot_ids``.
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
            bad = _number_error(i, name, v)
            if bad is not None:
                raise bad
            if not _is_number(v) or not math.isfinite(v):
                raise RequestError(f"row {i}: dense feature '{name}' must be a finite number, got {v!r}")
            dense[i, j] = v
        for f in features:
            v = row.get(f.name)
            if v is None:
                raise RequestError(f"row {i}: missing sparse feature '{f.name}'")
            if f.multi_hot:
                if isinstance(v, list) and max_multi_hot_ids is not None and len(v) > max_multi_hot_ids:
                    raise RequestError(
                        f"row {i}: multi-hot feature '{f.name}' has {len(v)} ids; at most {max_multi_hot_ids} "
                        f"per row (--max-multi-hot-ids)",
                        limit="multi_hot_ids",
                    )
                for x in v if isinstance(v, list) else ():
                    bad = _id_error(i, f.name, x)
                    if bad is not None:
                        raise bad
                if not isinstance(v, list) or not all(_is_id(x) for x in v):
                    raise RequestError(
                        f"row {i}: multi-hot feature '{f.name}' must be a list of integer ids, got {v!r}"
                    )
                values[f.name].extend(v)
                lengths[f.name][i] = len(v)
            else:
                bad = _id_error(i, f.name, v)
                if bad is not None:
                    raise bad
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


class _Bad(Exception):
    """A row failed a fast check; ``rows_to_inputs`` then finds the message."""


class ParsedRows:
    """One request's rows, checked, as Python lists (``RowParser.parse``; ``RowParser.collate`` merges them).

    ``dense``: one list of D numbers per row; ``single``: one list of the single-hot ids per row (in
    the model's feature order); ``multi``: per multi-hot feature, one list of ids per row.
    """

    __slots__ = ("n", "dense", "single", "multi")

    def __init__(self, n: int, dense: list, single: list, multi: list) -> None:
        self.n, self.dense, self.single, self.multi = n, dense, single, multi


class RowParser:
    """JSON rows -> checked ``ParsedRows`` per request, and a micro-batch of them -> ``predict`` inputs.

    Accepts and rejects exactly what ``rows_to_inputs`` does, with the same 400 messages; it is the
    per-request hot path of the service, so the checks are plain Python on the decoded JSON values
    and the tensors are built once per micro-batch (``collate``) instead of once per request.
    """

    def __init__(self, model: ExportedModel, max_rows: int = 4096, max_multi_hot_ids: Optional[int] = None) -> None:
        self.model, self.max_rows, self.max_multi_hot_ids = model, max_rows, max_multi_hot_ids
        self.dense_names: list[str] = list(model.dense_features)
        features = [sparse_feature(f) for f in model.sparse_features]

        def limit(f: Any) -> int:  # ids must lie in [0, limit)
            return f.num_embeddings if f.out_of_range == "error" else INT64_END

        self.single = [(f.name, limit(f)) for f in features if not f.multi_hot]
        self.multi = [(f.name, limit(f)) for f in features if f.multi_hot]
        # the predict dict's keys in rows_to_inputs' order: (feature, is multi-hot, index in its group)
        si = mi = 0
        self._order: list[tuple[str, bool, int]] = []
        for f in features:
            if f.multi_hot:
                self._order.append((f.name, True, mi))
                mi += 1
            else:
                self._order.append((f.name, False, si))
                si += 1

    def parse(self, rows: Any) -> ParsedRows:
        """Check ``rows`` (the request's ``"rows"``); raises ``RequestError`` as ``rows_to_inputs`` would."""
        try:
            return self._parse(rows)
        except _Bad:
            pass
        try:  # the full check finds the first bad row and feature and says what is wrong
            rows_to_inputs(rows, self.model, self.max_rows, self.max_multi_hot_ids)
        except RequestError:
            raise
        except (OverflowError, ValueError, TypeError) as e:  # e.g. an integer too large for int64
            raise RequestError(f"a value does not fit the model's types: {e}") from None
        raise RequestError("rows rejected")  # not reached: the fast checks are the full checks' rules

    def _parse(self, rows: Any) -> ParsedRows:
        if type(rows) is not list or not rows or len(rows) > self.max_rows:
            raise _Bad
        dense_names, single, multi = self.dense_names, self.single, self.multi
        max_ids = self.max_multi_hot_ids if self.max_multi_hot_ids is not None else INT64_END
        dense_rows, single_rows = [], []
        multi_rows: list[list] = [[] for _ in multi]
        for row in rows:
            if type(row) is not dict:
                raise _Bad
            get = row.get
            d = [get(name) for name in dense_names]
            for v in d:
                t = type(v)
                # NaN and +-inf fail the range check too; bool, None, str, ... are rejected
                if (t is not float and t is not int) or not -FLOAT32_MAX <= v <= FLOAT32_MAX:
                    raise _Bad
            s = [get(name) for name, _ in single]
            for v, (_, hi) in zip(s, single):
                if type(v) is not int or not 0 <= v < hi:
                    raise _Bad
            for k, (name, hi) in enumerate(multi):
                ids = get(name)
                if type(ids) is not list or len(ids) > max_ids:
                    raise _Bad
                for v in ids:
                    if type(v) is not int or not 0 <= v < hi:
                        raise _Bad
                multi_rows[k].append(ids)
            dense_rows.append(d)
            single_rows.append(s)
        return ParsedRows(len(rows), dense_rows, single_rows, multi_rows)

    def collate(self, parts: Sequence[ParsedRows]) -> Inputs:
        """The ``predict`` input dict of several requests' rows, in order (what ``rows_to_inputs`` of all gives)."""
        n = sum(p.n for p in parts)
        if len(parts) == 1:
            dense_rows, single_rows = parts[0].dense, parts[0].single
        else:
            dense_rows = [r for p in parts for r in p.dense]
            single_rows = [r for p in parts for r in p.single]
        inputs: Inputs = {"dense": torch.from_numpy(np.array(dense_rows, np.float32).reshape(n, len(self.dense_names)))}
        single = np.array(single_rows, np.int64).reshape(n, len(self.single)).T.copy()  # [S, n]: one row per feature
        ones = torch.ones(n, dtype=torch.int64) if self.single else None
        for name, is_multi, k in self._order:
            if is_multi:
                lists = parts[0].multi[k] if len(parts) == 1 else [x for p in parts for x in p.multi[k]]
                lengths = np.fromiter(map(len, lists), np.int64, n)
                values = np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(lengths.sum()))
                inputs[f"{name}.values"] = torch.from_numpy(values)
                inputs[f"{name}.lengths"] = torch.from_numpy(lengths)
            else:
                inputs[f"{name}.values"] = torch.from_numpy(single[k])
                inputs[f"{name}.lengths"] = ones  # type: ignore[assignment]
        return inputs


# ------------------------------------------------------------------------------------ batching
@dataclass
class _Pending:
    item: Any
    rows: int
    future: asyncio.Future = field(repr=False)
    arrived: float


def _merge_or_pass(parts: list[Inputs]) -> Inputs:
    return parts[0] if len(parts) == 1 else merge_inputs(parts)


def _wake(fut: Optional[asyncio.Future]) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class MicroBatcher:
    """Merges queued requests into model calls of up to ``max_batch_rows`` rows.

    A batch starts with the oldest waiting request and takes the following ones in arrival order
    while they fit (a request is never split; one larger than ``max_batch_rows`` is scored alone).
    If fewer than ``max_batch_rows`` rows wait, the batcher waits for more until ``max_wait_ms``
    after the first request's arrival, so under load (requests that queued while the model was
    busy) a batch goes at once and with a single client a request waits at most ``max_wait_ms``.

    Args:
        predict: ``Inputs -> probabilities [B]`` (the exported model's ``predict``).
        options: batch size, wait and queue bound.
        on_batch: called with the row count of every model call (metrics).
        collate: the submitted items of one batch -> ``predict``'s input (run in the scoring
            thread); by default the items are ``Inputs`` dicts, concatenated row-wise.
    """

    def __init__(
        self,
        predict: Callable[[Any], torch.Tensor],
        options: ServeOptions,
        on_batch: Optional[Callable[[int], Any]] = None,
        collate: Callable[[list], Any] = _merge_or_pass,
    ) -> None:
        self.predict, self.options, self.on_batch, self.collate = predict, options, on_batch, collate
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._idle: Optional[asyncio.Future] = None  # set while waiting for any request
        self._filling: Optional[asyncio.Future] = None  # set while waiting for max_batch_rows rows
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="c2al-score")
        self._task: Optional[asyncio.Task] = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def qsize(self) -> int:
        """Requests waiting for a batch (the one being scored not counted)."""
        return len(self._queue)

    def full(self) -> bool:
        return len(self._queue) >= self.options.max_queue

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue:  # answered, not lost: the handlers turn this into a 503
            p = self._queue.popleft()
            if not p.future.done():
                p.future.set_exception(Overloaded("the service is shutting down"))
        self._queued_rows = 0
        self._executor.shutdown(wait=True)

    async def submit(self, item: Any, rows: int) -> list[float]:
        """Queue one request; its probabilities (``rows`` floats) once scored. Raises Overloaded at once if full."""
        if len(self._queue) >= self.options.max_queue:
            raise Overloaded(f"queue full ({self.options.max_queue} requests waiting)")
        loop = asyncio.get_running_loop()
        pending = _Pending(item, rows, loop.create_future(), loop.time())
        self._queue.append(pending)
        self._queued_rows += rows
        _wake(self._idle)
        if self._queued_rows >= self.options.max_batch_rows:
            _wake(self._filling)
        return await pending.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue, max_rows = self._queue, self.options.max_batch_rows
        max_wait = self.options.max_wait_ms / 1000
        while True:
            if not queue:
                self._idle = loop.create_future()
                try:
                    await self._idle
                finally:
                    self._idle = None
                continue
            remaining = queue[0].arrived + max_wait - loop.time()
            if remaining > 0 and self._queued_rows < max_rows:
                self._filling = fut = loop.create_future()
                timer = loop.call_later(remaining, _wake, fut)
                try:
                    await fut
                finally:
                    timer.cancel()
                    self._filling = None
            batch: list[_Pending] = []
            rows = 0
            while queue and (not batch or rows + queue[0].rows <= max_rows):
                p = queue.popleft()
                self._queued_rows -= p.rows
                if p.future.done():  # its client went away (cancelled): nothing to score
                    continue
                batch.append(p)
                rows += p.rows
            if not batch:
                continue
            try:
                probs = await loop.run_in_executor(self._executor, self._score, [p.item for p in batch])
            except asyncio.CancelledError:  # stopped while scoring: the batch is answered too (503)
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(Overloaded("the service is shutting down"))
                raise
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

    def _score(self, items: list) -> list[float]:
        with torch.inference_mode():
            return self.predict(self.collate(items)).float().tolist()


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
        self.limit_rejections = Counter(
            "c2al_limit_rejections", "Requests refused by a serving limit", ["limit"], registry=self.registry
        )
        self._by_limit = {name: self.limit_rejections.labels(name) for name in LIMIT_NAMES}  # all shown from 0
        self._by_status: dict[int, Any] = {}

    def limit(self, name: str) -> None:
        """Count one request refused by the limit ``name`` (one of ``LIMIT_NAMES``)."""
        self._by_limit[name].inc()

    def answered(self, status: int, t0: float) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.responses.labels(str(status))
        child.inc()
        self.latency.observe(time.perf_counter() - t0)


def _json(obj: Any) -> bytes:
    """JSON bytes exactly as Starlette's ``JSONResponse`` renders them."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


SCORE_PATH = "/v1/score"
Send = Callable[[dict], Awaitable[None]]


class ScoreEndpoint:
    """``POST /v1/score`` as a plain ASGI callable: read, parse, check, queue, answer (see the module docstring)."""

    def __init__(self, parser: RowParser, batcher: MicroBatcher, metrics: _Metrics, limits: ServeLimits) -> None:
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
    metrics = _Metrics()
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
