"""Data loader throughput: Parquet -> Batch (ParquetReader) against the raw pyarrow read.

python -m benchmarks.data_loader [--quick] [--json PATH] [--data DIR]

On planted-cohort synthetic data (generated into a temporary directory unless ``--data`` names a
dataset), measures in the same run, interleaved, best of ``repeats``:
- ``pyarrow``: ``pyarrow.dataset`` record batches of the same columns and batch size (no tensors);
- ``loader_file_order``: ParquetReader with ``shuffle=False``;
- ``loader_shuffled``: ParquetReader with the training settings (window shuffle);
- ``loader_rank0_of_2``, ``loader_rank1_of_2``: each rank of 2, read alone (rows it yields per
  second; a rank reads only its lanes of every round, see ``c2al_rec/data/order.py``), and
  ``loader_2_ranks``: both ranks read concurrently in two threads (rows of both per second).
Ratios: ``loader_vs_pyarrow`` = shuffled loader / pyarrow (goal >= 0.5),
``loader_rank_vs_1_rank`` = the slower rank of 2 / the 1-rank shuffled loader (rows yielded per
second; about 1 when a rank reads only its share, about 0.5 when every rank reads everything), and
``loader_vs_train_step`` = shuffled loader rows/s / the real training step's samples/s (goal >= 5),
the Trainer (1 rank, C2AL off, the train_throughput benchmark's model) on the same data and batch
size, fp32 and bf16 autocast; the faster (stricter) one is used.
Also records the synthetic generator's rows per minute (goal >= 1M on 2 cores).
With ``--record`` writes ``benchmarks/results/data_loader.md``; ``--json PATH`` writes
``{"benchmark", "config", "results", "ratios"}``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pyarrow.dataset as ds

from benchmarks.common import base_parser, finish, machine, results_header
from c2al_rec.config import SyntheticConfig
from c2al_rec.data import ParquetReader, load_schema
from c2al_rec.data.synthetic import generate_synthetic


@dataclass
class Options:
    """Benchmark options (``--quick`` shrinks them)."""

    rows: int = 2_000_000
    """Synthetic rows generated (all splits; the train split, ~80%, is read)."""
    max_table_size: int = 1_000_000
    """Largest synthetic id table."""
    batch_size: int = 4096
    """Rows per batch for both the loader and the pyarrow baseline."""
    shuffle_buffer: int = 65_536
    """Loader shuffle window, rows."""
    repeats: int = 3
    """Interleaved repetitions; the best of each is reported."""
    data: str = ""
    """Existing dataset root to read instead of generating one."""
    train_warmup: int = 2
    """Untimed training steps before timing the trainer's consumption."""
    train_steps: int = 4
    """Timed training steps per round (0: do not measure the trainer)."""
    train_rounds: int = 2
    """Timing rounds of the trainer (median reported)."""


# --quick: the work a smoke run does (tests/test_benchmarks_quick.py keeps it small)
QUICK = dict(rows=100_000, max_table_size=50_000, repeats=1, train_warmup=1, train_steps=2, train_rounds=1)


def _rate(fn) -> tuple[float, int]:
    t = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t), n


def run(opts: Options) -> dict:
    tmp: Optional[tempfile.TemporaryDirectory] = None
    tmp_runs = tempfile.TemporaryDirectory(prefix="c2al-bench-runs-")
    load_before = os.getloadavg()[0]
    results: dict = {}
    if opts.data:
        root = Path(opts.data)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="c2al-bench-")
        root = Path(tmp.name) / "synth"
        cfg = SyntheticConfig(rows=opts.rows, max_table_size=opts.max_table_size)
        t = time.perf_counter()
        generate_synthetic(root, cfg)
        results["synthetic_rows_per_min"] = opts.rows / (time.perf_counter() - t) * 60
    try:
        schema = load_schema(root)
        files = sorted(str(p) for p in schema.split_dir("train").glob("*.parquet"))
        columns = ParquetReader(root, schema, "train", opts.batch_size)._columns

        def pyarrow_read() -> int:
            return sum(
                b.num_rows
                for b in ds.dataset(files, format="parquet").to_batches(columns=columns, batch_size=opts.batch_size)
            )

        def loader(**kw) -> int:
            reader = ParquetReader(root, schema, "train", opts.batch_size, shuffle_buffer=opts.shuffle_buffer, **kw)
            return sum(b.batch_size for b in reader)

        def two_ranks() -> int:
            with ThreadPoolExecutor(2) as pool:
                jobs = [pool.submit(loader, shuffle=True, seed=0, rank=k, world_size=2) for k in range(2)]
                return sum(j.result() for j in jobs)

        cases = {
            "pyarrow": pyarrow_read,
            "loader_file_order": lambda: loader(shuffle=False),
            "loader_shuffled": lambda: loader(shuffle=True, seed=0),
            "loader_rank0_of_2": lambda: loader(shuffle=True, seed=0, rank=0, world_size=2),
            "loader_rank1_of_2": lambda: loader(shuffle=True, seed=0, rank=1, world_size=2),
            "loader_2_ranks": two_ranks,
        }
        best: dict[str, float] = {k: 0.0 for k in cases}
        rows: dict[str, int] = {}
        for _ in range(opts.repeats):
            for name, fn in cases.items():
                rate, n = _rate(fn)
                best[name] = max(best[name], rate)
                rows[name] = n
        for name in cases:
            results[f"{name}_rows_per_s"] = best[name]
            results[f"{name}_rows"] = rows[name]
        if opts.train_steps:
            results.update(_train_step_rates(opts, root, Path(tmp_runs.name)))
    finally:
        tmp_runs.cleanup()
        if tmp is not None:
            tmp.cleanup()
    ratios = {
        "loader_vs_pyarrow": results["loader_shuffled_rows_per_s"] / results["pyarrow_rows_per_s"],
        "loader_file_order_vs_pyarrow": results["loader_file_order_rows_per_s"] / results["pyarrow_rows_per_s"],
        "loader_rank_vs_1_rank": min(results["loader_rank0_of_2_rows_per_s"], results["loader_rank1_of_2_rows_per_s"])
        / results["loader_shuffled_rows_per_s"],
        "loader_vs_train_step": None,
    }
    results["load_average_1min"] = [load_before, os.getloadavg()[0]]
    if opts.train_steps:
        fastest = max(results["train_step_fp32_samples_per_s"], results["train_step_bf16_samples_per_s"])
        ratios["loader_vs_train_step"] = results["loader_shuffled_rows_per_s"] / fastest
    return {
        "benchmark": "data_loader",
        "config": {**dataclasses.asdict(opts), "machine": machine()},
        "results": results,
        "ratios": ratios,
    }


def _train_step_rates(opts: Options, root: Path, runs: Path) -> dict:
    """Samples/s of the real training step (Trainer, 1 rank, in this process) on ``root``, fp32 and bf16."""
    from benchmarks import train_throughput as tt

    topts = tt.Options(batch_size=opts.batch_size)
    out = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        cfg = tt.make_config(topts, root, c2al=False, bf16=bf16)
        rate = tt.trainer_rate(cfg, runs / name, opts.train_warmup, opts.train_steps, opts.train_rounds)
        out[f"train_step_{name}_samples_per_s"] = rate
    return out


_CASES = (
    "pyarrow",
    "loader_file_order",
    "loader_shuffled",
    "loader_rank0_of_2",
    "loader_rank1_of_2",
    "loader_2_ranks",
)


def _markdown(out: dict, command: str) -> str:
    r, q = out["results"], out["ratios"]
    lines = [
        *results_header("Data loader throughput", out["config"], command),
        "",
        "1-min load average before / after: "
        + (" / ".join(f"{x:.1f}" for x in r["load_average_1min"]) if "load_average_1min" in r else "not recorded")
        + " (other processes on the 2 cores slow both sides of a ratio, not always alike).",
        "",
        "| case | rows | rows/s (best of repeats) |",
        "| --- | ---: | ---: |",
    ]
    for name in _CASES:
        lines.append(f"| {name} | {r[f'{name}_rows']} | {r[f'{name}_rows_per_s']:,.0f} |")
    lines += [
        "",
        f"- loader_vs_pyarrow (shuffled loader / raw pyarrow read, goal >= 0.5): {q['loader_vs_pyarrow']:.2f}",
        f"- loader_file_order_vs_pyarrow: {q['loader_file_order_vs_pyarrow']:.2f}",
        f"- loader_rank_vs_1_rank (slower rank of 2 / 1 rank, rows yielded per second; 1 = each rank reads "
        f"only its share): {q['loader_rank_vs_1_rank']:.2f}",
    ]
    if q["loader_vs_train_step"] is None:
        lines.append("- loader_vs_train_step (goal >= 5): not measured")
    else:
        lines.append(
            f"- loader_vs_train_step (shuffled loader / fastest training step, goal >= 5): "
            f"{q['loader_vs_train_step']:.1f} (training step, Trainer 1 rank, C2AL off, d=64 2-layer DHEN: "
            f"fp32 {r['train_step_fp32_samples_per_s']:,.0f}, bf16 {r['train_step_bf16_samples_per_s']:,.0f} "
            "samples/s)"
        )
    if "synthetic_rows_per_min" in r:
        lines.append(
            f"- synthetic generator: {r['synthetic_rows_per_min']:,.0f} rows/min (goal >= 1,000,000 on 2 cores)"
        )
    lines += [
        "",
        "The pyarrow baseline yields Arrow record batches (no copy to tensors, no shuffle, no validation);",
        "the loader also validates every row it reads, shuffles within windows, builds dense/KJT/label tensors",
        "and applies the SparseIdTransform id rules. The machine is shared, so figures vary between runs by",
        "about 2x.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = base_parser(__doc__, "small sizes (seconds)")
    args = parser.parse_args(argv)
    opts = Options(data=args.data)
    if args.quick:
        opts = dataclasses.replace(opts, **QUICK)
    out = run(opts)
    return finish("data_loader", out, _markdown, argv, args.quick, args.json, args.record)


if __name__ == "__main__":
    sys.exit(main())
