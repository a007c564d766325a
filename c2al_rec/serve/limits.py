"""Settings of the scoring service: its batching and queue (``ServeOptions``), and what one request may
cost before it is refused (``ServeLimits``), and how it is refused.

Every limit has a ``ServeLimits`` field (a ``c2al-rec serve`` flag) with a documented default, and
every refusal is counted in ``/metrics`` as ``c2al_limit_rejections_total{limit="<name>"}``:

============== ======================= =====================================================================
limit          default                 refusal
============== ======================= =====================================================================
body_bytes     8 MiB                   413 as soon as the declared or received size passes it; the body is
                                       read incrementally and the rest is discarded unread, so the client
                                       still gets the 413
json_depth     16                      400 before the body is parsed (a valid request nests 4 levels)
multi_hot_ids  1024 ids                400 naming the row and feature (per row and multi-hot feature)
body_timeout   30 s                    408 and the connection closed: the body (Content-Length longer than
                                       what was sent, or a stalled upload) did not arrive in time after the
                                       headers; a refused body still arriving then is cut off
                                       (``server.ReadTimeoutProtocol``)
header_timeout 10 s                    408 and the connection closed: the request's headers did not arrive
                                       in time (``server.ReadTimeoutProtocol``)
number_range   float32 / int64         400 naming the row and feature: a dense value beyond float32 (1e39),
                                       an id beyond int64, an integer too long for Python to parse
============== ======================= =====================================================================
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

import numpy as np

LIMIT_NAMES = ("body_bytes", "json_depth", "multi_hot_ids", "body_timeout", "header_timeout", "number_range")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # a dense value beyond it would be inf in the model
INT64_END = 2**63  # ids at or above do not fit int64
_MAX_INT_DIGITS = 40  # integers longer than this are never a valid id or dense value: kept as their length


@dataclass
class ServeLimits:
    """What one request may cost (``c2al-rec serve`` flags; refusals are counted in ``/metrics``)."""

    max_body_bytes: int = 8 << 20
    """Largest request body in bytes; a larger one is answered 413 and discarded unread."""
    max_json_depth: int = 16
    """Deepest nesting of JSON arrays and objects in a request (a valid request nests 4 levels)."""
    max_multi_hot_ids: int = 1024
    """Most ids in one multi-hot feature of one row."""
    header_timeout_s: float = 10.0
    """Seconds a connection may take to send a request's headers (from connecting or from its first byte)."""
    body_timeout_s: float = 30.0
    """Seconds a request may take to send its body after its headers (also a refused body being discarded)."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_json_depth", "max_multi_hot_ids"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {getattr(self, name)}")
        for name in ("header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number of seconds > 0, got {value}")


@dataclass
class ServeOptions:
    """Micro-batching and queue settings of the scoring service (``c2al-rec serve`` flags), and its limits."""

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


class LimitExceeded(Exception):
    """A request passed a limit: answer ``status`` with ``message``; ``limit`` is its name in ``/metrics``."""

    def __init__(self, status: int, limit: str, message: str) -> None:
        super().__init__(message)
        self.status, self.limit = status, limit


Receive = Callable[[], Awaitable[dict]]


async def read_body(scope: dict, receive: Receive, limits: ServeLimits) -> Optional[bytes]:
    """The request body, read chunk by chunk; None if the client went away (or the server's body
    timeout closed the connection, ``server.ReadTimeoutProtocol``).

    Raises:
        LimitExceeded: 413 once the declared ``Content-Length`` or the bytes received pass
            ``max_body_bytes`` (nothing more is read: the server drops the rest of the body as it
            arrives, and the connection stays open so the client reads the answer).
    """
    limit = limits.max_body_bytes
    too_large = LimitExceeded(413, "body_bytes", f"request body over {limit} bytes (--max-body-bytes)")
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = 0  # the HTTP parser rejects a malformed length before the app runs
            if declared > limit:
                raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_OPENERS = np.zeros(256, np.int8)
_OPENERS[[ord("["), ord("{")]] = 1
_OPENERS[[ord("]"), ord("}")]] = -1


def json_depth(raw: bytes) -> int:
    """Deepest nesting of arrays and objects in JSON text, brackets inside strings not counted.

    Linear and vectorised (a quote is escaped by an odd run of backslashes before it), so a body of
    10,000 nested brackets costs microseconds and no recursion. For text that is not valid JSON the
    figure is an estimate; the parser then refuses the text anyway.
    """
    data = np.frombuffer(raw, np.uint8)
    n = data.size
    if n == 0:
        return 0
    quote = data == ord('"')
    if quote.any():
        positions = np.arange(n)
        backslash = data == ord("\\")
        # index of the last non-backslash at or before each position: the run of backslashes before i is
        # (i - 1) - last[i - 1]
        last = np.maximum.accumulate(np.where(backslash, -1, positions))
        run_before = np.empty(n, np.int64)
        run_before[0] = 0
        run_before[1:] = positions[:-1] - last[:-1]
        opening_or_closing = quote & (run_before % 2 == 0)
        inside = (np.cumsum(opening_or_closing) % 2 == 1) | opening_or_closing
        delta = np.where(inside, 0, _OPENERS[data])
    else:
        delta = _OPENERS[data]
    return int(np.cumsum(delta, dtype=np.int64).max(initial=0))


def check_json_depth(raw: bytes, limits: ServeLimits) -> None:
    """Raise ``LimitExceeded`` (400) when ``raw`` nests deeper than ``max_json_depth``.

    The exact figure is computed only when the body holds more brackets than the limit (a one-row
    request does not).
    """
    limit = limits.max_json_depth
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    depth = json_depth(raw)
    if depth > limit:
        raise LimitExceeded(400, "json_depth", f"JSON nested {depth} levels deep; at most {limit} (--max-json-depth)")


class LongInt:
    """A JSON integer with more than ``_MAX_INT_DIGITS`` digits, kept as its digit count (Python refuses to
    convert integers of over 4300 digits, and none of this length is a valid id or dense value)."""

    __slots__ = ("digits",)

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"an integer of {self.digits} digits"


def _parse_int(text: str) -> Any:
    return int(text) if len(text) <= _MAX_INT_DIGITS else LongInt(text)


def loads_with_long_ints(raw: bytes) -> Any:
    """``json.loads`` that keeps over-long integers as ``LongInt`` instead of failing the whole body, so
    the row check can name the row and feature that hold one. Slower than ``json.loads``: used only
    after it failed."""
    return json.loads(raw, parse_int=_parse_int)


def show_number(v: Any) -> str:
    """A number for an error message: an integer of more than 40 digits by its length, not its digits."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**_MAX_INT_DIGITS:
        return f"an integer of {len(str(abs(v)))} digits"
    return repr(v)
