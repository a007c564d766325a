"""FM interaction op (c2al::fm_interaction) vs the eager reference (two bmm + autograd).

python -m benchmarks.fm_kernel [--quick] [--json PATH] [--record] [--device auto|cpu|cuda] [--runs N]
    [--repeats N] [--cpu-threads N ...]

Fused and eager timed alternately: forward and forward+backward time, bytes saved for backward, the forward's
bytes/s against a measured copy. One device per run: CPU fp32 at each of ``cpu_threads``, or CUDA bf16; the
ratios are medians of ``runs`` measurements. Goals: ``<device>_fwdbwd_speedup`` (eager / fused) CPU >= 1.3,
H100 >= 2.5; ``cpu_saved_memory_ratio`` (fused / eager) <= 0.75. ``--record`` merges this device's entries into
``results/fm_kernel.json`` (the other device's are kept) and rewrites ``fm_kernel.md`` from it.
"""

import dataclasses
import json
import os
import statistics
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from benchmarks import common
from c2al_rec.ops import fm_interaction, select_kernel


@dataclass
class Options:
    """Benchmark options (``--quick``: ``QUICK``)."""

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
    cpu_threads: tuple[int, ...] = (1, 2)
    """torch intra-op thread counts of the CPU case (the cpu_ ratios are at the last)."""
    device: str = "auto"
    """Device measured: auto (cuda when present, else cpu), cpu or cuda."""


ALWAYS = ["gpu_fwd_speedup", "gpu_fwdbwd_speedup", "gpu_fwd_hbm_fraction"]  # named in the record, null if unmeasured
QUICK = dict(cpu_shape=(512, 32, 64, 16), gpu_shape=(8192, 64, 128, 32), repeats=3, runs=1)  # smoke run: B / 8


def _medians(fns: list[Callable[[], object]], device: torch.device, opts: Options) -> list[float]:
    """Median seconds of each function, timed alternately after ``opts.warmup`` untimed calls of each."""
    common.interleaved_seconds(dict(enumerate(fns)), opts.warmup, device)
    times = common.interleaved_seconds(dict(enumerate(fns)), opts.repeats, device)
    return [statistics.median_high(t) for t in times.values()]  # upper median: an observed time


def eager(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The baseline: T = X^T Y, G = X T as two bmm, differentiated by autograd."""
    return torch.bmm(x, torch.bmm(x.transpose(1, 2), y))


def saved_bytes(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x, y) -> int:
    """Bytes of the distinct storages autograd saves for backward during one forward."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x, y)
    return sum(storages.values())


def run_case(name: str, shape, dtype: torch.dtype, device: torch.device, opts: Options) -> dict:
    """Times, saved bytes, bandwidth and error of the op and of ``eager`` at ``shape`` = (B, n, d, k)."""
    b, n, d, k = shape
    g = torch.Generator(device=device).manual_seed(0)
    x, y, dg = (torch.randn(b, n, m, device=device, generator=g).to(dtype) for m in (d, k, k))
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()

    def fwdbwd(fn: Callable) -> Callable[[], None]:
        def step() -> None:
            xg.grad = yg.grad = None
            fn(xg, yg).backward(dg)

        return step

    with torch.no_grad():
        ref = eager(x.double(), y.double())
        err = float((fm_interaction(x, y).double() - ref).abs().max() / ref.abs().max())
        fused_fwd, eager_fwd = _medians([lambda: fm_interaction(x, y), lambda: eager(x, y)], device, opts)
    fused_fb, eager_fb = _medians([fwdbwd(fm_interaction), fwdbwd(eager)], device, opts)
    fwd_bytes = b * (n * d + 2 * n * k) * x.element_size()  # read X, Y; write G
    src = torch.empty(64 * 1024 * 1024, dtype=torch.float32, device=device).normal_()  # 256 MiB
    dst = torch.empty_like(src)
    bandwidth = 2 * src.nbytes / _medians([lambda: dst.copy_(src)], device, opts)[0]  # a copy: read + write, bytes/s
    res = {
        "shape": {"B": b, "n": n, "d": d, "k": k}, "dtype": str(dtype).replace("torch.", ""), "device": device.type,
        "kernel": select_kernel(x, y, "auto"), "fused_fwd_ms": 1e3 * fused_fwd, "eager_fwd_ms": 1e3 * eager_fwd,
        "fused_fwdbwd_ms": 1e3 * fused_fb, "eager_fwdbwd_ms": 1e3 * eager_fb,
        "fused_saved_bytes": saved_bytes(fm_interaction, xg, yg), "eager_saved_bytes": saved_bytes(eager, xg, yg),
        "fused_max_rel_err_vs_f64": err, "forward_bytes": fwd_bytes, "memory_bandwidth_gbs": bandwidth / 1e9,
        "fused_fwd_gbs": fwd_bytes / fused_fwd / 1e9, "eager_fwd_gbs": fwd_bytes / eager_fwd / 1e9,
        "forward_gflop": 4 * b * n * d * k / 1e9, "fused_fwd_bandwidth_fraction": fwd_bytes / fused_fwd / bandwidth,
    }  # fmt: skip
    print(f"[{name}] " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}))
    return res


def _measure(opts: Options) -> tuple[dict, dict]:
    """One measurement of this run's device, its results ({"cpu_t<N>"..., "cpu"} or {"gpu"}) and ratios."""
    if common.resolve_device(opts.device) == "cuda":
        res = run_case("gpu", opts.gpu_shape, torch.bfloat16, torch.device("cuda"), opts)
        results = {"gpu": {**res, "threads": torch.get_num_threads(), "machine": common.accelerator_machine()}}
    else:
        results, threads_before = {}, torch.get_num_threads()
        for i, threads in enumerate(opts.cpu_threads):
            torch.set_num_threads(threads)
            res = run_case(f"cpu t{threads}", opts.cpu_shape, torch.float32, torch.device("cpu"), opts)
            case = "cpu" if i == len(opts.cpu_threads) - 1 else f"cpu_t{threads}"
            results[case] = {**res, "threads": threads, "machine": common.accelerator_machine()}
        torch.set_num_threads(threads_before)
    prefix = "gpu" if "gpu" in results else "cpu"
    r = results[prefix]
    ratios = {
        f"{prefix}_fwd_speedup": r["eager_fwd_ms"] / r["fused_fwd_ms"],
        f"{prefix}_fwdbwd_speedup": r["eager_fwdbwd_ms"] / r["fused_fwdbwd_ms"],
        f"{prefix}_saved_memory_ratio": r["fused_saved_bytes"] / r["eager_saved_bytes"],
        "gpu_fwd_hbm_fraction" if prefix == "gpu" else "cpu_fwd_bandwidth_fraction": r["fused_fwd_bandwidth_fraction"],
    }
    cpu = [r for case, r in results.items() if case.startswith("cpu")]
    ratios.update({f"cpu_fwdbwd_speedup_t{r['threads']}": r["eager_fwdbwd_ms"] / r["fused_fwdbwd_ms"] for r in cpu})
    return results, ratios


def run(opts: Options) -> dict:
    """``opts.runs`` whole measurements: their median ratios, the results of the run whose fwd+bwd ratio is
    the median, every run's ratios."""
    load_before = os.getloadavg()[0]
    runs = [_measure(opts) for _ in range(opts.runs)]
    per_run = [ratios for _, ratios in runs]
    ratios = {k: statistics.median_high([r[k] for r in per_run]) for k in per_run[0]}
    device = "gpu" if "gpu_fwdbwd_speedup" in ratios else "cpu"
    results = sorted(runs, key=lambda run: run[1][f"{device}_fwdbwd_speedup"])[len(runs) // 2][0]
    return {
        "benchmark": "fm_kernel", "device": device, "config": dataclasses.asdict(opts), "results": results,
        "ratios_per_run": per_run, "load_average_1min": [load_before, os.getloadavg()[0]], "ratios": ratios,
    }  # fmt: skip


def markdown(merged: dict) -> str:
    """``fm_kernel.md`` from the merged results file (every device recorded so far)."""
    lines = [
        "# fm_kernel: c2al::fm_interaction vs eager two-bmm + autograd",
        "",
        "Medians of fused and eager timed alternately; 'saved': bytes autograd keeps for backward; GB/s: forward",
        "bytes (read X, Y; write G) / forward time, against a measured copy. Each device is recorded by its own run.",
        "",
    ]
    header = [
        "case", "machine", "threads", "kernel", "shape (B,n,d,k)", "dtype", "fwd ms fused / eager",
        "fwd+bwd ms fused / eager", "saved MB fused / eager", "fwd GB/s (of measured)", "max rel err vs f64",
    ]  # fmt: skip
    for prefix, entry in sorted(merged["devices"].items()):  # cpu, then gpu
        load, per_run = entry["load_average_1min"], entry["ratios_per_run"]
        threads = max(r["threads"] for r in entry["results"].values())
        busy = f" (above the {threads} threads timed: other processes shared the cores)" if max(load) > threads else ""
        rows = [
            [case, r["machine"], r["threads"], r["kernel"], ",".join(map(str, r["shape"].values())), r["dtype"],
             f"{r['fused_fwd_ms']:.2f} / {r['eager_fwd_ms']:.2f}",
             f"{r['fused_fwdbwd_ms']:.2f} / {r['eager_fwdbwd_ms']:.2f}",
             f"{r['fused_saved_bytes'] / 1e6:.1f} / {r['eager_saved_bytes'] / 1e6:.1f}",
             f"{r['fused_fwd_gbs']:.1f} ({r['fused_fwd_bandwidth_fraction']:.0%} of {r['memory_bandwidth_gbs']:.1f})",
             f"{r['fused_max_rel_err_vs_f64']:.1e}"]
            for case, r in entry["results"].items()
        ]  # fmt: skip
        lines += [
            f"## {prefix}",
            "",
            f"- Command: `{entry['command']}`",
            f"- Config: `{json.dumps(entry['config'])}`",
            f"- 1-min load average before / after: {load[0]:.2f} / {load[1]:.2f}{busy}",
            "",
            *common.md_table(header, rows),
            "",
            f"Ratios (median of {len(per_run)} runs; per run in brackets):",
            "",
            *common.ratio_lines(merged["ratios"], prefix, per_run),
            "",
        ]
    if missing := [f"`{k}`" for k, v in merged["ratios"].items() if v is None]:
        lines.append(f"- {', '.join(missing)}: unmeasured (no run on that device recorded yet).")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = common.base_parser(__doc__, "smoke run: batch / 8, 3 repeats, 1 run", data=False)
    common.add_option_flags(parser, Options)
    args = parser.parse_args(argv)
    opts = common.options_from_args(Options, args, Options(**QUICK) if args.quick else None)
    return common.finish("fm_kernel", run(opts), markdown, argv, args.quick, args.json, args.record, ALWAYS)


if __name__ == "__main__":
    raise SystemExit(main())
