"""DHEN over-arch training step: the fused FM op vs plain-PyTorch FM math, eager and torch.compile.

python -m benchmarks.dhen_step [--quick] [--json PATH] [--record] [--device auto|cpu|cuda] [--threads N]
    [--batch-size B] [--steps N] [--warmup N] [--bf16|--no-bf16]

Tokens [B, n, d] -> 2 DHEN layers [fm, linear] -> linear head -> BCE -> backward -> Adam, without torchrec, at
n=64, d=128, k=32 (CUDA: bf16, B=16384; CPU: fp32, B=256), one step of each variant in turn (medians). Ratios
``<device>_<a>_vs_<b>`` = samples/s of a / of b; GPU goal ``gpu_compiled_fused_vs_compiled_reference`` >= 1.2.
``--record`` merges this device's entries into ``results/dhen_step.json`` and rewrites ``dhen_step.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import common
from c2al_rec.modules.dhen import DHEN
from c2al_rec.modules.interactions import FMInteraction
from c2al_rec.ops import select_kernel

VARIANTS = ("reference", "fused", "compiled_reference", "compiled_fused")
# (a, b) pairs reported as <device>_<a>_vs_<b>: samples/s of a over samples/s of b
RATIO_PAIRS = (("fused", "reference"), ("fused", "compiled_reference"), ("compiled_fused", "compiled_reference"),
               ("compiled_reference", "reference"), ("compiled_fused", "fused"))  # fmt: skip
ALWAYS = [f"{p}_{a}_vs_{b}" for p in ("cpu", "gpu") for a, b in RATIO_PAIRS]  # named in the record, null if unmeasured
NOISY_LOAD = 1.5  # 1-min load average above which a CPU entry is flagged as noisy (2 cores)


@dataclass
class Options:
    """Benchmark options; ``None`` fields take the device's default."""

    device: str = "auto"
    """cuda when a GPU is present, else cpu (or name one)."""
    num_tokens: int = 64
    """n: tokens into the first DHEN layer."""
    model: dict[str, Any] = field(default_factory=lambda: dict(
        embedding_dim=128, dhen_layers=[["fm", "linear"], ["fm", "linear"]],
        fm={"rank": 32, "compressed_tokens": 16, "out_tokens": 16, "mlp": [512]}, linear={"out_tokens": 16},
    ))  # fmt: skip
    """ModelConfig fields of the over-arch measured in the issue (2 DHEN layers [fm, linear])."""
    batch_size: Optional[int] = None
    """B; default 16384 on CUDA, 256 on CPU."""
    bf16: Optional[bool] = None
    """bf16 autocast of the forward; default on for CUDA, off for CPU."""
    warmup: int = 5
    """Untimed steps per variant first (compilation, autotuning)."""
    steps: int = 30
    """Timed steps per variant; the median is reported."""
    threads: int = field(default_factory=torch.get_num_threads)
    """torch intra-op threads (CPU)."""
    lr: float = 1e-3
    """Adam learning rate."""
    seed: int = 0
    """Seed of the model and the data (the same for every variant)."""
    compile_backend: str = "inductor"
    """torch.compile backend of the compiled variants (tests use aot_eager: no C++ compile)."""


# smoke run, mostly compilation: a small over-arch of the same structure
QUICK = dict(
    num_tokens=16, batch_size=64, warmup=1, steps=2, model=dict(
        embedding_dim=32, dhen_layers=[["fm", "linear"], ["fm", "linear"]],
        fm={"rank": 8, "compressed_tokens": 4, "out_tokens": 8, "mlp": [64]}, linear={"out_tokens": 8},
    ),
)  # fmt: skip


def make_step(variant: str, opts: Options, device: torch.device) -> tuple[Callable[[], torch.Tensor], str]:
    """A closure running one training step of ``variant`` (returns the loss); and the FM kernel it uses.
    ``opts``: resolved for the device (``batch_size`` and ``bf16`` set)."""
    torch.manual_seed(opts.seed)
    cfg = common.model_config(opts.model)
    dhen = DHEN(opts.num_tokens, cfg, device)  # then flatten, then a linear head: [B, n, d] -> logits [B, 1]
    model = nn.Sequential(dhen, nn.Flatten(1), nn.Linear(dhen.num_out_tokens * cfg.embedding_dim, 1, device=device))
    reference = variant.endswith("reference")
    for m in model.modules():
        if isinstance(m, FMInteraction):
            m.use_reference = reference
    g = torch.Generator(device=device).manual_seed(opts.seed)
    x = torch.randn(opts.batch_size, opts.num_tokens, cfg.embedding_dim, device=device, generator=g).requires_grad_()
    label = (torch.rand(opts.batch_size, device=device, generator=g) < 0.3).float()
    opt = torch.optim.Adam(model.parameters(), lr=opts.lr, **(dict(fused=True) if device.type == "cuda" else {}))

    def loss_fn(x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(opts.bf16)):
            logits = model(x).squeeze(-1)
        return F.binary_cross_entropy_with_logits(logits.float(), label)

    compiled = variant.startswith("compiled")
    fn = torch.compile(loss_fn, fullgraph=True, backend=opts.compile_backend) if compiled else loss_fn

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        x.grad = None
        loss = fn(x, label)
        loss.backward()
        opt.step()
        return loss.detach()

    # the kernel the op picks for the dtype it sees (bf16 under autocast, by its precision policy)
    dtype = torch.bfloat16 if opts.bf16 else torch.float32
    probe = [torch.empty(1, opts.num_tokens, w, device=device, dtype=dtype) for w in (cfg.embedding_dim, cfg.fm.rank)]
    return step, "plain PyTorch" if reference else select_kernel(*probe)


def time_variants(opts: Options, device: torch.device) -> dict[str, dict[str, Any]]:
    """Warm every variant up, then time ``opts.steps`` rounds of one step per variant, interleaved
    (load from other processes on a shared machine then hits all variants alike); medians."""
    steps, kernels, warm, first, last = {}, {}, {}, {}, {}
    for v in VARIANTS:
        t0 = time.perf_counter()
        steps[v], kernels[v] = make_step(v, opts, device)
        first[v] = float(steps[v]())
        common.timed(steps[v], opts.warmup - 1)
        common.sync(device)
        warm[v] = time.perf_counter() - t0
    stepped = {v: lambda v=v: last.__setitem__(v, steps[v]()) for v in VARIANTS}  # keeps each variant's last loss
    times = common.interleaved_seconds(stepped, opts.steps, device)
    results = {}
    for v in VARIANTS:
        med = statistics.median(times[v])
        results[v] = {
            "device": device.type, "fm_kernel": kernels[v], "step_ms": 1e3 * med, "step_ms_min": 1e3 * min(times[v]),
            "samples_per_s": opts.batch_size / med, "warmup_s": warm[v], "first_loss": first[v],
            "last_loss": float(last[v]),
        }  # fmt: skip
        print(f"[{v}] " + json.dumps({k: round(x, 4) if isinstance(x, float) else x for k, x in results[v].items()}))
    return results


def run(opts: Options) -> dict[str, Any]:
    """Time the four variants on one device; return ``{"benchmark", "device", "config", "results", "ratios"}``."""
    if opts.warmup < 1 or opts.steps < 1:
        raise ValueError("--warmup and --steps must be at least 1")
    device = torch.device(common.resolve_device(opts.device))
    torch.set_num_threads(opts.threads)
    cuda = device.type == "cuda"  # the device's defaults: B=16384 under bf16 on CUDA, B=256 in fp32 on CPU
    bf16 = cuda if opts.bf16 is None else opts.bf16
    opts = dataclasses.replace(opts, batch_size=opts.batch_size or (16384 if cuda else 256), bf16=bf16)
    load_before = os.getloadavg()[0]
    results = time_variants(opts, device)
    prefix = "gpu" if cuda else "cpu"  # of this device's ratios and entry in the record
    ratios = {f"{prefix}_{a}_vs_{b}": results[a]["samples_per_s"] / results[b]["samples_per_s"] for a, b in RATIO_PAIRS}
    config = {**dataclasses.asdict(opts), "device": device.type}
    return {
        "benchmark": "dhen_step", "device": prefix, "machine": common.accelerator_machine(), "config": config,
        "results": results, "ratios": ratios, "load_average_1min": [load_before, os.getloadavg()[0]],
    }  # fmt: skip


def _markdown(merged: dict[str, Any]) -> str:
    """``dhen_step.md`` from the merged results file (every device recorded so far)."""
    lines = [
        "# dhen_step: DHEN over-arch training step, fused FM op vs plain-PyTorch FM math",
        "",
        "A training step (forward, BCE, backward, Adam) of 2 DHEN layers [fm, linear] and a linear head, without",
        "torchrec. `fused`: the `c2al::fm_interaction` op; `compiled_*`: under `torch.compile(fullgraph=True)`;",
        "medians of rounds of one step per variant. `<device>_<a>_vs_<b>` = samples/s of a / of b (> 1: a faster).",
        "",
    ]
    header = ["variant", "FM math", "step ms (median)", "step ms (min)", "samples/s", "warm-up s", "first / last loss"]
    for prefix in ("gpu", "cpu"):
        lines += [f"## {prefix}", ""]
        if (entry := merged["devices"].get(prefix)) is None:
            how = " Run `scripts/gpu_check.sh` on a GPU machine." if prefix == "gpu" else " "
            lines += [f"Unmeasured: no {prefix.upper()} run has been recorded (`{prefix}_*` ratios are null).{how}", ""]
            continue
        load = entry["load_average_1min"]
        lines += [
            f"- Device: {entry['config']['device']}; machine: {entry['machine']}",
            f"- Command: `{entry['command']}`",
            f"- Config: `{json.dumps(entry['config'])}`",
            f"- 1-min load average before / after: {load[0]:.2f} / {load[1]:.2f}",
        ]
        if prefix == "cpu" and max(load) > NOISY_LOAD:
            lines.append(
                "- Noisy: other processes were using this 2-core machine's cores during the run (load average above "
                f"{NOISY_LOAD}); re-record on a quiet machine."
            )
        rows = [
            [v, r["fm_kernel"], f"{r['step_ms']:.2f}", f"{r['step_ms_min']:.2f}", f"{r['samples_per_s']:,.0f}",
             f"{r['warmup_s']:.1f}", f"{r['first_loss']:.4f} / {r['last_loss']:.4f}"]
            for v, r in entry["results"].items()
        ]  # fmt: skip
        lines += ["", *common.md_table(header, rows), "", *common.ratio_lines(merged["ratios"], prefix), ""]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = common.base_parser(__doc__, "smoke run: small model, B=64, 1 + 2 steps", data=False)
    common.add_option_flags(parser, Options)
    args = parser.parse_args(argv)
    opts = common.options_from_args(Options, args, Options(**QUICK) if args.quick else None)
    return common.finish("dhen_step", run(opts), _markdown, argv, args.quick, args.json, args.record, ALWAYS)


if __name__ == "__main__":
    raise SystemExit(main())
