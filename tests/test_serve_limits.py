"""Serving limits: body size, JSON depth, multi-hot length, header and body timeouts, number ranges.

Tiers: 1 (the row checks and the depth count, in-process), 4 (a real `c2al-rec serve` with small
limits on a fresh-weight export, driven through raw sockets so that a request can be partial,
oversized or stalled). Every limit's refusal is also counted in /metrics.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest

from c2al_rec.export.serving_ops import Variant
from c2al_rec.serve.artifact import load_exported
from c2al_rec.serve.limits import LIMIT_NAMES, ServeLimits, json_depth, loads_with_long_ints
from c2al_rec.serve.request import RequestError, RowParser, rows_to_inputs
from tests.serving_exports import export_variant
from tests.test_serve_http import _get, _start_server

MULTI = Variant("all_modules", "none", c2al=True, multi_hot=True, dense=True)
BODY_LIMIT = 1 << 20
FLAGS = ("--no-optimize", "--max-body-bytes", str(BODY_LIMIT), "--max-multi-hot-ids", "64")
FLAGS += ("--header-timeout-s", "1", "--body-timeout-s", "1", "--max-json-depth", "16")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_variant(tmp_path_factory.mktemp("limits") / "export", MULTI)


def _row(**overrides: object) -> dict:
    row = {"d0": 0.5, "d1": -1.0, "user": 3, "ad": 7, "history": [1, 2], "tags": [5]}
    return {**row, **overrides}


# ------------------------------------------------------------------------------ the row checks (tier 1)
@pytest.mark.parametrize(
    "row, message",
    [
        (_row(d1=1e39), "row 1: dense feature 'd1' = 1e+39 does not fit float32"),
        (_row(d0=-(10**60)), "row 1: dense feature 'd0' = an integer of 61 digits does not fit float32"),
        (_row(user=2**63 + 5), "row 1: feature 'user' id 9223372036854775813 does not fit int64"),
        (_row(ad=2**64), "row 1: feature 'ad' id 18446744073709551616 does not fit int64"),
        (_row(history=[1, 2**63]), "row 1: feature 'history' id 9223372036854775808 does not fit int64"),
        (_row(tags=list(range(65))), "row 1: multi-hot feature 'tags' has 65 ids; at most 64 per row"),
    ],
)
def test_out_of_range_values_name_the_row_and_feature(export: Path, row: dict, message: str) -> None:
    model = load_exported(export)
    rows = [_row(), row]
    with pytest.raises(RequestError, match=re.escape(message)) as slow:
        rows_to_inputs(rows, model, max_multi_hot_ids=64)
    with pytest.raises(RequestError) as fast:
        RowParser(model, max_multi_hot_ids=64).parse(rows)
    assert str(fast.value) == str(slow.value)
    assert fast.value.limit == ("multi_hot_ids" if "multi-hot" in message else "number_range")


def test_a_5000_digit_integer_names_the_row_and_feature(export: Path) -> None:
    model = load_exported(export)
    body = '{"rows": [{"d0": 1, "d1": 2, "user": %s, "ad": 1, "history": [], "tags": [1]}]}' % ("9" * 5000)
    with pytest.raises(ValueError, match="4300 digits"):
        json.loads(body)  # what the service parsed with before: "body is not valid JSON"
    rows = loads_with_long_ints(body.encode())["rows"]
    with pytest.raises(RequestError, match="row 0: feature 'user' id an integer of 5000 digits does not fit int64"):
        RowParser(model).parse(rows)


def test_rows_within_the_limits_are_scored_and_unknown_features_ignored(export: Path) -> None:
    model = load_exported(export)
    rows = [_row(d0=3.4e38, tags=list(range(16)) * 4, user=63), _row(d1=-(10**20), ad=2**63 - 1)]
    rows[0]["not_a_feature"] = [[["anything"]], 10**100]  # features the model does not take are ignored
    inputs = RowParser(model, max_multi_hot_ids=64).parse(rows)
    assert model.predict(RowParser(model).collate([inputs])).shape == (2,)


def test_json_depth_counts_brackets_outside_strings() -> None:
    assert json_depth(b"") == 0 and json_depth(b"1") == 0
    assert json_depth(b'{"rows": [{"a": [1, 2]}]}') == 4
    assert json_depth(b'{"a": "[[[[{{{{"}') == 1
    assert json_depth(b'{"a": "x\\"[[[[", "b": [[1]]}') == 3  # an escaped quote does not end the string
    assert json_depth(b'{"a": "x\\\\", "b": [[1]]}') == 3  # an escaped backslash does not escape the quote
    assert json_depth(b"[" * 10_000 + b"]" * 10_000) == 10_000


def test_limits_are_checked_when_configured() -> None:
    with pytest.raises(ValueError, match="--max-body-bytes must be an integer >= 1"):
        ServeLimits(max_body_bytes=0)
    with pytest.raises(ValueError, match="--header-timeout-s must be a finite number of seconds > 0"):
        ServeLimits(header_timeout_s=float("nan"))


# ------------------------------------------------------------------------------ the real server (tier 4)
@pytest.fixture(scope="module")
def server(export: Path):
    proc, port = _start_server(export, *FLAGS)
    yield proc, port
    proc.terminate()
    proc.wait(timeout=30)


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_response(s: socket.socket) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one response read from ``s``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", 0)):
        body += s.recv(65536)
    return int(lines[0].split()[1]), headers, body


def _post_head(length: int | None) -> bytes:
    size = f"content-length: {length}\r\n" if length is not None else "transfer-encoding: chunked\r\n"
    return f"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{size}\r\n".encode()


def _server_rss_mb(proc) -> float:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _score(port: int, body: bytes) -> tuple[int, dict]:
    with _connect(port) as s:
        s.sendall(_post_head(len(body)) + body)
        status, _, raw = _read_response(s)
    return status, json.loads(raw)


def test_a_body_over_the_limit_is_413_read_by_the_client_and_never_buffered(server) -> None:
    proc, port = server
    rss_before = _server_rss_mb(proc)
    chunk = b"[" + b"1," * (1 << 19) + b"1]"  # ~1 MiB of valid-looking JSON
    with _connect(port) as s:  # declared size over the limit: answered at once, the upload discarded
        s.sendall(_post_head(64 * len(chunk)))
        for _ in range(64):  # the client sends all of it and only then reads, as urllib would
            s.sendall(chunk)
        status, headers, body = _read_response(s)
        assert status == 413 and "over 1048576 bytes" in json.loads(body)["error"]
        s.sendall(_post_head(2) + b"{}")  # the connection still carries the next request
        assert _read_response(s)[0] == 400
    with _connect(port) as s:  # no declared size (chunked): refused once the bytes received pass it
        s.sendall(_post_head(None))
        for _ in range(8):
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        s.sendall(b"0\r\n\r\n")
        assert _read_response(s)[0] == 413
    assert _server_rss_mb(proc) - rss_before < 32  # 72 MiB were sent; buffering them would cost ~3x that


def test_json_nested_too_deep_is_400_not_a_recursion_error(server) -> None:
    _, port = server
    status, body = _score(port, b'{"rows": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")
    assert status == 400 and body["error"] == "JSON nested 10001 levels deep; at most 16 (--max-json-depth)"


@pytest.mark.parametrize(
    "row, message",
    [
        (_row(tags=list(range(5000))), "row 0: multi-hot feature 'tags' has 5000 ids; at most 64 per row"),
        (_row(d0=1e39), "row 0: dense feature 'd0' = 1e+39 does not fit float32"),
        (_row(user=2**63 + 1), "row 0: feature 'user' id 9223372036854775809 does not fit int64"),
    ],
)
def test_rows_over_a_limit_are_400_naming_row_and_feature(server, row: dict, message: str) -> None:
    status, body = _score(server[1], json.dumps({"rows": [row]}).encode())
    assert status == 400 and body["error"].startswith(message), body


def test_a_5000_digit_integer_is_400_naming_row_and_feature(server) -> None:
    body = '{"rows": [{"d0": 1, "d1": 2, "user": 1, "ad": %s, "history": [], "tags": [1]}]}' % ("7" * 5000)
    status, answer = _score(server[1], body.encode())
    assert status == 400 and answer["error"].startswith("row 0: feature 'ad' id an integer of 5000 digits"), answer


def test_partial_headers_are_closed_after_the_header_timeout(server) -> None:
    _, port = server
    with _connect(port) as s:
        t0 = time.monotonic()
        s.sendall(b"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-le")
        status, headers, _ = _read_response(s)
        assert status == 408 and headers["connection"] == "close"
        assert s.recv(1024) == b""  # closed
        assert time.monotonic() - t0 < 10
    with _connect(port) as s:  # a connection that sends nothing at all
        t0 = time.monotonic()
        assert _read_response(s)[0] == 408 and s.recv(1024) == b"" and time.monotonic() - t0 < 10


def test_a_body_shorter_than_its_content_length_is_408_after_the_body_timeout(server) -> None:
    _, port = server
    with _connect(port) as s:
        t0 = time.monotonic()
        s.sendall(_post_head(100) + b'{"rows": [')
        status, headers, body = _read_response(s)
        assert status == 408 and headers["connection"] == "close" and "--body-timeout-s" in json.loads(body)["error"]
        assert s.recv(1024) == b"" and time.monotonic() - t0 < 10
    with _connect(port) as s:  # a refused upload that trickles on is closed too (keep-alive never re-arms)
        s.sendall(_post_head(BODY_LIMIT * 4) + b"[1,")
        assert _read_response(s)[0] == 413
        t0 = time.monotonic()
        s.settimeout(0.2)
        closed = False
        while not closed and time.monotonic() - t0 < 10:
            try:
                s.sendall(b"1,")
                closed = s.recv(1024) == b""
            except socket.timeout:
                pass
            except OSError:  # reset by the server
                closed = True
        assert closed and time.monotonic() - t0 < 5


def test_every_limit_is_counted_in_metrics(server) -> None:
    _, port = server
    _score(port, json.dumps({"rows": [_row(user=2**63)]}).encode())
    _score(port, b"[" * 100 + b"]" * 100)
    with _connect(port) as s:
        s.sendall(_post_head(BODY_LIMIT + 1))
        _read_response(s)
    status, text = _get(port, "/metrics")
    assert status == 200
    counts = {
        name: float(line.rsplit(" ", 1)[1])
        for name in LIMIT_NAMES
        for line in text.splitlines()
        if line.startswith(f'c2al_limit_rejections_total{{limit="{name}"}}')
    }
    assert set(counts) == set(LIMIT_NAMES)
    assert counts["body_bytes"] >= 1 and counts["json_depth"] >= 1 and counts["number_range"] >= 1
