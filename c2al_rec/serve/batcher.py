"""The micro-batcher of the scoring service: queued requests -> model calls of up to ``max_batch_rows`` rows.

Valid requests wait in a bounded queue; one batcher task merges them into batches of up to
``max_batch_rows`` rows, waiting at most ``max_wait_ms`` (counted from the arrival of the batch's
first request) for more, and runs the model in one worker thread. A full queue answers 503 at once
(nothing is lost or answered twice: every request gets exactly one response). Probabilities come
back as one list per batch, sliced per request.
"""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from .limits import ServeOptions
from .request import Inputs


class Overloaded(RuntimeError):
    """The queue is full (HTTP 503)."""


def merge_inputs(parts: list[Inputs]) -> Inputs:
    """Concatenate ``predict`` input dicts row-wise (dense on dim 0, each feature's values and lengths)."""
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


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
