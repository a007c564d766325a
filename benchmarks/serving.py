"""Serving latency and size: exported TorchScript (fp32, int8) vs the eager model, C2AL vs baseline export, pt2.

python -m benchmarks.serving [--quick] [--json PATH] [--record] [--data DIR]

Randomly initialised production-shaped models (one seed: C2AL and baseline share the primary weights): the eager
primary-only model and the TorchScript exports (baseline, C2AL with its aux heads dropped, int8 embeddings);
latency of ``forward(dense, kjt)`` per batch size, calls alternating (p50, p99, rows/s), and sizes. pt2: model.pt2
vs model.pt as ``serve`` runs it, through ``predict``. Goals: ``torchscript_vs_eager_p50`` <= 1.0,
``c2al_vs_baseline_export_p50`` 0.95-1.05 (geometric means over batch sizes), ``int8_vs_fp32_size`` <= 0.3,
``pt2_vs_torchscript_p50_b1`` / ``_b64`` / ``_b4096`` <= 0.67, 0.67, 1.0.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from torchrec.inference.modules import quantize_embeddings
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from benchmarks import common
from c2al_rec.config import Config
from c2al_rec.data import ParquetReader, load_schema
from c2al_rec.data.transforms import SparseIdTransform
from c2al_rec.export.exporter import build_serving, kjt_to_inputs, quantize_for_serving
from c2al_rec.export.pt2 import compile_serving_pt2
from c2al_rec.export.torchscript import ServingModel
from c2al_rec.io.digest import file_digest
from c2al_rec.modules.model import C2ALModel, tables_from_features
from c2al_rec.runs.load import TrainedRun
from c2al_rec.serve.artifact import METADATA_FILE, MODEL_FILE, load_exported, optimize_for_serving
from c2al_rec.serve.pt2_model import PT2_FILE, load_pt2

MODELS = ("eager", "ts_fp32_baseline", "ts_fp32_c2al", "ts_int8_c2al")
PT2_GOALS = {1: 0.67, 64: 0.67, 4096: 1.0}  # pt2 / TorchScript p50 by batch size (1.0 at other sizes)
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "mkldnn::_linear_pointwise")


@dataclass
class Options:
    """Benchmark options (``--quick``: ``QUICK``)."""

    rows: int = 30_000
    """Synthetic rows generated (the test split, ~10%, feeds the latency calls)."""
    num_sparse: int = 26
    """Sparse features (one table each)."""
    max_table_size: int = 1_000_000
    """Largest table (user_id)."""
    model: dict = field(default_factory=common.production_model)
    """ModelConfig fields (the train_throughput benchmark's shape)."""
    calls: dict = field(default_factory=lambda: {1: 1000, 64: 400, 512: 100})
    """Serving batch sizes and the timed calls per model at each."""
    warmup: int = 5
    """Untimed calls per model per batch size."""
    threads: int = 1
    """torch intra-op threads (1: one request per core, as served; 2 stall in OpenMP barriers on a shared machine)."""
    data: str = ""
    """Existing dataset root instead of generating one."""
    pt2: bool = True
    """Also compile model.pt2 and time it against the frozen TorchScript model (an AOTInductor compile)."""
    pt2_calls: dict = field(default_factory=lambda: {1: 1000, 64: 400, 4096: 30})
    """Batch sizes of the pt2 vs TorchScript comparison and the timed calls per format at each."""


QUICK = dict(
    rows=6_000, max_table_size=20_000, warmup=2, calls={1: 30, 64: 20, 512: 5}, pt2_calls={1: 30, 64: 20, 4096: 5}
)


def random_run(opts: Options, schema: Any, work: Path, aux_heads: bool) -> TrainedRun:
    """A randomly initialised model as a loaded run (seed 0: aux heads are built last, so the baseline
    and the C2AL model get the same primary weights)."""
    cfg = common.model_config(opts.model)
    torch.manual_seed(0)
    model = C2ALModel(tables_from_features(schema.sparse, cfg.embedding_dim), len(schema.dense), cfg, aux_heads)
    return TrainedRun(schema, model.eval(), Config(model=cfg), None, work, {})


def build_models(opts: Options, schema: Any, work: Path) -> tuple[dict[str, Callable], dict[str, Any]]:
    """The four serving models (callables ``(dense, kjt) -> probs``) and their sizes."""
    loaded = {"baseline": random_run(opts, schema, work, False), "c2al": random_run(opts, schema, work, True)}
    fp32 = loaded["c2al"].model.without_aux_heads()
    models: dict[str, Callable] = {"eager": ServingModel(SparseIdTransform(schema.sparse), fp32).eval()}
    sizes: dict[str, Any] = {}
    for name, source, quantize in (
        ("ts_fp32_baseline", "baseline", "none"), ("ts_fp32_c2al", "c2al", "none"), ("ts_int8_c2al", "c2al", "int8")
    ):  # fmt: skip
        build_serving(loaded[source], quantize)[0].save(str(work / f"{name}.pt"))
        models[name] = torch.jit.load(str(work / f"{name}.pt"), map_location="cpu").eval()
        sizes[f"{name}_model_pt_bytes"] = (work / f"{name}.pt").stat().st_size
    int8 = quantize_for_serving(copy.deepcopy(fp32), "int8")  # what `export --quantize int8` ships
    padded = quantize_embeddings(copy.deepcopy(fp32), dtype=torch.qint8, inplace=True)  # torchrec's 16-byte rows
    # embedding storage: every tensor of the sparse arch's state dict (int8 tables: rows + per-row scale / bias)
    for name, model in (("fp32", fp32), ("int8", int8), ("int8_align16", padded)):
        tensors = [t for t in model.sparse_arch.state_dict().values() if isinstance(t, torch.Tensor)]
        sizes[f"{name}_embedding_bytes"] = sum(t.numel() * t.element_size() for t in tensors)
    sizes["int8_vs_align16_max_abs_diff"] = _max_diff(int8, padded, schema)
    sizes["embedding_rows"] = sum(f.num_embeddings for f in schema.sparse)
    return models, sizes


def _max_diff(a: nn.Module, b: nn.Module, schema: Any, rows: int = 64) -> float:
    """Max |logit difference| of two primary-only models on random in-range inputs."""
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.randint(0, f.num_embeddings, (rows,), generator=g) for f in schema.sparse])
    lengths = torch.ones(rows * len(schema.sparse), dtype=torch.int64)
    kjt = KeyedJaggedTensor.from_lengths_sync([f.name for f in schema.sparse], values, lengths)
    dense = torch.randn(rows, len(schema.dense), generator=g)
    with torch.no_grad():
        return float((a(dense, kjt)["primary"] - b(dense, kjt)["primary"]).abs().max())


def measure(models: dict[str, Callable], args: tuple, calls: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call ``model(*args)`` of each model after ``warmup`` untimed rounds, calls alternating (rotating)."""
    fns = {k: lambda fn=fn: fn(*args) for k, fn in models.items()}
    with torch.inference_mode():
        common.interleaved_seconds(fns, warmup)
        return common.interleaved_seconds(fns, calls, rotate=True)


def p50_p99_ms(seconds: list[float]) -> tuple[float, float]:
    return float(np.percentile(seconds, 50) * 1e3), float(np.percentile(seconds, 99) * 1e3)


def pt2_vs_torchscript(opts: Options, run_c2al: TrainedRun, root: Path, work: Path) -> dict[str, Any]:
    """The C2AL export's model.pt2 against its model.pt frozen and optimised (as ``serve`` loads each),
    both through ``predict(Dict[str, Tensor])``; latency per batch size, export time, sizes, load times."""
    schema, export = run_c2al.schema, work / "export"
    export.mkdir()
    build_serving(run_c2al)[0].save(str(export / MODEL_FILE))
    r: dict[str, Any] = {"pt2_export_s": compile_serving_pt2(run_c2al, export / PT2_FILE)}
    meta = {"dense": list(schema.dense), "sparse": [dataclasses.asdict(f) for f in schema.sparse]}
    meta["artifacts"] = {name: file_digest(export / name) for name in (MODEL_FILE, PT2_FILE)}  # as export lists
    (export / METADATA_FILE).write_text(json.dumps(meta))
    t0 = time.perf_counter()
    ts, r["torchscript_served_as"] = optimize_for_serving(load_exported(export))
    r["torchscript_load_s"] = time.perf_counter() - t0  # torch.jit.load + freeze + optimize_for_inference
    t0 = time.perf_counter()
    pt2 = load_pt2(export)
    r["pt2_load_s"] = time.perf_counter() - t0  # sha256 of model.pt2 + aoti_load_package
    r["pt2_sha256_s"] = common.timed(lambda: file_digest(export / PT2_FILE))
    r["model_pt2_bytes"], r["model_pt_bytes"] = (export / PT2_FILE).stat().st_size, (export / MODEL_FILE).stat().st_size
    for b, calls in opts.pt2_calls.items():
        batch = next(iter(ParquetReader(root, schema, "train", b, shuffle=False)))  # the largest split
        inputs = kjt_to_inputs(batch.dense_features, batch.sparse_features)
        with torch.inference_mode():
            r[f"pt2_vs_torchscript_max_abs_diff_b{b}"] = float((pt2.predict(inputs) - ts.predict(inputs)).abs().max())
        models = {"torchscript": ts.module.predict, "pt2": pt2.module.predict}
        for name, seconds in measure(models, (inputs,), calls, opts.warmup).items():
            r[f"{name}_predict_b{b}_p50_ms"], r[f"{name}_predict_b{b}_p99_ms"] = p50_p99_ms(seconds)
        r[f"pt2_vs_torchscript_p50_b{b}"] = r[f"pt2_predict_b{b}_p50_ms"] / r[f"torchscript_predict_b{b}_p50_ms"]
        r[f"torchscript_gemm_b{b}_ms"] = _gemm_ms(ts.module.predict, inputs, max(3, calls // 20))
        # the host-side checks alone (Pt2Program.check): the part of pt2's time outside the compiled call
        r[f"pt2_host_checks_b{b}_p50_ms"] = p50_p99_ms(measure({"c": pt2.module.check}, (inputs,), 200, 5)["c"])[0]
    return r


def _gemm_ms(fn: Callable, inputs: dict, calls: int) -> float:
    """Milliseconds per call that ``fn`` spends in GEMMs (self time of ``GEMM_OPS``, torch.profiler): the
    same MKL calls the compiled pt2 program makes, so the floor of its latency."""
    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn(inputs)
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in GEMM_OPS) / calls / 1e3


def run(opts: Options) -> dict:
    """Build, export, time; returns ``{"benchmark", "config", "results", "ratios"}`` in its JSON form."""
    torch.set_num_threads(opts.threads)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="c2al-bench-serve-") as tmp:
        work = Path(tmp)
        root = common.synthetic_root(opts, work)
        schema = load_schema(root)
        models, results = build_models(opts, schema, work)
        split = "test" if "test" in schema.splits else None
        for b, calls in opts.calls.items():
            batch = next(iter(ParquetReader(root, schema, split, b, shuffle=False)))
            args = (batch.dense_features, batch.sparse_features)
            with torch.no_grad():  # same inputs, same primary weights: all four agree (int8 approximately)
                ref = models["eager"](*args)
                for name in ("ts_fp32_baseline", "ts_fp32_c2al"):
                    results[f"{name}_max_abs_diff_vs_eager"] = float((models[name](*args) - ref).abs().max())
            for name, seconds in measure(models, args, calls, opts.warmup).items():
                results[f"{name}_b{b}_p50_ms"], results[f"{name}_b{b}_p99_ms"] = p50_p99_ms(seconds)
                results[f"{name}_b{b}_rows_per_s"] = float(b / np.mean(seconds))
            p50 = {name: results[f"{name}_b{b}_p50_ms"] for name in models}
            results[f"torchscript_vs_eager_p50_b{b}"] = p50["ts_fp32_c2al"] / p50["eager"]
            results[f"c2al_vs_baseline_export_p50_b{b}"] = p50["ts_fp32_c2al"] / p50["ts_fp32_baseline"]
        if opts.pt2:
            del models  # the four TorchScript models: memory for the compile
            results.update(pt2_vs_torchscript(opts, random_run(opts, schema, work, True), root, work))
        results["load_average_1min"] = [load_before, os.getloadavg()[0]]
    gmean = lambda key: statistics.geometric_mean(results[f"{key}_b{b}"] for b in opts.calls)  # noqa: E731
    ratios = {
        "torchscript_vs_eager_p50": gmean("torchscript_vs_eager_p50"),
        "c2al_vs_baseline_export_p50": gmean("c2al_vs_baseline_export_p50"),
        "int8_vs_fp32_size": results["int8_embedding_bytes"] / results["fp32_embedding_bytes"],
        "int8_vs_fp32_model_pt_size": results["ts_int8_c2al_model_pt_bytes"] / results["ts_fp32_c2al_model_pt_bytes"],
        "int8_align16_vs_fp32_size": results["int8_align16_embedding_bytes"] / results["fp32_embedding_bytes"],
        **{k: v for k, v in results.items() if k.startswith("pt2_vs_torchscript_p50_b")},
    }
    config = {**dataclasses.asdict(opts), "machine": common.machine(), "threads": torch.get_num_threads()}
    # the record's form (tuples as lists, int keys as strings): the markdown printed now is the one its JSON renders
    return json.loads(json.dumps({"benchmark": "serving", "config": config, "results": results, "ratios": ratios}))


def _markdown(out: dict, command: str) -> str:
    r, q, c = out["results"], out["ratios"], out["config"]
    batch_sizes = c["calls"]  # the record's keys: batch sizes as strings
    per_b = lambda key: ", ".join(f"b{b} {r[f'{key}_b{b}']:.3f}" for b in batch_sizes)  # noqa: E731
    latency = [
        [name, b, *(f"{r[f'{name}_b{b}_{k}_ms']:.3f}" for k in ("p50", "p99")), f"{r[f'{name}_b{b}_rows_per_s']:,.0f}"]
        for b in batch_sizes
        for name in MODELS
    ]
    sizes = [
        [f"fp32 embeddings ({r['embedding_rows']:,} rows)", f"{r['fp32_embedding_bytes']:,}"],
        ["int8 embeddings as exported (rows + scale/bias, 4-byte row alignment)", f"{r['int8_embedding_bytes']:,}"],
        ["int8 embeddings, torchrec's default 16-byte alignment", f"{r['int8_align16_embedding_bytes']:,}"],
        *([f"{name} model.pt", f"{r[f'{name}_model_pt_bytes']:,}"] for name in MODELS[1:]),
    ]
    lines = [
        *common.results_header("Serving latency and size", c, command),
        "",
        f"Latency of `forward(dense, kjt)`, {c['threads']} torch thread(s), calls alternating between the models; "
        f"ms. Load average (1 min) before / after: {r['load_average_1min'][0]:.1f} / {r['load_average_1min'][1]:.1f} "
        "(the machine is shared).",
        "",
        *common.md_table(["model", "batch", "p50 ms", "p99 ms", "rows/s"], latency, "lrrrr"),
        "",
        *common.md_table(["size", "bytes"], sizes, "lr"),
        "",
        f"- torchscript_vs_eager_p50 (fp32 export / eager, geometric mean over batches, goal <= 1.0): "
        f"{q['torchscript_vs_eager_p50']:.3f} ({per_b('torchscript_vs_eager_p50')})",
        f"- c2al_vs_baseline_export_p50 (goal 0.95-1.05): {q['c2al_vs_baseline_export_p50']:.3f} "
        f"({per_b('c2al_vs_baseline_export_p50')})",
        f"- int8_vs_fp32_size (embedding storage, goal <= 0.3): {q['int8_vs_fp32_size']:.3f}; "
        f"model.pt: {q['int8_vs_fp32_model_pt_size']:.3f}; with torchrec's default 16-byte row alignment "
        f"{q['int8_align16_vs_fp32_size']:.3f} (logits vs 4-byte: max |diff| {r['int8_vs_align16_max_abs_diff']:.1e})",
        f"- max |p| difference vs eager: baseline export {r['ts_fp32_baseline_max_abs_diff_vs_eager']:.2e}, "
        f"C2AL export {r['ts_fp32_c2al_max_abs_diff_vs_eager']:.2e} (same primary weights)",
        "",
    ]
    return "\n".join(lines + (_pt2_markdown(r, c) if c["pt2"] else []))


def _pt2_markdown(r: dict, c: dict) -> list[str]:
    rows = [
        [b, *(f"{r[f'{fmt}_predict_b{b}_{k}_ms']:.3f}" for fmt in ("torchscript", "pt2") for k in ("p50", "p99")),
         f"**{r[f'pt2_vs_torchscript_p50_b{b}']:.3f}** (<= {PT2_GOALS.get(int(b), 1.0)})",
         f"{r[f'pt2_host_checks_b{b}_p50_ms']:.3f}", f"{r[f'pt2_vs_torchscript_max_abs_diff_b{b}']:.1e}"]
        for b in c["pt2_calls"]
    ]  # fmt: skip
    header = ["batch", "TorchScript p50", "TorchScript p99", "pt2 p50", "pt2 p99", "pt2 / TorchScript p50 (goal)",
              "pt2 host checks p50", "max abs diff"]  # fmt: skip
    gemm = [f"b{b} {r[f'torchscript_gemm_b{b}_ms']:.3f} ms = "
            f"{r[f'torchscript_gemm_b{b}_ms'] / r[f'torchscript_predict_b{b}_p50_ms']:.2f} of its p50"
            for b in c["pt2_calls"]]  # fmt: skip
    return [
        "## model.pt2 (AOTInductor) vs model.pt (TorchScript, frozen and optimised as `serve` runs it)",
        "",
        f"Latency of `predict(Dict[str, Tensor])` (pt2: host id checks + compiled call), {c['threads']} thread, "
        "calls alternating between the two, inputs built before timing; ms.",
        "",
        *common.md_table(header, rows, "r" * len(header)),
        "",
        f"TorchScript's GEMM time per call (self time of {', '.join(GEMM_OPS[:3])} under torch.profiler), which pt2 "
        "runs too, so the floor of pt2 / TorchScript at this precision: " + ", ".join(gemm) + ".",
        "",
        f"- pt2 export (torch.export + AOTInductor compile): {r['pt2_export_s']:.1f} s",
        f"- size: model.pt2 {r['model_pt2_bytes']:,} bytes, model.pt {r['model_pt_bytes']:,} bytes",
        f"- load: pt2 {r['pt2_load_s']:.2f} s (of which sha256 {r['pt2_sha256_s']:.2f} s), TorchScript "
        f"{r['torchscript_load_s']:.2f} s (torch.jit.load + freeze + optimize_for_inference)",
        "",
    ]


def main(argv: Optional[list[str]] = None) -> int:
    args = common.base_parser(__doc__, "small sizes (seconds)").parse_args(argv)
    opts = dataclasses.replace(Options(**QUICK) if args.quick else Options(), data=args.data)
    return common.finish("serving", run(opts), _markdown, argv, args.quick, args.json, args.record)


if __name__ == "__main__":
    sys.exit(main())
