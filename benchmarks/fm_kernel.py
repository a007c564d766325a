"""FM interaction op (c2al::fm_interaction) vs the eager reference (two bmm + autograd).

Measures forward and forward+backward time, the bytes saved for backward, and the forward's
achieved bytes/s against the measured memory bandwidth (roofline), at a CPU shape (fp32) and,
when a GPU is present, a GPU shape (bf16). The CPU case runs at each of ``cpu_threads`` torch
thread counts (1 and 2: the CPU goal must hold at both); ``cpu_*`` ratios are at the largest count,
``cpu_fwdbwd_speedup_t<N>`` at each. A run measures one device (``--device auto``: CUDA when present,
else CPU); with ``--record`` it merges that device's entries into ``benchmarks/results/fm_kernel.json`` (the other
device's entries, e.g. the CPU goals recorded on the 2-core machine, are kept) with the machine per
case, and rewrites ``benchmarks/results/fm_kernel.md`` from the merged file.

    python -m benchmarks.fm_kernel [--quick] [--json PATH] [--device auto|cpu|cuda]
"""

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from benchmarks.common import (
    RECORD_HELP,
    accelerator_machine,
    command_line,
    interleaved_seconds,
    median,
    resolve_device,
    write_json,
)
from c2al_rec.ops import fm_interaction, select_kernel

RESULTS = Path(__file__).resolve().parent / "results" / "fm_kernel.md"


@dataclass
class FMKernelOptions:
    """Benchmark options (``--quick`` shrinks the batch and the repeats for a smoke run)."""

    cpu_shape: tuple[int, int, int, int] = (4096, 32, 64, 16)
    """(B, n, d, k) of the CPU case, fp32."""
    gpu_shape: tuple[int, int, int, int] = (65536, 64, 128, 32)
    """(B, n, d, k) of the GPU case, bf16."""
    repeats: int = 15
    """Timed repeats per measurement (the median is reported)."""
    warmup: int = 3
    """Untimed runs before timing."""
    runs: int = 3
    """Whole measurements repeated; the reported ratios are their medians (the machine is shared)."""
    quick: bool = False
    """Smoke run: batch / 8, 3 repeats, results not written to benchmarks/results."""
    json: str = ""
    """Write {"benchmark", "config", "results", "ratios"} here."""
    threads: int = field(default_factory=torch.get_num_threads)
    """torch intra-op threads restored after the CPU cases."""
    cpu_threads: tuple[int, ...] = (1, 2)
    """torch intra-op thread counts of the CPU case (the cpu_ ratios are at the last)."""
    device: str = "auto"
    """Device measured: cuda when present, else cpu (or name one)."""


def _time(fn: Callable[[], object], device: torch.device, opts: FMKernelOptions) -> float:
    """Median seconds of ``fn`` over ``opts.repeats`` runs."""
    for _ in range(opts.warmup):
        fn()
    return median(interleaved_seconds({"fn": fn}, opts.repeats, device)["fn"])


def _time_pair(fa: Callable[[], object], fb: Callable[[], object], device, opts) -> tuple[float, float]:
    """Median seconds of ``fa`` and ``fb``, timed alternately so that load from other processes
    on a shared machine hits both alike."""
    for _ in range(opts.warmup):
        fa()
        fb()
    times = interleaved_seconds({"a": fa, "b": fb}, opts.repeats, device)
    return median(times["a"]), median(times["b"])


def eager(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The baseline: T = X^T Y, G = X T as two bmm, differentiated by autograd."""
    return torch.bmm(x, torch.bmm(x.transpose(1, 2), y))


def saved_bytes(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x, y) -> int:
    """Bytes of the distinct storages autograd saves for backward during one forward."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x, y)
    return sum(storages.values())


def memory_bandwidth(device: torch.device, opts: FMKernelOptions) -> float:
    """Measured copy bandwidth in bytes/s (read + write of a 256 MiB buffer)."""
    src = torch.empty(64 * 1024 * 1024, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    sec = _time(lambda: dst.copy_(src), device, opts)
    return 2 * src.numel() * 4 / sec


def run_case(name: str, shape, dtype: torch.dtype, device: torch.device, opts: FMKernelOptions) -> dict:
    b, n, d, k = shape
    if opts.quick:
        b = max(1, b // 8)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(b, n, d, device=device, generator=g).to(dtype)
    y = torch.randn(b, n, k, device=device, generator=g).to(dtype)
    dg = torch.randn(b, n, k, device=device, generator=g).to(dtype)
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    kernel = select_kernel(x, y, "auto")

    def fused_fwd():
        with torch.no_grad():
            return fm_interaction(x, y)

    def eager_fwd():
        with torch.no_grad():
            return eager(x, y)

    def fwdbwd(fn):
        def step():
            xg.grad = yg.grad = None
            fn(xg, yg).backward(dg)

        return step

    ref = eager(x.double(), y.double())
    err = float((fused_fwd().double() - ref).abs().max() / ref.abs().max())
    fused_fwd_s, eager_fwd_s = _time_pair(fused_fwd, eager_fwd, device, opts)
    fused_fb_s, eager_fb_s = _time_pair(fwdbwd(fm_interaction), fwdbwd(eager), device, opts)
    res = {
        "shape": {"B": b, "n": n, "d": d, "k": k},
        "dtype": str(dtype).replace("torch.", ""),
        "device": device.type,
        "kernel": kernel,
        "fused_fwd_ms": 1e3 * fused_fwd_s,
        "eager_fwd_ms": 1e3 * eager_fwd_s,
        "fused_fwdbwd_ms": 1e3 * fused_fb_s,
        "eager_fwdbwd_ms": 1e3 * eager_fb_s,
        "fused_saved_bytes": saved_bytes(fm_interaction, xg, yg),
        "eager_saved_bytes": saved_bytes(eager, xg, yg),
        "fused_max_rel_err_vs_f64": err,
    }
    elem = x.element_size()
    fwd_bytes = b * (n * d + 2 * n * k) * elem  # read X, Y; write G
    bw = memory_bandwidth(device, opts)
    res.update(
        forward_bytes=fwd_bytes,
        memory_bandwidth_gbs=bw / 1e9,
        fused_fwd_gbs=fwd_bytes / res["fused_fwd_ms"] * 1e3 / 1e9,
        eager_fwd_gbs=fwd_bytes / res["eager_fwd_ms"] * 1e3 / 1e9,
        forward_gflop=4 * b * n * d * k / 1e9,
    )
    res["fused_fwd_bandwidth_fraction"] = res["fused_fwd_gbs"] / res["memory_bandwidth_gbs"]
    print(f"[{name}] " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}))
    return res


def _ratios(results: dict) -> dict:
    ratios = {}
    if "cpu" in results:
        ratios = {
            "cpu_fwd_speedup": results["cpu"]["eager_fwd_ms"] / results["cpu"]["fused_fwd_ms"],
            "cpu_fwdbwd_speedup": results["cpu"]["eager_fwdbwd_ms"] / results["cpu"]["fused_fwdbwd_ms"],
            "cpu_saved_memory_ratio": results["cpu"]["fused_saved_bytes"] / results["cpu"]["eager_saved_bytes"],
            "cpu_fwd_bandwidth_fraction": results["cpu"]["fused_fwd_bandwidth_fraction"],
        }
        for case, r in results.items():
            if case.startswith("cpu"):
                ratios[f"cpu_fwdbwd_speedup_t{r['threads']}"] = r["eager_fwdbwd_ms"] / r["fused_fwdbwd_ms"]
    if "gpu" in results:
        ratios["gpu_fwd_speedup"] = results["gpu"]["eager_fwd_ms"] / results["gpu"]["fused_fwd_ms"]
        ratios["gpu_fwdbwd_speedup"] = results["gpu"]["eager_fwdbwd_ms"] / results["gpu"]["fused_fwdbwd_ms"]
        ratios["gpu_saved_memory_ratio"] = results["gpu"]["fused_saved_bytes"] / results["gpu"]["eager_saved_bytes"]
        ratios["gpu_fwd_hbm_fraction"] = results["gpu"]["fused_fwd_bandwidth_fraction"]
    return ratios


def _cases(opts: FMKernelOptions) -> dict:
    """One measurement of this run's device: {"cpu", "cpu_t<N>"...} or {"gpu"}."""
    if resolve_device(opts.device) == "cuda":
        res = run_case("gpu", opts.gpu_shape, torch.bfloat16, torch.device("cuda"), opts)
        return {"gpu": {**res, "threads": torch.get_num_threads(), "machine": accelerator_machine()}}
    results = {}
    for i, threads in enumerate(opts.cpu_threads):
        torch.set_num_threads(threads)
        res = run_case(f"cpu t{threads}", opts.cpu_shape, torch.float32, torch.device("cpu"), opts)
        last = i == len(opts.cpu_threads) - 1
        results["cpu" if last else f"cpu_t{threads}"] = {**res, "threads": threads, "machine": accelerator_machine()}
    torch.set_num_threads(opts.threads)
    return results


def run(opts: FMKernelOptions) -> dict:
    """``opts.runs`` whole measurements; results of the run whose fwd+bwd ratio is the median."""
    runs = []
    load_before = os.getloadavg()[0]
    for _ in range(opts.runs):
        results = _cases(opts)
        runs.append((results, _ratios(results)))
    per_run = [r for _, r in runs]
    ratios = {k: sorted(r[k] for r in per_run)[len(per_run) // 2] for k in per_run[0]}
    key = "gpu_fwdbwd_speedup" if "gpu_fwdbwd_speedup" in ratios else "cpu_fwdbwd_speedup"
    results = sorted(runs, key=lambda rr: rr[1][key])[len(runs) // 2][0]
    print("ratios (median of runs) " + json.dumps({k: round(v, 3) for k, v in ratios.items()}))
    prefix = "gpu" if resolve_device(opts.device) == "cuda" else "cpu"
    out = {"benchmark": "fm_kernel", "config": dataclasses.asdict(opts), "results": results, "ratios": ratios}
    out["results"][f"{prefix}_ratios_per_run"] = per_run
    out["results"][f"{prefix}_load_average_1min"] = [load_before, os.getloadavg()[0]]
    return out


def merge(previous: dict | None, out: dict, command: str) -> dict:
    """The results file after this run: this run's device (``cpu*`` or ``gpu*`` keys) replaces only
    its own entries in ``results``, ``ratios``, ``config`` and ``commands``; GPU ratios never
    measured stay null."""
    prefix = "gpu" if "gpu" in out["results"] else "cpu"
    merged = {"benchmark": "fm_kernel", "config": {}, "commands": {}, "results": {}, "ratios": {}}
    if previous:
        config = previous.get("config", {})
        # a file from before per-device merging held one config, the CPU run's
        merged["config"] = {"cpu": config} if "cpu_shape" in config else dict(config)
        merged["commands"] = dict(previous.get("commands", {}))
        for part in ("results", "ratios"):
            merged[part] = {k: v for k, v in previous.get(part, {}).items() if not k.startswith(prefix)}
        for old, new in (("ratios_per_run", "cpu_ratios_per_run"), ("load_average_1min", "cpu_load_average_1min")):
            if old in merged["results"]:
                merged["results"].setdefault(new, merged["results"].pop(old))
    merged["config"][prefix] = out["config"]
    merged["commands"][prefix] = command
    merged["results"].update(out["results"])
    merged["ratios"].update(out["ratios"])
    for key in ("gpu_fwd_speedup", "gpu_fwdbwd_speedup", "gpu_fwd_hbm_fraction"):
        merged["ratios"].setdefault(key, None)  # null: unmeasured
    merged["ratios"] = dict(sorted(merged["ratios"].items()))
    return merged


def write_markdown(merged: dict, path: Path = RESULTS) -> None:
    """``fm_kernel.md`` from the merged results file (every device recorded so far)."""
    lines = [
        "# fm_kernel: c2al::fm_interaction vs eager two-bmm + autograd",
        "",
        "- Times are medians of fused and eager runs timed alternately (the cores may be shared);",
        "  'saved' = bytes of distinct storages autograd keeps for backward;",
        "  bandwidth = forward bytes (read X, Y; write G) / forward time, against a measured copy.",
        "- Each device is recorded by its own run; a run replaces only its device's entries.",
        "",
    ]
    for prefix in ("cpu", "gpu"):
        if prefix not in merged["commands"] and prefix not in merged["config"]:
            continue
        load = merged["results"].get(f"{prefix}_load_average_1min", [float("nan")] * 2)
        lines += [
            f"## {prefix}",
            "",
            f"- Command: `{merged['commands'].get(prefix, 'python -m benchmarks.fm_kernel')}`",
            f"- Config: `{json.dumps(merged['config'].get(prefix, {}))}`",
            f"- 1-min load average before / after: {load[0]:.2f} / {load[1]:.2f}"
            + (
                " (other processes share the cores; the CPU kernel's many small multi-threaded bmm calls slow down"
                " more than eager's two large ones when a core is taken)"
                if prefix == "cpu"
                else ""
            ),
            "",
            "| case | machine | threads | kernel | shape (B,n,d,k) | dtype | fwd ms fused / eager |"
            " fwd+bwd ms fused / eager | saved MB fused / eager | fwd GB/s (of measured) | max rel err vs f64 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for case, r in merged["results"].items():
            if not case.startswith(prefix) or not isinstance(r, dict) or "shape" not in r:
                continue
            s = r["shape"]
            lines.append(
                f"| {case} | {r.get('machine', 'see config')} | {r.get('threads', '')} | {r['kernel']} | "
                f"{s['B']},{s['n']},{s['d']},{s['k']} | {r['dtype']} | "
                f"{r['fused_fwd_ms']:.2f} / {r['eager_fwd_ms']:.2f} | {r['fused_fwdbwd_ms']:.2f} / "
                f"{r['eager_fwdbwd_ms']:.2f} | {r['fused_saved_bytes'] / 1e6:.1f} / "
                f"{r['eager_saved_bytes'] / 1e6:.1f} | "
                f"{r['fused_fwd_gbs']:.1f} ({r['fused_fwd_bandwidth_fraction']:.0%} of "
                f"{r['memory_bandwidth_gbs']:.1f}) | {r['fused_max_rel_err_vs_f64']:.1e} |"
            )
        per_run = merged["results"].get(f"{prefix}_ratios_per_run", [])
        lines += ["", f"Ratios (median of {len(per_run)} runs; per run in brackets):", ""]
        for k, v in merged["ratios"].items():
            if k.startswith(prefix) and v is not None:
                each = ", ".join(f"{r[k]:.3f}" for r in per_run if k in r)
                lines.append(f"- `{k}`: {v:.3f} [{each}]")
        lines.append("")
    missing = [k for k, v in merged["ratios"].items() if v is None]
    if missing:
        lines += [f"- {', '.join(f'`{k}`' for k in missing)}: unmeasured (no run on that device recorded yet)."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: small batch, 3 repeats, no results file")
    parser.add_argument("--json", default="", help="also write this run's results as JSON to this path")
    parser.add_argument("--record", action="store_true", help=RECORD_HELP)
    parser.add_argument("--repeats", type=int, default=FMKernelOptions.repeats, help="timed repeats")
    parser.add_argument("--runs", type=int, default=FMKernelOptions.runs, help="whole measurements (median)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present, else cpu), cpu or cuda")
    parser.add_argument(
        "--cpu-threads", default="1,2", help="comma-separated torch thread counts of the CPU case (ratios at the last)"
    )
    args = parser.parse_args(argv)
    opts = FMKernelOptions(
        quick=args.quick,
        json=args.json,
        repeats=3 if args.quick else args.repeats,
        runs=1 if args.quick else args.runs,
        device=args.device,
        cpu_threads=tuple(int(t) for t in args.cpu_threads.split(",")),
    )
    out = run(opts)
    results_json = RESULTS.with_suffix(".json")
    if args.json and Path(args.json).resolve() != results_json.resolve():
        write_json(args.json, out)
    if args.record and not opts.quick:
        command = command_line("fm_kernel", argv)
        previous = json.loads(results_json.read_text()) if results_json.exists() else None
        merged = merge(previous, out, command.strip())
        write_json(results_json, merged)
        write_markdown(merged)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
