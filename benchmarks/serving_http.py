"""Online scoring over HTTP: micro-batched `c2al-rec serve` vs one-request-at-a-time scoring, and overload.

python -m benchmarks.serving_http [--quick] [--json PATH] [--record] [--clients N] [--seconds S] [--load-processes N]

A real export (the production-shaped model after a few training steps) served by `c2al-rec serve` in each mode
under the same closed-loop load (``benchmarks.loadgen``: ``clients`` keep-alive connections, one-row requests):
``single`` (every request scored alone), ``batched`` (dynamic micro-batching), ``*_pt2`` (the same on model.pt2),
``one_client`` and ``overload`` (a short queue, 4x the clients). Every request must get exactly one answer, every
200 its own row's probability. Goal on 2 cores (``goal_met``): batched >= 5x the QPS of single at p99 <= 50 ms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from benchmarks import common
from benchmarks.loadgen import encode_posts, run_load


@dataclass
class Options:
    """Benchmark options (``--quick``: ``QUICK``)."""

    rows: int = 40_000
    """Synthetic rows generated (the test split feeds the requests)."""
    num_sparse: int = 26
    """Sparse features (one table each)."""
    max_table_size: int = 100_000
    """Largest table."""
    model: dict = field(default_factory=common.production_model)
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

    synthetic = dict(rows=opts.rows, num_sparse=opts.num_sparse, max_table_size=opts.max_table_size, num_dense=4)
    overrides = [f"--data.path={root / 'data'}", *(f"--data.synthetic.{k}={v}" for k, v in synthetic.items())]
    overrides += [
        "--data.batch_size=512", "--cohorts.enabled=false", "--train.max_steps=5", "--train.log_every=0",
        "--train.eval_every=0", "--train.eval_batches=1", "--checkpoint.every_steps=0",
    ]  # fmt: skip
    cfg = load_config(common.REPO / "launch/configs/smoke.toml", overrides)
    launch(replace(cfg, model=common.model_config(opts.model)), root / "run", nproc_per_node=1)
    export_checkpoint(ExportConfig(parity_rows=1024, pt2=opts.pt2), root / "run", root / "export", data=root / "data")
    return root / "export"


class Server:
    """A `c2al-rec serve` subprocess on a free port, healthy once constructed."""

    def __init__(self, export: Path, *flags: str) -> None:
        from c2al_rec.distributed.backend import free_port

        self.port = free_port()
        cli = str(Path(sys.executable).parent / "c2al-rec")
        command = [cli, "serve", "--model", str(export), "--port", str(self.port), *flags]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"c2al-rec serve exited: {self.proc.stderr.read()}")
            try:
                self.get("/healthz", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("c2al-rec serve did not become healthy")

    def get(self, path: str, timeout: float = 10) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout).read().decode()

    def batch_rows(self) -> tuple[float, float]:
        """(rows scored, model calls) so far, from /metrics."""
        names = ("c2al_batch_rows_sum", "c2al_batch_rows_count")
        values = dict(line.rsplit(" ", 1) for line in self.get("/metrics").splitlines() if line.startswith(names))
        return float(values[names[0]]), float(values[names[1]])

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) the server has used so far; NaN where /proc is missing."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return float("nan")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def drive(server: Server, reqs: list[bytes], clients: int, seconds: float, processes: int, expected: Any) -> dict:
    """``clients`` closed-loop connections for ``seconds``: counts, latency, server CPU and batching, and the
    answers 200 whose probability is not their own request's row's (request i scores row i)."""
    rows0, calls0 = server.batch_rows()
    load0, cpu0 = os.getloadavg()[0], server.cpu_s()
    res = run_load("127.0.0.1", server.port, reqs, clients, seconds, processes)
    cpu_ms = (server.cpu_s() - cpu0) / max(res.sent, 1) * 1000
    rows1, calls1 = server.batch_rows()
    counts = res.status_counts()
    lost = res.sent - len(res.answers)  # always 0 by construction of the load generator; counted anyway
    probs = [(json.loads(a.body)["prob"], float(expected[a.index])) for a in res.answers if a.status == 200]
    wrong = sum(len(p) != 1 or abs(p[0] - want) > 1e-5 for p, want in probs)
    return {
        "sent": res.sent, "answered": len(res.answers) - counts.get(0, 0), "ok": counts.get(200, 0),
        "rejected_503": counts.get(503, 0), "other": sum(v for k, v in counts.items() if k not in (200, 503)) + lost,
        "qps": res.qps, "p50_ms": res.percentile_ms(50), "p99_ms": res.percentile_ms(99),
        "ok_p99_ms": res.percentile_ms(99, status=200), "server_cpu_ms_per_request": cpu_ms,
        "client_cpu_us_per_request": res.client_cpu_us, "load_average_before": load0, "wrong_prob": wrong,
        "load_average_after": os.getloadavg()[0], "rows_per_call": (rows1 - rows0) / max(calls1 - calls0, 1),
    }  # fmt: skip


def run(opts: Options) -> dict[str, Any]:
    import pyarrow.parquet as pq
    import torch

    from c2al_rec.serve.artifact import load_exported
    from c2al_rec.serve.request import rows_to_inputs

    with tempfile.TemporaryDirectory(prefix="serving_http_") as tmp:
        export = build_export(opts, Path(tmp))
        meta = json.loads((export / "metadata.json").read_text())
        columns = meta["dense"] + [f["name"] for f in meta["sparse"]]
        rows = pq.read_table(Path(tmp) / "data" / "test", columns=columns).slice(0, 2048).to_pylist()
        torch.set_num_threads(opts.threads)
        model = load_exported(export)
        expected = model.predict(rows_to_inputs(rows, model)).numpy()
        single = ["--max-batch-rows", "1", "--max-wait-ms", "0"]
        batched = ["--max-batch-rows", str(opts.max_batch_rows), "--max-wait-ms", str(opts.max_wait_ms)]
        runs = {"single": single, "batched": batched}
        if opts.pt2:
            runs.update(single_pt2=[*single, "--format", "pt2"], batched_pt2=[*batched, "--format", "pt2"])
        runs["overload"] = [*batched, "--max-queue", str(opts.overload_queue)]
        results: dict[str, Any] = {}
        for name, flags in runs.items():
            server = Server(export, *flags, "--threads", str(opts.threads))
            try:
                reqs = encode_posts("127.0.0.1", server.port, "/v1/score", [{"rows": [r]} for r in rows])
                clients = 4 * opts.clients if name == "overload" else opts.clients
                if name != "overload":
                    run_load("127.0.0.1", server.port, reqs, clients, 1.0, opts.load_processes)  # warm-up
                res = drive(server, reqs, clients, opts.seconds, opts.load_processes, expected)
                if name == "batched":  # one client alone: the latency floor of one request
                    results["one_client"] = drive(server, reqs, 1, min(opts.seconds, 5.0), 1, expected)
                results[name] = res
            finally:
                server.close()
    single, batched = results["single"], results["batched"]
    ratios = {
        "qps_batched_vs_single": batched["qps"] / single["qps"], "batched_p99_ms": batched["p99_ms"],
        "single_p99_ms": single["p99_ms"],
        "goal_met": bool(batched["qps"] >= 5 * single["qps"] and batched["p99_ms"] <= 50),
    }  # fmt: skip
    for m in ("single", "batched") if opts.pt2 else ():
        ratios[f"qps_pt2_vs_torchscript_{m}"] = results[f"{m}_pt2"]["qps"] / results[m]["qps"]
    out = {"benchmark": "serving_http", "config": asdict(opts), "machine": common.machine()}
    return {**out, "results": results, "ratios": ratios}


def markdown(out: dict[str, Any], command: str) -> str:
    r, q, o = out["results"], out["ratios"], out["results"]["overload"]
    lines = [
        "# serving_http: micro-batched HTTP scoring vs one request at a time",
        "",
        f"Machine: {out['machine']}; load average at the end {o['load_average_after']:.1f}.",
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
            f"{x['rows_per_call']:.1f} | {x['server_cpu_ms_per_request']:.2f} | "
            f"{x['load_average_before']:.1f} -> {x['load_average_after']:.1f} | "
            f"{x['sent']} | {x['ok']} | {x['rejected_503']} | {x['other']} | {x['wrong_prob']} |"
        )
    lines += [
        "",
        f"**QPS batched / single: {q['qps_batched_vs_single']:.2f}x** (goal >= 5x) at p99 {q['batched_p99_ms']:.1f} ms "
        f"(goal <= 50 ms; single: p99 {q['single_p99_ms']:.1f} ms). Overload: {o['sent']} sent = {o['ok']} answered "
        f"200 + {o['rejected_503']} answered 503 + {o['other']} other; {o['wrong_prob']} answers carried another row's "
        "probability.",
        "",
    ]
    if "qps_pt2_vs_torchscript_single" in q:
        pt2 = ", ".join(f"{m} {q[f'qps_pt2_vs_torchscript_{m}']:.2f}x" for m in ("single", "batched"))
        lines += [f"pt2 (`--format pt2`) vs TorchScript QPS under the same load: {pt2}.", ""]
    lines.append(
        f"The load generator (benchmarks/loadgen.py, {r['batched']['client_cpu_us_per_request']:.0f} us of CPU per "
        "request) runs on the same 2 cores as the server, so absolute QPS is a floor; the ratio compares both modes "
        "under the same load."
    )
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = common.base_parser(__doc__, data=False)
    common.add_option_flags(parser, Options, only=["clients", "seconds", "load_processes"])
    args = parser.parse_args(argv)
    out = run(common.options_from_args(Options, args, Options(**QUICK) if args.quick else None))
    return common.finish("serving_http", out, markdown, argv, args.quick, args.json, args.record)


if __name__ == "__main__":
    sys.exit(main())
