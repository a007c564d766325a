"""A lean closed-loop HTTP/1.1 load generator: pre-encoded requests over raw keep-alive sockets.

    from benchmarks.loadgen import encode_posts, run_load
    reqs = encode_posts("127.0.0.1", 8080, "/v1/score", [{"rows": [r]} for r in rows])
    res = run_load("127.0.0.1", 8080, reqs, connections=32, seconds=10, processes=1)
    res.qps, res.percentile_ms(99), res.status_counts(), res.answers  # (request index, status, body)

Why not httpx: a Python HTTP client spends ~0.5-1 ms of CPU per request building, encoding and
parsing messages, and on the 2-core benchmark machine it shares the cores with the server, so it
measured itself more than the server. Here every request's bytes are encoded once up front; each
worker process drives many non-blocking keep-alive connections with one ``selectors`` loop, each
connection with exactly one request in flight (closed loop: send, wait for the full response, send
the next). Of a response only the status line and ``Content-Length`` are parsed in the loop; bodies
are kept as bytes and decoded after the run (``Answer.body``). Latency is from the ``send`` of the
request to the arrival of the response's last byte.

Connection ``c`` of ``connections`` sends requests ``c, c + connections, c + 2 * connections, ...``
(cycling over the list), so the index of every answer names the request it answers and a caller can
check each answer against its own request. Every request sent is counted: one that the server
answers with a closed connection (or a timeout) is recorded with status 0, never dropped, and the
connection is reopened.

``client_cpu_us`` is the CPU the load generator itself used per request (user + system, all worker
processes): the cost it adds to a machine it shares with the server.

Run it on its own against any server: ``python -m benchmarks.loadgen --port 8080 --body '{"rows": [...]}'``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence


def encode_posts(host: str, port: int, path: str, bodies: Iterable[object]) -> list[bytes]:
    """HTTP/1.1 keep-alive ``POST path`` requests with JSON bodies (objects, or bytes already encoded)."""
    out = []
    for body in bodies:
        data = body if isinstance(body, (bytes, bytearray)) else json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        out.append(head + data)
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
        out: dict[int, int] = {}
        for a in self.answers:
            out[a.status] = out.get(a.status, 0) + 1
        return out

    def percentile_ms(self, q: float, status: Optional[int] = None) -> float:
        """Latency percentile (ms, nearest-rank with linear interpolation) of all answers or of one status."""
        lat = sorted(a.latency_s for a in self.answers if status is None or a.status == status)
        if not lat:
            return float("nan")
        pos = (len(lat) - 1) * q / 100
        lo = int(pos)
        hi = min(lo + 1, len(lat) - 1)
        return (lat[lo] + (lat[hi] - lat[lo]) * (pos - lo)) * 1000


class _Conn:
    __slots__ = ("sock", "slot", "next_req", "buf", "t0", "index", "need", "status", "body_at")

    def __init__(self, sock: socket.socket, slot: int) -> None:
        self.sock, self.slot, self.next_req = sock, slot, slot
        self.buf, self.t0, self.index, self.need, self.status, self.body_at = b"", 0.0, -1, -1, 0, 0


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def _drive(
    host: str,
    port: int,
    requests: Sequence[bytes],
    slots: Sequence[int],
    stride: int,
    start_at: float,
    seconds: float,
    timeout_s: float,
) -> tuple[list[tuple[int, int, float, bytes]], int, float]:
    """One process's event loop over connections ``slots``: (answers, sent, time of the last answer)."""
    sel = selectors.DefaultSelector()
    conns = []
    for s in slots:
        c = _Conn(_connect(host, port), s)
        sel.register(c.sock, selectors.EVENT_READ, c)
        conns.append(c)
    n = len(requests)
    answers: list[tuple[int, int, float, bytes]] = []
    append = answers.append
    perf = time.perf_counter
    sent = 0
    last = start_at

    def send(c: _Conn) -> None:
        nonlocal sent
        c.index = c.next_req % n
        c.next_req += stride
        c.buf, c.need, c.status = b"", -1, 0
        data = requests[c.index]
        c.t0 = perf()
        k = c.sock.send(data)
        if k < len(data):  # the socket buffer was full: finish blocking (rare, requests are small)
            c.sock.setblocking(True)
            c.sock.sendall(data[k:])
            c.sock.setblocking(False)
        sent += 1

    def reopen(c: _Conn) -> None:
        sel.unregister(c.sock)
        c.sock.close()
        c.sock = _connect(host, port)
        sel.register(c.sock, selectors.EVENT_READ, c)

    while perf() < start_at:
        time.sleep(min(0.001, max(start_at - perf(), 0)))
    stop = start_at + seconds
    for c in conns:
        send(c)
    active = len(conns)
    next_scan = start_at + 1.0
    while active:
        events = sel.select(timeout=1.0)
        now = perf()
        if now >= next_scan:  # once a second: a request without any answer for timeout_s is status 0
            next_scan = now + 1.0
            for c in conns:
                if c.index >= 0 and now - c.t0 > timeout_s:
                    append((c.index, 0, now - c.t0, b""))
                    reopen(c)
                    c.index = -1
                    if now < stop:
                        send(c)
                    else:
                        active -= 1
        for key, _ in events:
            c = key.data
            try:
                chunk = c.sock.recv(262144)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if not chunk:  # the server closed the connection before answering: no answer (status 0)
                if c.index >= 0:
                    append((c.index, 0, perf() - c.t0, b""))
                    c.index = -1
                    reopen(c)
                    if perf() < stop:
                        send(c)
                    else:
                        active -= 1
                else:
                    sel.unregister(c.sock)
                continue
            buf = c.buf + chunk if c.buf else chunk
            if c.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    c.buf = buf
                    continue
                c.status = int(buf[9:12])
                head = buf[:end].lower()
                i = head.find(b"\r\ncontent-length:")
                if i < 0:
                    raise RuntimeError(f"response without Content-Length: {bytes(buf[:end])!r}")
                j = head.find(b"\r\n", i + 2)
                c.body_at = end + 4
                c.need = end + 4 + int(head[i + 17 : j if j >= 0 else len(head)])
            if len(buf) < c.need:
                c.buf = buf
                continue
            now = perf()
            append((c.index, c.status, now - c.t0, buf[c.body_at : c.need]))
            last = now
            c.index = -1
            if now < stop:
                send(c)
            else:
                active -= 1
    for c in conns:
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
    return answers, sent, last


def _worker(conn, host, port, requests, slots, stride, start_at, seconds, timeout_s) -> None:  # type: ignore[no-untyped-def]
    try:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        answers, sent, last = _drive(host, port, requests, slots, stride, start_at, seconds, timeout_s)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        conn.send(("ok", answers, sent, last, cpu))
    except BaseException as e:  # report to the parent rather than hang it
        conn.send(("error", repr(e)))
    finally:
        conn.close()


def run_load(
    host: str,
    port: int,
    requests: Sequence[bytes],
    connections: int,
    seconds: float,
    processes: int = 1,
    timeout_s: float = 60.0,
) -> LoadResult:
    """Drive ``connections`` closed-loop keep-alive connections for ``seconds`` from ``processes`` processes.

    Each connection stops sending at the deadline and waits for its request in flight, so every
    request sent is in ``answers`` exactly once (status 0 where no answer came within ``timeout_s``
    or the connection closed first).
    """
    if connections < 1 or processes < 1:
        raise ValueError("connections and processes must be >= 1")
    processes = min(processes, connections)
    groups = [list(range(p, connections, processes)) for p in range(processes)]
    start_at = time.perf_counter() + 0.2 + 0.02 * connections  # connect everything first, then start together
    if processes == 1:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        answers, sent, last = _drive(host, port, requests, groups[0], connections, start_at, seconds, timeout_s)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        parts = [(answers, sent, last, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))]
    else:
        ctx = mp.get_context("fork")  # the children only use sockets; forking skips re-importing the caller
        pipes, procs = [], []
        for g in groups:
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(
                target=_worker, args=(send, host, port, requests, g, connections, start_at, seconds, timeout_s)
            )
            p.start()
            send.close()
            pipes.append(recv)
            procs.append(p)
        parts = []
        for recv, p in zip(pipes, procs):
            msg = recv.recv()
            p.join()
            if msg[0] != "ok":
                raise RuntimeError(f"load generator worker failed: {msg[1]}")
            parts.append(msg[1:])
    res = LoadResult()
    last = start_at
    for answers, sent, t_last, cpu in parts:
        res.answers.extend(Answer(*a) for a in answers)
        res.sent += sent
        res.client_cpu_s += cpu
        last = max(last, t_last)
    res.wall_s = last - start_at
    return res


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/score")
    parser.add_argument("--body", required=True, help="JSON body of every request (or @file with one body per line)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.body.startswith("@"):
        with open(args.body[1:], "rb") as f:
            bodies = [line.strip() for line in f if line.strip()]
    else:
        bodies = [args.body.encode()]
    reqs = encode_posts(args.host, args.port, args.path, bodies)
    res = run_load(args.host, args.port, reqs, args.connections, args.seconds, args.processes)
    print(
        json.dumps(
            {
                "sent": res.sent,
                "status": {str(k): v for k, v in sorted(res.status_counts().items())},
                "qps": round(res.qps, 1),
                "p50_ms": round(res.percentile_ms(50), 3),
                "p99_ms": round(res.percentile_ms(99), 3),
                "client_cpu_us_per_request": round(res.client_cpu_us, 1),
                "load_average": os.getloadavg()[0],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
