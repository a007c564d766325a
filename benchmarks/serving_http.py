"""Online scoring over HTTP: micro-batched `c2al-rec serve` vs one-request-at-a-time scoring, and overload.

python -m benchmarks.serving_http [--quick] [--json PATH]

A real exported model (the production-shaped model of the other benchmarks, trained for a few
steps on generated data and exported with the parity gate) is served by two `c2al-rec serve`
processes in turn, each under the same load: ``clients`` concurrent closed-loop keep-alive
connections sending one-row ``POST /v1/score`` requests for ``seconds``, from ``benchmarks.loadgen``
(pre-encoded requests on raw non-blocking sockets, ~50 us of client CPU per request, where an httpx
client spent most of the 2 cores itself).
- ``single``: ``--max-batch-rows 1`` (every request scored on its own, one at a time);
- ``batched``: ``--max-batch-rows 256 --max-wait-ms 2`` (dynamic micro-batching);
- ``single_pt2`` / ``batched_pt2``: the same two on the export's ``model.pt2`` (``--format pt2``),
  under the same load generator (``qps_pt2_vs_torchscript_single`` / ``_batched``).
Reported per mode: QPS, p50 / p99 latency seen by the clients (send to last byte of the response),
mean rows per model call (from /metrics), the server's CPU per request (/proc) and the load
generator's, and the load average around the run. ``one_client``: one connection alone on the batched
server (the latency of one request with nothing to batch with). Then an overload run
(``--max-queue 32`` and 4x the clients) counts requests sent, answered 200, answered 503 and anything
else: every request must get exactly one answer, and every 200 must carry its own row's probability
(checked against the model scored locally).
Goal on 2 cores: batched >= 5x the QPS of single at p99 <= 50 ms, nothing lost or answered twice.
``--no-record`` runs the full size without writing benchmarks/results/ (with ``--json PATH``).
"""

from __future__ import annotations

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

from benchmarks.common import RESULTS_DIR, base_parser, finish, machine, model_overrides, production_model, write_json


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
    max_batch_rows: int = 256
    """--max-batch-rows of the batched server."""
    overload_queue: int = 32
    """--max-queue of the overload run (4x ``clients`` clients)."""
    threads: int = 1
    """torch threads of the scoring thread."""
    load_processes: int = 1
    """Processes of the load generator (the connections are split between them)."""
    pt2: bool = True
    """Also export model.pt2 and run the single and batched modes on it (``--format pt2``)."""


QUICK = dict(rows=12_000, num_sparse=10, max_table_size=2_000, clients=8, seconds=3.0, overload_queue=4)


def build_export(opts: Options, root: Path) -> Path:
    """Train the production-shaped model for a few steps on generated data and export it."""
    from c2al_rec.config import ExportConfig, load_config
    from c2al_rec.export.exporter import export_checkpoint
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
    ] + model_overrides(opts.model)
    repo = Path(__file__).resolve().parents[1]
    launch(load_config(repo / "launch/configs/smoke.toml", overrides), root / "run", nproc_per_node=1)
    export_checkpoint(ExportConfig(parity_rows=1024, pt2=opts.pt2), root / "run", root / "export", data=root / "data")
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


def server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far; NaN where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def drive(server: Server, reqs: list[bytes], clients: int, seconds: float, processes: int) -> dict[str, Any]:
    """``clients`` closed-loop keep-alive connections (benchmarks.loadgen) for ``seconds``; the counts."""
    from benchmarks.loadgen import run_load

    load0 = os.getloadavg()[0]
    cpu0 = server_cpu_s(server.proc.pid)
    res = run_load("127.0.0.1", server.port, reqs, clients, seconds, processes)
    cpu1 = server_cpu_s(server.proc.pid)
    counts = res.status_counts()
    lost = res.sent - len(res.answers)  # always 0 by construction of the load generator; counted anyway
    return {
        "sent": res.sent,
        "answered": len(res.answers) - counts.get(0, 0),
        "ok": counts.get(200, 0),
        "rejected_503": counts.get(503, 0),
        "other": sum(v for k, v in counts.items() if k not in (200, 503)) + lost,
        "qps": res.qps,
        "p50_ms": res.percentile_ms(50),
        "p99_ms": res.percentile_ms(99),
        "ok_p99_ms": res.percentile_ms(99, status=200),
        "server_cpu_ms_per_request": (cpu1 - cpu0) / max(res.sent, 1) * 1000,
        "client_cpu_us_per_request": res.client_cpu_us,
        "load_average_before": load0,
        "load_average_after": os.getloadavg()[0],
        "answers": res.answers,
    }


def check_answers(answers: list, expected: np.ndarray) -> int:
    """Answers 200 whose probability is not their own request's row's (request i scores row i)."""
    wrong = 0
    for a in answers:
        if a.status == 200:
            prob = json.loads(a.body)["prob"]
            wrong += bool(len(prob) != 1 or abs(prob[0] - float(expected[a.index])) > 1e-5)
    return wrong


def run(opts: Options) -> dict[str, Any]:
    import torch

    from benchmarks.loadgen import encode_posts
    from c2al_rec.serve.artifact import load_exported
    from c2al_rec.serve.request import rows_to_inputs

    with tempfile.TemporaryDirectory(prefix="serving_http_") as tmp:
        root = Path(tmp)
        export = build_export(opts, root)
        rows = request_rows(export, root / "data", 2048)
        torch.set_num_threads(opts.threads)
        model = load_exported(export)
        expected = model.predict(rows_to_inputs(rows, model)).numpy()
        modes = {
            "single": ["--max-batch-rows", "1", "--max-wait-ms", "0"],
            "batched": ["--max-batch-rows", str(opts.max_batch_rows), "--max-wait-ms", str(opts.max_wait_ms)],
        }
        runs = [
            ("single", modes["single"], opts.clients),
            ("batched", modes["batched"], opts.clients),
            ("overload", modes["batched"] + ["--max-queue", str(opts.overload_queue)], 4 * opts.clients),
        ]
        if opts.pt2:
            runs[2:2] = [(f"{m}_pt2", modes[m] + ["--format", "pt2"], opts.clients) for m in ("single", "batched")]
        results: dict[str, Any] = {}
        for name, flags, clients in runs:
            server = Server(export, *flags, "--threads", str(opts.threads))
            try:
                reqs = encode_posts("127.0.0.1", server.port, "/v1/score", [{"rows": [r]} for r in rows])
                if name != "overload":
                    drive(server, reqs, clients, 1.0, opts.load_processes)  # warm-up
                before = server.metrics()
                res = drive(server, reqs, clients, opts.seconds, opts.load_processes)
                after = server.metrics()
                if name == "batched":  # one client alone: the latency floor of one request
                    m0 = server.metrics()
                    alone = drive(server, reqs, 1, min(opts.seconds, 5.0), 1)
                    m1 = server.metrics()
                    n = m1["c2al_batch_rows_count"] - m0["c2al_batch_rows_count"]
                    alone["rows_per_call"] = (m1["c2al_batch_rows_sum"] - m0["c2al_batch_rows_sum"]) / max(n, 1)
                    alone["wrong_prob"] = check_answers(alone.pop("answers"), expected)
                    results["one_client"] = alone
            finally:
                server.close()
            calls = after["c2al_batch_rows_count"] - before["c2al_batch_rows_count"]
            res["rows_per_call"] = (after["c2al_batch_rows_sum"] - before["c2al_batch_rows_sum"]) / max(calls, 1)
            res["wrong_prob"] = check_answers(res.pop("answers"), expected)
            results[name] = res
    single, batched = results["single"], results["batched"]
    ratios = {
        "qps_batched_vs_single": batched["qps"] / single["qps"],
        "batched_p99_ms": batched["p99_ms"],
        "single_p99_ms": single["p99_ms"],
        "goal_met": bool(batched["qps"] >= 5 * single["qps"] and batched["p99_ms"] <= 50),
    }
    if opts.pt2:
        for m in ("single", "batched"):
            ratios[f"qps_pt2_vs_torchscript_{m}"] = results[f"{m}_pt2"]["qps"] / results[m]["qps"]
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
        "| mode | clients | QPS | p50 (ms) | p99 (ms) | rows per model call | server CPU per request (ms) "
        "| load average | sent | 200 | 503 | other | wrong prob |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, x in r.items():
        clients = {"overload": 4 * out["config"]["clients"], "one_client": 1}.get(name, out["config"]["clients"])
        lines.append(
            f"| {name} | {clients} | {x['qps']:.0f} | {x['p50_ms']:.1f} | {x['p99_ms']:.1f} | "
            f"{x.get('rows_per_call', float('nan')):.1f} | {x.get('server_cpu_ms_per_request', float('nan')):.2f} | "
            f"{x.get('load_average_before', float('nan')):.1f} -> {x.get('load_average_after', float('nan')):.1f} | "
            f"{x['sent']} | {x['ok']} | {x['rejected_503']} | {x['other']} | {x['wrong_prob']} |"
        )
    o = r["overload"]
    lines += [
        "",
        f"**QPS batched / single: {q['qps_batched_vs_single']:.2f}x** (goal >= 5x) at p99 {q['batched_p99_ms']:.1f} ms "
        f"(goal <= 50 ms; single: p99 {q.get('single_p99_ms', float('nan')):.1f} ms). Overload: {o['sent']} sent = "
        f"{o['ok']} answered 200 + {o['rejected_503']} answered 503 + {o['other']} other; {o['wrong_prob']} answers "
        "carried another row's probability.",
        "",
        *(
            [
                f"pt2 (`--format pt2`) vs TorchScript QPS under the same load: single "
                f"{q['qps_pt2_vs_torchscript_single']:.2f}x, batched {q['qps_pt2_vs_torchscript_batched']:.2f}x.",
                "",
            ]
            if "qps_pt2_vs_torchscript_single" in q
            else []
        ),
        "The load generator (benchmarks/loadgen.py, "
        f"{r['batched'].get('client_cpu_us_per_request', float('nan')):.0f} us of CPU per request) runs on the same "
        "2 cores as the server, so absolute QPS is a floor; the ratio compares both modes under the same load.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=None, help="load duration per mode")
    parser.add_argument("--load-processes", type=int, default=None, help="load generator processes")
    parser.add_argument("--no-record", action="store_true", help="do not write benchmarks/results/ (use --json)")
    args = parser.parse_args(argv)
    opts = Options(**(QUICK if args.quick else {}))
    if args.clients:
        opts.clients = args.clients
    if args.seconds:
        opts.seconds = args.seconds
    if args.load_processes:
        opts.load_processes = args.load_processes
    out = run(opts)
    record = args.record and not (args.quick or args.no_record)
    if record:
        write_json(RESULTS_DIR / "serving_http.json", out)
    return finish("serving_http", out, markdown, argv, not record, args.json)


if __name__ == "__main__":
    sys.exit(main())
