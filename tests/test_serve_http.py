"""`c2al-rec serve`: request validation, micro-batching, and the real HTTP server on a free port.

Tiers: 1 (batcher with a stand-in model), 4 (the exported smoke model behind a real uvicorn process).
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

from c2al_rec.distributed.backend import free_port
from c2al_rec.export.exporter import ExportOptions, export_checkpoint
from c2al_rec.serve.artifact import load_exported
from c2al_rec.serve.http import MicroBatcher, Overloaded, RequestError, ServeOptions, rows_to_inputs
from c2al_rec.serve.predictor import batch_inputs


# ------------------------------------------------------------------------------ batcher (tier 1)
def _fake_predict(inputs: dict) -> torch.Tensor:
    return inputs["dense"][:, 0].clone()  # "probability" = the row's first dense value


def test_batcher_merges_requests_and_returns_each_its_own_rows() -> None:
    calls: list[int] = []

    async def go() -> list[torch.Tensor]:
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
    assert [o.tolist() for o in out] == [[0, 1, 2], [10, 11], [20, 21, 22, 23], [30]]
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
        ok = sum(isinstance(r, torch.Tensor) for r in results)
        rejected = sum(isinstance(r, Overloaded) for r in results)
        return ok, rejected

    ok, rejected = asyncio.run(go())
    assert ok + rejected == 10 and rejected >= 6 and ok >= 2  # 1 scoring + 2 queued at most when the flood hit


# ------------------------------------------------------------------------------ the real server
@pytest.fixture(scope="module")
def exported_model(smoke_runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "export"
    export_checkpoint(ExportOptions(smoke_runs.c2al, out))
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


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda r, m: r.pop(m["dense"][0]), "row 1: missing dense feature"),
        (lambda r, m: r.pop(m["sparse"][0]["name"]), "row 1: missing sparse feature"),
        (lambda r, m: r.__setitem__(m["dense"][0], "x"), "must be a finite number"),
        (lambda r, m: r.__setitem__(_single(m), 1.5), "must be an integer id"),
        (lambda r, m: r.__setitem__(_single(m), -3), "row 1: feature .* negative id"),
    ],
)
def test_bad_rows_name_the_row_and_feature(exported_model, rows, edit, match) -> None:
    model = load_exported(exported_model)
    bad = [dict(r) for r in rows[:3]]
    edit(bad[1], model.metadata)
    with pytest.raises(RequestError, match=match):
        rows_to_inputs(bad, model)


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


@pytest.fixture(scope="module")
def server(exported_model):
    port = free_port()
    bin_dir = Path(sys.executable).parent
    proc = subprocess.Popen(
        [bin_dir / "c2al-rec", "serve", "--model", str(exported_model), "--port", str(port), "--max-wait-ms", "5"],
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if _get(port, "/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.3)
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read()}")
    else:
        proc.kill()
        raise AssertionError("server did not become healthy in 120 s")
    yield port
    proc.terminate()
    proc.wait(timeout=30)


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
