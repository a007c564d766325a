"""`c2al-rec serve`: request validation, micro-batching, and the real HTTP server on a free port.

Tiers: 1 (batcher with a stand-in model), 4 (the exported smoke model behind a real uvicorn process,
driven by urllib and by the benchmark's load generator).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from c2al_rec.config import ExportConfig
from c2al_rec.distributed.backend import free_port
from c2al_rec.export.exporter import export_checkpoint
from c2al_rec.serve.artifact import load_exported
from c2al_rec.serve.batcher import MicroBatcher, Overloaded
from c2al_rec.serve.limits import ServeOptions
from c2al_rec.serve.predictor import batch_inputs
from c2al_rec.serve.request import RequestError, RowParser, rows_to_inputs


# ------------------------------------------------------------------------------ batcher (tier 1)
def _fake_predict(inputs: dict) -> torch.Tensor:
    return inputs["dense"][:, 0].clone()  # "probability" = the row's first dense value


def test_batcher_merges_requests_and_returns_each_its_own_rows() -> None:
    calls: list[int] = []

    async def go() -> list[list[float]]:
        b = MicroBatcher(_fake_predict, ServeOptions(max_batch_rows=8, max_wait_ms=50), on_batch=calls.append)
        b.start()
        reqs = [
            {"dense": torch.arange(i * 10, i * 10 + n, dtype=torch.float32)[:, None]}
            for i, n in enumerate([3, 2, 4, 1])
        ]
        out = await asyncio.gather(*(b.submit(r, len(r["dense"])) for r in reqs))
        await b.stop()
        return out

    out = asyncio.run(go())
    assert out == [[0, 1, 2], [10, 11], [20, 21, 22, 23], [30]]
    assert sum(calls) == 10 and max(calls) <= 8 and len(calls) < 4  # merged, never over the limit, never split


def test_full_queue_answers_overloaded_and_loses_nothing() -> None:
    release = asyncio.Event()

    async def go() -> tuple[int, int]:
        loop = asyncio.get_running_loop()

        def slow(inputs: dict) -> torch.Tensor:
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
            return _fake_predict(inputs)

        b = MicroBatcher(slow, ServeOptions(max_batch_rows=1, max_wait_ms=0, max_queue=2))
        b.start()
        tasks = [asyncio.create_task(b.submit({"dense": torch.ones(1, 1) * i}, 1)) for i in range(10)]
        await asyncio.sleep(0.2)
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await b.stop()
        ok = sum(isinstance(r, list) for r in results)
        rejected = sum(isinstance(r, Overloaded) for r in results)
        return ok, rejected

    ok, rejected = asyncio.run(go())
    assert ok + rejected == 10 and rejected >= 6 and ok >= 2  # 1 scoring + 2 queued at most when the flood hit


def test_batcher_waits_for_more_rows_at_most_max_wait_and_not_when_full() -> None:
    calls: list[int] = []

    async def go() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        b = MicroBatcher(_fake_predict, ServeOptions(max_batch_rows=4, max_wait_ms=10_000), on_batch=calls.append)
        b.start()
        t0 = loop.time()  # a full batch (4 rows) goes at once, without the 10 s wait
        await asyncio.gather(*(b.submit({"dense": torch.ones(2, 1)}, 2) for _ in range(2)))
        full = loop.time() - t0
        await b.stop()
        b = MicroBatcher(_fake_predict, ServeOptions(max_batch_rows=64, max_wait_ms=200), on_batch=calls.append)
        b.start()
        t0 = loop.time()  # one row waits for company up to 200 ms, and the late one joins it
        first = asyncio.create_task(b.submit({"dense": torch.ones(1, 1)}, 1))
        await asyncio.sleep(0.05)
        await asyncio.gather(first, b.submit({"dense": torch.ones(1, 1)}, 1))
        waited = loop.time() - t0
        await b.stop()
        return full, waited

    full, waited = asyncio.run(go())
    assert full < 5 and 0.15 < waited < 5 and calls == [4, 2]


def test_stopping_the_batcher_answers_what_is_still_queued() -> None:
    async def go() -> list:
        b = MicroBatcher(_fake_predict, ServeOptions(max_batch_rows=1, max_wait_ms=10_000))  # never started
        tasks = [asyncio.create_task(b.submit({"dense": torch.ones(1, 1)}, 1)) for _ in range(3)]
        await asyncio.sleep(0.01)
        await b.stop()
        return await asyncio.gather(*tasks, return_exceptions=True)

    assert all(isinstance(r, Overloaded) for r in asyncio.run(go()))


# ------------------------------------------------------------------------------ the real server
@pytest.fixture(scope="module")
def exported_model(smoke_runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "export"
    export_checkpoint(ExportConfig(), smoke_runs.c2al, out)
    return out


@pytest.fixture(scope="module")
def rows(smoke_runs, exported_model) -> list[dict]:
    meta = json.loads((exported_model / "metadata.json").read_text())
    names = meta["dense"] + [f["name"] for f in meta["sparse"]]
    table = pq.read_table(Path(smoke_runs.data) / "test", columns=names).slice(0, 64)
    return table.to_pylist()


def test_json_rows_become_the_same_inputs_as_parquet(smoke_runs, exported_model, rows) -> None:
    import pyarrow as pa

    model = load_exported(exported_model)
    a = rows_to_inputs(rows, model)
    b = batch_inputs(pa.Table.from_pylist(rows), model, "rows")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k].to(a[k].dtype)) for k in a)


def test_row_parser_builds_the_same_inputs_as_rows_to_inputs(exported_model, rows) -> None:
    model = load_exported(exported_model)
    parser = RowParser(model)
    want = rows_to_inputs(rows, model)
    for cuts in ([0, len(rows)], [0, 1, 5, 6, len(rows)]):  # one request, or a micro-batch of several
        got = parser.collate([parser.parse(rows[a:b]) for a, b in zip(cuts, cuts[1:])])
        assert list(got) == list(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda r, m: r.pop(m["dense"][0]), "row 1: missing dense feature"),
        (lambda r, m: r.pop(m["sparse"][0]["name"]), "row 1: missing sparse feature"),
        (lambda r, m: r.__setitem__(m["dense"][0], "x"), "must be a finite number"),
        (lambda r, m: r.__setitem__(m["dense"][0], float("nan")), "must be a finite number"),
        (lambda r, m: r.__setitem__(m["dense"][0], True), "must be a finite number"),
        (lambda r, m: r.__setitem__(_single(m), 1.5), "must be an integer id"),
        (lambda r, m: r.__setitem__(_single(m), False), "must be an integer id"),
        (lambda r, m: r.__setitem__(_single(m), -3), "row 1: feature .* negative id"),
        (lambda r, m: r.__setitem__(*_too_big(m)), "row 1: feature .* outside its table"),
    ],
)
def test_bad_rows_name_the_row_and_feature(exported_model, rows, edit, match) -> None:
    model = load_exported(exported_model)
    bad = [dict(r) for r in rows[:3]]
    edit(bad[1], model.metadata)
    with pytest.raises(RequestError, match=match) as slow:
        rows_to_inputs(bad, model)
    with pytest.raises(RequestError) as fast:  # the service's parser: the same message
        RowParser(model).parse(bad)
    assert str(fast.value) == str(slow.value)


def test_row_parser_rejects_what_cannot_be_a_request(exported_model, rows) -> None:
    parser = RowParser(load_exported(exported_model), max_rows=4)
    cases = [([], "non-empty list"), ("x", "non-empty list"), (rows[:5], "at most 4"), ([1], "row 0: expected")]
    for bad, match in cases:
        with pytest.raises(RequestError, match=match):
            parser.parse(bad)
    huge = dict(rows[0], **{_single(parser.model.metadata): 2**70})  # no int64: a 400, not a failed batch
    with pytest.raises(RequestError):
        parser.parse([huge])


def _too_big(meta: dict) -> tuple[str, int]:
    f = next(f for f in meta["sparse"] if not f["multi_hot"] and f["out_of_range"] == "error")
    return f["name"], f["num_embeddings"]


def _single(meta: dict) -> str:
    return next(f["name"] for f in meta["sparse"] if not f["multi_hot"])


def _post(port: int, body: object) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/score",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _start_server(exported_model: Path, *flags: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    bin_dir = Path(sys.executable).parent
    proc = subprocess.Popen(
        [bin_dir / "c2al-rec", "serve", "--model", str(exported_model), "--port", str(port), *flags],
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if _get(port, "/healthz")[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.3)
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read()}")
    proc.kill()
    raise AssertionError("server did not become healthy in 120 s")


@pytest.fixture(scope="module")
def server(exported_model):
    proc, port = _start_server(exported_model, "--max-wait-ms", "5")
    yield port
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def expected(exported_model, rows) -> np.ndarray:
    model = load_exported(exported_model)
    return model.predict(rows_to_inputs(rows, model)).numpy()


def test_scores_match_the_exported_model_in_row_order(server, exported_model, rows) -> None:
    model = load_exported(exported_model)
    want = model.predict(rows_to_inputs(rows, model)).numpy()
    status, body = _post(server, {"rows": rows})
    assert status == 200 and body["model_id"].startswith("export-")
    np.testing.assert_allclose(body["prob"], want, atol=1e-6)
    # concurrent one-row requests are batched together and each gets its own row's probability
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda r: _post(server, {"rows": [r]}), rows))
    assert all(s == 200 for s, _ in answers)
    np.testing.assert_allclose([b["prob"][0] for _, b in answers], want, atol=1e-6)


def test_bad_requests_are_400_with_a_message(server, rows) -> None:
    bad = [dict(rows[0]), {k: v for k, v in rows[1].items() if k != next(iter(rows[1]))}]
    status, body = _post(server, {"rows": bad})
    assert status == 400 and body["error"].startswith("row 1: missing")
    assert _post(server, {"nope": []})[0] == 400
    assert _post(server, {"rows": []})[0] == 400


def test_health_ready_and_prometheus_metrics(server, rows) -> None:
    assert _get(server, "/healthz")[0] == 200 and _get(server, "/readyz")[0] == 200
    _post(server, {"rows": rows[:4]})
    status, text = _get(server, "/metrics")
    assert status == 200
    assert 'c2al_score_responses_total{status="200"}' in text and 'c2al_score_responses_total{status="400"}' in text
    assert "c2al_score_latency_seconds_bucket" in text and "c2al_batch_rows_bucket" in text
    assert "c2al_queue_depth" in text


def test_score_route_keeps_fastapi_answers_for_other_methods_and_bad_bodies(server) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{server}/v1/score", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400 and json.loads(e.value.read()) == {"error": "body is not valid JSON"}
    status, text = _get(server, "/v1/score")
    assert status == 405 and json.loads(text) == {"detail": "Method Not Allowed"}
    assert _post(server, {"rows": "x"}) == (400, {"error": "'rows' must be a non-empty list of objects"})


def test_load_generator_answers_each_request_with_its_own_row(server, rows, expected) -> None:
    from benchmarks.loadgen import encode_posts, run_load

    bodies = [{"rows": [r]} for r in rows] + [{"rows": rows[:3]}]  # the last request has 3 rows
    reqs = encode_posts("127.0.0.1", server, "/v1/score", bodies)
    for processes in (1, 2):
        res = run_load("127.0.0.1", server, reqs, connections=8, seconds=1.0, processes=processes)
        assert res.sent == len(res.answers) > len(bodies) and res.status_counts() == {200: res.sent}
        assert res.qps > 0 and 0 < res.percentile_ms(50) <= res.percentile_ms(99) and res.client_cpu_us > 0
        for a in res.answers:
            body = a.json()
            want = expected[:3] if a.index == len(rows) else expected[a.index : a.index + 1]
            np.testing.assert_allclose(body["prob"], want, atol=1e-6)


def test_overload_answers_every_request_200_or_503(exported_model, rows, expected) -> None:
    from benchmarks.loadgen import encode_posts, run_load

    proc, port = _start_server(exported_model, "--max-queue", "2", "--max-batch-rows", "1", "--max-wait-ms", "0")
    try:
        reqs = encode_posts("127.0.0.1", port, "/v1/score", [{"rows": [r]} for r in rows])
        res = run_load("127.0.0.1", port, reqs, connections=48, seconds=1.5)
        _, text = _get(port, "/metrics")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    counts = res.status_counts()
    assert res.sent == len(res.answers) == counts.get(200, 0) + counts.get(503, 0)  # none lost, none other
    assert counts.get(200, 0) > 0 and counts.get(503, 0) > 0
    for a in res.answers:
        if a.status == 200:
            np.testing.assert_allclose(a.json()["prob"], expected[a.index : a.index + 1], atol=1e-6)
        else:
            assert a.json()["error"].startswith("queue full")
    assert f'c2al_score_responses_total{{status="503"}} {float(counts[503])}' in text


@pytest.mark.parametrize("behaviour", ["silent", "close"])
def test_load_generator_counts_requests_without_an_answer(behaviour) -> None:
    import socket
    import threading

    from benchmarks.loadgen import encode_posts, run_load

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    done = threading.Event()

    def serve() -> None:  # reads requests and never answers: keeps the connection, or closes it
        listener.settimeout(0.1)
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.recv(65536)
            if behaviour == "close":
                conn.close()
            else:
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    reqs = encode_posts("127.0.0.1", port, "/v1/score", [{"rows": [{}]}])
    res = run_load("127.0.0.1", port, reqs, connections=2, seconds=0.3, timeout_s=1.0)
    done.set()
    thread.join()
    listener.close()
    for conn in held:
        conn.close()
    assert res.sent == len(res.answers) >= 2 and set(res.status_counts()) == {0}


# ------------------------------------------------------------------------------ the optimised graph
def test_optimized_graph_scores_as_the_exported_one(exported_model, rows) -> None:
    from c2al_rec.serve.artifact import optimize_for_serving

    model = load_exported(exported_model)
    optimized, what = optimize_for_serving(model)
    assert optimized.module is not model.module and "frozen, optimised" in what, what
    assert optimized.model_id == model.model_id
    inputs = rows_to_inputs(rows, model)
    np.testing.assert_allclose(optimized.predict(inputs).numpy(), model.predict(inputs).numpy(), atol=1e-5)
    bad = dict(inputs)
    name = next(k for k in inputs if k.endswith(".values"))
    bad[name] = -inputs[name] - 1
    with pytest.raises(torch.jit.Error, match="negative id"):  # the graph's own id checks survive freezing
        optimized.predict(bad)


def test_optimizing_falls_back_to_the_exported_graph(exported_model, monkeypatch) -> None:
    from c2al_rec.serve import artifact

    model = load_exported(exported_model)

    class Shifted:  # an "optimised" module whose answers moved
        def predict(self, inputs):
            return model.module.predict(inputs) + 0.01

    monkeypatch.setattr(artifact.torch.jit, "optimize_for_inference", lambda m, other_methods: Shifted())
    same, what = artifact.optimize_for_serving(model)
    assert same is model and "differed by 1.00e-02" in what, what

    def fail(*args, **kwargs):
        raise RuntimeError("unsupported op\nmore text")

    monkeypatch.setattr(artifact.torch.jit, "freeze", fail)
    same, what = artifact.optimize_for_serving(model)
    assert same is model and what == "serving the exported graph (freezing failed: unsupported op)", what


def test_probe_input_is_the_sample_or_one_zero_row(exported_model, tmp_path: Path) -> None:
    import shutil

    model = load_exported(exported_model)
    sample = model.probe_input()
    assert sample["dense"].shape[0] == model.sample_input()["dense"].shape[0]
    bare = tmp_path / "export"
    shutil.copytree(exported_model, bare)
    (bare / "sample_input.pt").unlink()
    zero = load_exported(bare).probe_input()
    parser = RowParser(model)
    row = {name: 0 for name in parser.dense_names} | {name: 0 for name, _ in parser.single}
    want = parser.collate([parser.parse([row | {name: [0] for name, _ in parser.multi}])])
    assert zero.keys() == want.keys()
    for key in want:
        assert zero[key].dtype == want[key].dtype and torch.equal(zero[key], want[key]), key
    assert model.predict(zero).shape == (1,)
