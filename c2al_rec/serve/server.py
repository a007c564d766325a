"""Run the scoring app under uvicorn with the read timeouts uvicorn lacks.

uvicorn closes idle keep-alive connections, but a connection that sends part of its headers and
stalls stays open, a body shorter than its ``Content-Length`` is waited for forever, and a refused
request's body (413) is discarded for as long as the client trickles it. ``ReadTimeoutProtocol``
(uvicorn's httptools protocol plus two deadlines) ends each of them:

- headers: complete within ``header_timeout_s`` of the connection's start or of a request's first
  byte, else a 408 and the connection is closed;
- body: complete within ``body_timeout_s`` of the end of its headers, else a 408 (or, when the app
  already answered, e.g. a 413 without reading the body, nothing more) and the connection is closed.

A deadline is a float per connection, checked by one sweep per server a few times per timeout, so a
request costs no timer of its own. Each timeout is counted in ``/metrics``
(``c2al_limit_rejections_total{limit="header_timeout"|"body_timeout"}``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .limits import ServeLimits


def _timeout_response(message: str) -> bytes:
    body = b'{"error":"%s"}' % message.encode()
    head = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    return head + b"connection: close\r\n\r\n" + body


class ReadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body read deadlines (see the module docstring).

    Configured by subclassing (``read_timeout_protocol``): ``limits`` and ``on_limit`` (called with
    the limit's name when a deadline passes) are class attributes.
    """

    limits: ServeLimits = ServeLimits()
    on_limit: Callable[[str], Any] = staticmethod(lambda name: None)
    _sweeping: set = set()  # event loops with a sweep scheduled (one per server process)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: Optional[float] = None
        self._body_deadline: Optional[float] = None

    # the connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline = self.loop.time() + self.limits.header_timeout_s
        if self.loop not in self._sweeping:
            self._sweeping.add(self.loop)
            self.loop.call_later(self._sweep_interval(), self._sweep)

    def data_received(self, data: bytes) -> None:
        if self._header_deadline is None and self._body_deadline is None:
            self._header_deadline = self.loop.time() + self.limits.header_timeout_s  # a request's first byte
        super().data_received(data)

    # the parser's callbacks
    def on_headers_complete(self) -> None:
        self._header_deadline = None
        self._body_deadline = self.loop.time() + self.limits.body_timeout_s
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_deadline = None
        super().on_message_complete()

    # the deadlines
    def _sweep_interval(self) -> float:
        return min(1.0, max(0.05, min(self.limits.header_timeout_s, self.limits.body_timeout_s) / 5))

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self.connections):
            if isinstance(conn, ReadTimeoutProtocol) and not conn.transport.is_closing():
                conn._check_deadlines(now)
        if self.connections:
            self.loop.call_later(self._sweep_interval(), self._sweep)
        else:
            self._sweeping.discard(self.loop)  # the next connection schedules it again

    def _check_deadlines(self, now: float) -> None:
        if self._header_deadline is not None and now >= self._header_deadline:
            self.on_limit("header_timeout")
            self.transport.write(_timeout_response("request headers not received in time (--header-timeout-s)"))
            self.transport.close()
        elif self._body_deadline is not None and now >= self._body_deadline:
            self.on_limit("body_timeout")
            if self.cycle is not None and not self.cycle.response_started:
                self.transport.write(
                    _timeout_response(
                        f"request body not received within {self.limits.body_timeout_s:g} s (--body-timeout-s)"
                    )
                )
            self.transport.close()  # the app's receive() then returns http.disconnect


def read_timeout_protocol(limits: ServeLimits, on_limit: Callable[[str], Any]) -> type[ReadTimeoutProtocol]:
    """A ``ReadTimeoutProtocol`` bound to ``limits`` and a metrics callback, for ``uvicorn.Config(http=...)``."""
    bound = {"limits": limits, "on_limit": staticmethod(on_limit)}
    return type("BoundReadTimeoutProtocol", (ReadTimeoutProtocol,), bound)


def run_server(app: Any, host: str, port: int, limits: ServeLimits, on_limit: Callable[[str], Any]) -> None:
    """Serve ``app`` on ``host:port`` until interrupted, with the read timeouts of ``limits``."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, http=read_timeout_protocol(limits, on_limit)
    )
    uvicorn.Server(config).run()
