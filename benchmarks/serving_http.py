"""Online scoring over HTTP: micro-batched `c2al-rec serve` vs one-request-at-a-time scoring, and overload.

python -m benchmarks.serving_http [--quick] [--json PATH]

A real exported model (the production-shaped model of the other benchmarks, trained for a few
steps on generated data and exported with the parity gate) is served by two `c2al-rec serve`
processes in turn, each under the same load: ``clients`` concurrent keep-alive HTTP clients
(httpx, one asyncio process) sending one-row ``POST /v1/score`` requests for ``seconds``.
- ``single``: ``--max-batch-rows 1`` (every request scored on its own, one at a time);
- ``batched``: ``--max-batch-rows 256 --max-wait-ms 2`` (dynamic micro-batching).
Reported per mode: QPS, p50 / p99 latency seen by the clients, mean rows per model call (from
/metrics). Then an overload run (``--max-queue 32`` and 4x the clients) counts requests sent,
answered 200, answered 503 and anything else: every request must get exactly one answer, and every
200 must carry its own row's probability (checked against the model scored locally).
Goal on 2 cores: batched >= 5x the QPS of single at p99 <= 50 ms, nothing lost or answered twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from benchmarks.common import base_parser, finish, machine, production_model


@dataclass
class Options:
    """Benchmark options (``--quick`` shrinks them)."""

    rows: int = 40_000
    """Synthetic rows generated (the test split feeds the requests)."""
    num_sparse: int = 26
    """Sparse features (one table each)."""
    max_table_size: int = 100_000
    """Largest table."""
    model: dict = field(default_factory=production_model)
    """ModelConfig fields (the other benchmarks' production shape)."""
    clients: int = 32
    """Concurrent HTTP clients (keep-alive connections)."""
    seconds: float = 15.0
    """Load duration per mode."""
    max_wait_ms: float = 2.0
    """Micro-batching wait of the batched server."""
    overload_queue: int = 32
    """--max-queue of the overload run (4x ``clients`` clients)."""
    threads: int = 1
    """torch threads of the scoring thread."""


QUICK = dict(rows=12_000, num_sparse=10, max_table_size=2_000, clients=8, seconds=3.0)


def build_export(opts: Options, root: Path) -> Path:
    """Train the production-shaped model for a few steps on generated data and export it."""
    from c2al_rec.config import load_config
    from c2al_rec.export.exporter import ExportOptions, export_checkpoint
    from c2al_rec.train.launch import launch

    overrides = [
        f"--data.path={root / 'data'}",
        f"--data.synthetic.rows={opts.rows}",
        f"--data.synthetic.num_sparse={opts.num_sparse}",
        f"--data.synthetic.max_table_size={opts.max_table_size}",
        "--data.synthetic.num_dense=4",
        "--data.batch_size=512",
        "--cohorts.enabled=false",
        "--train.max_steps=5",
        "--train.log_every=0",
        "--train.eval_every=0",
        "--train.eval_batches=1",
        "--checkpoint.every_steps=0",
    ] + [f"--model.{k}={json.dumps(v)}" for k, v in opts.model.items()]
    repo = Path(__file__).resolve().parents[1]
    launch(load_config(repo / "launch/configs/smoke.toml", overrides), root / "run", nproc_per_node=1)
    export_checkpoint(ExportOptions(root / "run", root / "export", data=root / "data", parity_rows=1024))
    return root / "export"


def request_rows(export: Path, data: Path, n: int) -> list[dict]:
    import pyarrow.parquet as pq

    meta = json.loads((export / "metadata.json").read_text())
    names = meta["dense"] + [f["name"] for f in meta["sparse"]]
    return pq.read_table(data / "test", columns=names).slice(0, n).to_pylist()


class Server:
    """A `c2al-rec serve` subprocess on a free port."""

    def __init__(self, export: Path, *flags: str) -> None:
        from c2al_rec.distributed.backend import free_port

        self.port = free_port()
        bin_dir = Path(sys.executable).parent
        self.proc = subprocess.Popen(
            [str(bin_dir / "c2al-rec"), "serve", "--model", str(export), "--port", str(self.port), *flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        import urllib.request

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"c2al-rec serve exited: {self.proc.stderr.read()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("c2al-rec serve did not become healthy")

    def metrics(self) -> dict[str, float]:
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith(("c2al_batch_rows_sum", "c2al_batch_rows_count")):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def drive(port: int, rows: list[dict], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` keep-alive clients sending one-row requests (row i cycles) for ``seconds``."""
    import httpx

    latencies: list[float] = []
    answers: list[tuple[int, int, Optional[float]]] = []  # (row index, status, prob)
    sent = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as client:

        async def worker(w: int) -> None:
            nonlocal sent
            i = w
            while time.perf_counter() < stop:
                idx = i % len(rows)
                sent += 1
                t0 = time.perf_counter()
                r = await client.post("/v1/score", json={"rows": [rows[idx]]})
                latencies.append(time.perf_counter() - t0)
                answers.append((idx, r.status_code, r.json()["prob"][0] if r.status_code == 200 else None))
                i += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.perf_counter() - t0
    ok = [a for a in answers if a[1] == 200]
    lat = np.array(latencies) * 1000
    return {
        "sent": sent,
        "answered": len(answers),
        "ok": len(ok),
        "rejected_503": sum(a[1] == 503 for a in answers),
        "other": sum(a[1] not in (200, 503) for a in answers),
        "qps": len(ok) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "answers": answers,
    }


def run(opts: Options) -> dict[str, Any]:
    import torch

    from c2al_rec.serve.artifact import load_exported
    from c2al_rec.serve.http import rows_to_inputs

    with tempfile.TemporaryDirectory(prefix="serving_http_") as tmp:
        root = Path(tmp)
        export = build_export(opts, root)
        rows = request_rows(export, root / "data", 2048)
        torch.set_num_threads(opts.threads)
        model = load_exported(export)
        expected = model.predict(rows_to_inputs(rows, model)).numpy()
        modes = {
            "single": ["--max-batch-rows", "1", "--max-wait-ms", "0"],
            "batched": ["--max-batch-rows", "256", "--max-wait-ms", str(opts.max_wait_ms)],
        }
        results: dict[str, Any] = {}
        for name, flags in modes.items():
            server = Server(export, *flags, "--threads", str(opts.threads))
            try:
                asyncio.run(drive(server.port, rows, opts.clients, 1.0))  # warm-up
                before = server.metrics()
                res = asyncio.run(drive(server.port, rows, opts.clients, opts.seconds))
                after = server.metrics()
            finally:
                server.close()
            calls = after["c2al_batch_rows_count"] - before["c2al_batch_rows_count"]
            res["rows_per_call"] = (after["c2al_batch_rows_sum"] - before["c2al_batch_rows_sum"]) / max(calls, 1)
            res["wrong_prob"] = int(sum(abs(p - expected[i]) > 1e-5 for i, s, p in res.pop("answers") if s == 200))
            results[name] = res
        server = Server(export, *modes["batched"], "--max-queue", str(opts.overload_queue), "--threads", "1")
        try:
            over = asyncio.run(drive(server.port, rows, 4 * opts.clients, opts.seconds))
        finally:
            server.close()
        over["wrong_prob"] = int(sum(abs(p - expected[i]) > 1e-5 for i, s, p in over.pop("answers") if s == 200))
        results["overload"] = over
    ratios = {
        "qps_batched_vs_single": results["batched"]["qps"] / results["single"]["qps"],
        "batched_p99_ms": results["batched"]["p99_ms"],
    }
    return {"benchmark": "serving_http", "config": asdict(opts), "results": results, "ratios": ratios}


def markdown(out: dict[str, Any], command: str) -> str:
    r, q = out["results"], out["ratios"]
    lines = [
        "# serving_http: micro-batched HTTP scoring vs one request at a time",
        "",
        f"Machine: {machine()}; load average at the end {os.getloadavg()[0]:.1f}.",
        f"Command: `{command}`",
        "",
        f"Config: {json.dumps(out['config'])}",
        "",
        "| mode | clients | QPS | p50 (ms) | p99 (ms) | rows per model call | sent | 200 | 503 | other | wrong prob |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, x in r.items():
        clients = out["config"]["clients"] * (4 if name == "overload" else 1)
        lines.append(
            f"| {name} | {clients} | {x['qps']:.0f} | {x['p50_ms']:.1f} | {x['p99_ms']:.1f} | "
            f"{x.get('rows_per_call', float('nan')):.1f} | {x['sent']} | {x['ok']} | {x['rejected_503']} | "
            f"{x['other']} | {x['wrong_prob']} |"
        )
    o = r["overload"]
    lines += [
        "",
        f"**QPS batched / single: {q['qps_batched_vs_single']:.2f}x** (goal >= 5x) at p99 {q['batched_p99_ms']:.1f} ms "
        f"(goal <= 50 ms). Overload: {o['sent']} sent = {o['ok']} answered 200 + {o['rejected_503']} answered 503 "
        f"+ {o['other']} other; {o['wrong_prob']} answers carried another row's probability.",
        "",
        "The load generator runs on the same 2 cores as the server, so absolute QPS is a floor; the ratio "
        "compares both modes under the same load.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=None, help="load duration per mode")
    args = parser.parse_args(argv)
    opts = Options(**(QUICK if args.quick else {}))
    if args.clients:
        opts.clients = args.clients
    if args.seconds:
        opts.seconds = args.seconds
    out = run(opts)
    if not args.quick:
        from benchmarks.common import RESULTS_DIR

        (RESULTS_DIR / "serving_http.json").write_text(json.dumps(out, indent=2) + "\n")
    return finish("serving_http", out, markdown, argv, args.quick, args.json)


if __name__ == "__main__":
    sys.exit(main())
