"""A closed-loop HTTP/1.1 load generator that costs the machine little: the client side of serving_http.

(An httpx client spent most of a 2-core machine itself.) Requests are encoded once up front; each worker process
drives its non-blocking keep-alive connections from one ``selectors`` loop, one request in flight per connection
(send, read the whole response, send the next), parsing only the status line and ``Content-Length``. Latency runs
from ``send`` to the response's last byte. Connection ``c`` of ``connections`` sends requests ``c, c + connections,
...`` (cycling), so every answer's index names its request. Every request sent is counted once: one answered by a
closed connection, or not within ``timeout_s``, is recorded with status 0 and the connection reopened.
``client_cpu_us``: the generator's own CPU per request (all worker processes), what it adds to a shared machine.
Used as a library: ``from benchmarks.loadgen import encode_posts, run_load``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import resource
import selectors
import socket
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def encode_posts(host: str, port: int, path: str, bodies: Iterable[object]) -> list[bytes]:
    """HTTP/1.1 keep-alive ``POST path`` requests with JSON bodies (objects, or bytes already encoded)."""
    out = []
    for body in bodies:
        data = body if isinstance(body, (bytes, bytearray)) else json.dumps(body, separators=(",", ":")).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        out.append(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return out


@dataclass
class Answer:
    """One request's outcome: its index in the request list, the HTTP status (0: none), latency, body."""

    index: int
    status: int
    latency_s: float
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class LoadResult:
    """Everything a run measured (answers in completion order per connection)."""

    answers: list[Answer] = field(default_factory=list)
    sent: int = 0
    wall_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def qps(self) -> float:
        """Requests answered 200 per second of wall time."""
        return sum(a.status == 200 for a in self.answers) / max(self.wall_s, 1e-9)

    @property
    def client_cpu_us(self) -> float:
        """CPU the load generator used per request sent (µs)."""
        return self.client_cpu_s / max(self.sent, 1) * 1e6

    def status_counts(self) -> dict[int, int]:
        return dict(Counter(a.status for a in self.answers))

    def percentile_ms(self, q: float, status: Optional[int] = None) -> float:
        """Latency percentile (ms, linear interpolation between ranks) of all answers or of one status."""
        latency = [a.latency_s for a in self.answers if status is None or a.status == status]
        return float(np.percentile(latency, q) * 1000) if latency else float("nan")


class _Conn:
    """One connection's state: its next request, the request in flight (``index``, -1: none) and its response."""

    __slots__ = ("sock", "next_req", "buf", "t0", "index", "need", "status", "body_at")

    def __init__(self, slot: int) -> None:
        self.next_req, self.index = slot, -1


def _drive(
    host: str, port: int, requests: Sequence[bytes], slots: Sequence[int], stride: int, start_at: float,
    seconds: float, timeout_s: float,
) -> tuple[list[tuple[int, int, float, bytes]], int, float, float]:  # fmt: skip
    """One process's event loop over connections ``slots``: (answers, sent, time of the last answer, CPU seconds
    (user + system) this process spent in it)."""
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    sel = selectors.DefaultSelector()
    answers: list[tuple[int, int, float, bytes]] = []
    perf, stop, n = time.perf_counter, start_at + seconds, len(requests)
    sent, last = 0, start_at

    def connect(c: _Conn) -> None:
        c.sock = socket.create_connection((host, port), timeout=30)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)

    def send(c: _Conn) -> None:
        nonlocal sent
        c.index, c.next_req = c.next_req % n, c.next_req + stride
        c.buf, c.need, c.status = b"", -1, 0
        data = requests[c.index]
        c.t0 = perf()
        k = c.sock.send(data)
        if k < len(data):  # the socket buffer was full: finish blocking (rare, requests are small)
            c.sock.setblocking(True)
            c.sock.sendall(data[k:])
            c.sock.setblocking(False)
        sent += 1

    def answered(c: _Conn, status: int = 0, body: bytes = b"") -> bool:
        """Record the answer to ``c``'s request (status 0: none; the connection is reopened); send the next
        request, or retire ``c`` (False) past the deadline."""
        nonlocal last
        now = perf()
        answers.append((c.index, status, now - c.t0, body))
        c.index = -1
        if status:
            last = now
        else:
            sel.unregister(c.sock)
            c.sock.close()
            connect(c)
        if now < stop:
            send(c)
        return now < stop

    conns = [_Conn(s) for s in slots]
    for c in conns:
        connect(c)
    time.sleep(max(start_at - perf(), 0))
    for c in conns:
        send(c)
    active, next_scan = len(conns), start_at + 1.0
    while active:
        events = sel.select(timeout=1.0)
        if perf() >= next_scan:  # once a second: a request without any answer for timeout_s is status 0
            next_scan = perf() + 1.0
            active -= sum(not answered(c) for c in conns if c.index >= 0 and perf() - c.t0 > timeout_s)
        for key, _ in events:
            c = key.data
            try:
                chunk = c.sock.recv(262144)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if not chunk:  # the server closed the connection: no answer to the request in flight
                if c.index >= 0:
                    active -= not answered(c)
                else:
                    sel.unregister(c.sock)
                continue
            c.buf += chunk
            if c.need < 0 and (end := c.buf.find(b"\r\n\r\n")) >= 0:  # the head is in: status and length
                length = CONTENT_LENGTH.search(c.buf, 0, end)
                if length is None:
                    raise RuntimeError(f"response without Content-Length: {bytes(c.buf[:end])!r}")
                c.status, c.body_at, c.need = int(c.buf[9:12]), end + 4, end + 4 + int(length[1])
            if 0 <= c.need <= len(c.buf):
                active -= not answered(c, c.status, c.buf[c.body_at : c.need])
    sel.close()
    for c in conns:
        c.sock.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return answers, sent, last, usage.ru_utime - usage0.ru_utime + usage.ru_stime - usage0.ru_stime


def run_load(
    host: str, port: int, requests: Sequence[bytes], connections: int, seconds: float, processes: int = 1,
    timeout_s: float = 60.0,
) -> LoadResult:  # fmt: skip
    """Drive ``connections`` closed-loop keep-alive connections for ``seconds`` from ``processes`` processes.
    Each connection stops sending at the deadline and waits for its request in flight, so every request sent
    is in ``answers`` exactly once (status 0 where no answer came within ``timeout_s`` or the connection closed)."""
    if connections < 1 or processes < 1:
        raise ValueError("connections and processes must be >= 1")
    processes = min(processes, connections)
    start_at = time.perf_counter() + 0.2 + 0.02 * connections  # connect everything first, then start together
    args = [(host, port, requests, range(p, connections, processes), connections, start_at, seconds, timeout_s)
            for p in range(processes)]  # fmt: skip
    if processes == 1:
        parts = [_drive(*args[0])]
    else:  # forked: the children only use sockets, and skip re-importing the caller
        with ProcessPoolExecutor(processes, mp_context=mp.get_context("fork")) as pool:
            parts = list(pool.map(_drive, *zip(*args)))
    answers, sent, last, cpu = zip(*parts)  # per worker process
    return LoadResult([Answer(*a) for part in answers for a in part], sum(sent), max(last) - start_at, sum(cpu))
