"""Run the scoring app under uvicorn with connection-level time limits uvicorn lacks.

uvicorn closes idle keep-alive connections, but a connection that sends part of its headers and
stalls stays open, and a refused request's body (413) is discarded for as long as the client
trickles it. ``HeaderTimeoutProtocol`` (uvicorn's httptools protocol plus two timers) closes both:

- headers: from the connection's start, or a request's first byte, to the end of its headers at most
  ``header_timeout_s``; otherwise the client gets a 408 and the connection is closed;
- a body still arriving after the response was sent (the app answered early, e.g. 413 without
  reading it): the rest must arrive within ``body_timeout_s``, or the connection is closed.

The app itself limits the time to read a body it wants (``limits.read_body``). Each timeout is
counted in ``/metrics`` (``c2al_limit_rejections_total{limit="header_timeout"|"body_timeout"}``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .limits import ServeLimits

_HEADER_TIMEOUT_BODY = b'{"error":"request headers not received in time (--header-timeout-s)"}'
_HEADER_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_HEADER_TIMEOUT_BODY), _HEADER_TIMEOUT_BODY)
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout and a timeout on discarding a refused body.

    Configured by subclassing (``header_timeout_protocol``): ``limits`` and ``on_limit`` (called with
    the limit's name when a timer fires) are class attributes.
    """

    limits: ServeLimits = ServeLimits()
    on_limit: Callable[[str], Any] = staticmethod(lambda name: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: Optional[asyncio.TimerHandle] = None
        self._discard_timer: Optional[asyncio.TimerHandle] = None
        self._in_body = False  # between a request's headers and the end of its body

    # the connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and not self._in_body:
            self._arm_header_timer()  # the first byte of a request on a kept-alive connection
        super().data_received(data)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    # the parser's callbacks
    def on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._discard_timer is not None:
            self._discard_timer.cancel()
            self._discard_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_body and self._discard_timer is None and not self.transport.is_closing():
            self._discard_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)

    # timers
    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_timed_out)

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.on_limit("header_timeout")
            self.transport.write(_HEADER_TIMEOUT_RESPONSE)
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._discard_timer = None
        if not self.transport.is_closing():
            self.on_limit("body_timeout")
            self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._discard_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._discard_timer = None


def header_timeout_protocol(limits: ServeLimits, on_limit: Callable[[str], Any]) -> type[HeaderTimeoutProtocol]:
    """A ``HeaderTimeoutProtocol`` bound to ``limits`` and a metrics callback, for ``uvicorn.Config(http=...)``."""
    bound = {"limits": limits, "on_limit": staticmethod(on_limit)}
    return type("BoundHeaderTimeoutProtocol", (HeaderTimeoutProtocol,), bound)


def run_server(app: Any, host: str, port: int, limits: ServeLimits, on_limit: Callable[[str], Any]) -> None:
    """Serve ``app`` on ``host:port`` until interrupted, with the header and discard timeouts of ``limits``."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        http=header_timeout_protocol(limits, on_limit),
    )
    uvicorn.Server(config).run()
