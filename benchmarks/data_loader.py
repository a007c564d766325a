"""Data loader throughput: Parquet -> Batch (ParquetReader) against the raw pyarrow read.

python -m benchmarks.data_loader [--quick] [--record] [--json PATH] [--data DIR] [--<option> ...]

Rows/s on synthetic data (or ``--data``), the cases interleaved, best of ``repeats``: pyarrow record batches
of the same columns, the loader in file order and shuffled, each rank of 2 alone and both at once; and the
real training step's samples/s (Trainer, 1 rank, fp32 and bf16). Goals: shuffled loader / pyarrow >= 0.5,
shuffled loader / the faster training step >= 5, the synthetic generator >= 1M rows/min on 2 cores.
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

from benchmarks import common
from benchmarks import train_throughput as tt
from c2al_rec.config import SyntheticConfig
from c2al_rec.data import ParquetReader, load_schema
from c2al_rec.data.synthetic import generate_synthetic


@dataclass
class Options:
    """Benchmark options (``--quick`` shrinks them)."""

    rows: int = 2_000_000
    """Synthetic rows generated (all splits; the train split, 8 in 10 rows, is read)."""
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


def _read_rates(opts: Options, root: Path) -> dict[str, float]:
    """``<case>_rows_per_s`` (best of ``repeats``) and ``<case>_rows`` of every read case, run in turn."""
    schema = load_schema(root)
    files = sorted(str(p) for p in schema.split_dir("train").glob("*.parquet"))
    columns = ParquetReader(root, schema, "train", opts.batch_size)._columns

    def pyarrow_read() -> int:
        batches = ds.dataset(files, format="parquet").to_batches(columns=columns, batch_size=opts.batch_size)
        return sum(b.num_rows for b in batches)

    def loader(**kw) -> int:
        reader = ParquetReader(root, schema, "train", opts.batch_size, shuffle_buffer=opts.shuffle_buffer, **kw)
        return sum(b.batch_size for b in reader)

    def two_ranks() -> int:
        with ThreadPoolExecutor(2) as pool:
            return sum(pool.map(lambda k: loader(shuffle=True, seed=0, rank=k, world_size=2), range(2)))

    cases = {
        "pyarrow": pyarrow_read,
        "loader_file_order": lambda: loader(shuffle=False),
        "loader_shuffled": lambda: loader(shuffle=True, seed=0),
        "loader_rank0_of_2": lambda: loader(shuffle=True, seed=0, rank=0, world_size=2),
        "loader_rank1_of_2": lambda: loader(shuffle=True, seed=0, rank=1, world_size=2),
        "loader_2_ranks": two_ranks,
    }
    best, rows = dict.fromkeys(cases, 0.0), {}
    for _ in range(opts.repeats):
        for name, fn in cases.items():
            t = time.perf_counter()
            rows[name] = fn()
            best[name] = max(best[name], rows[name] / (time.perf_counter() - t))
    return {k: v for name in cases for k, v in ((f"{name}_rows_per_s", best[name]), (f"{name}_rows", rows[name]))}


def run(opts: Options) -> dict:
    load_before = os.getloadavg()[0]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="c2al-bench-") as tmp:
        root = Path(opts.data or Path(tmp) / "synth")
        if not opts.data:
            t = time.perf_counter()
            generate_synthetic(root, SyntheticConfig(rows=opts.rows, max_table_size=opts.max_table_size))
            results["synthetic_rows_per_min"] = opts.rows / (time.perf_counter() - t) * 60
        results.update(_read_rates(opts, root))
        precisions = {"fp32": False, "bf16": True} if opts.train_steps else {}
        for name, bf16 in precisions.items():  # the real training step (Trainer, 1 rank, train_throughput's model)
            cfg = tt.make_config(tt.Options(batch_size=opts.batch_size), root, c2al=False, bf16=bf16)
            timing = (opts.train_warmup, opts.train_steps, opts.train_rounds)
            results[f"train_step_{name}_samples_per_s"] = tt.trainer_rate(cfg, Path(tmp) / "runs" / name, *timing)
    r, shuffled = results, results["loader_shuffled_rows_per_s"]
    ratios = {
        "loader_vs_pyarrow": shuffled / r["pyarrow_rows_per_s"],
        "loader_file_order_vs_pyarrow": r["loader_file_order_rows_per_s"] / r["pyarrow_rows_per_s"],
        "loader_rank_vs_1_rank": min(r["loader_rank0_of_2_rows_per_s"], r["loader_rank1_of_2_rows_per_s"]) / shuffled,
        "loader_vs_train_step": (  # against the faster (stricter) precision
            shuffled / max(r["train_step_fp32_samples_per_s"], r["train_step_bf16_samples_per_s"])
            if opts.train_steps else None
        ),
    }  # fmt: skip
    results["load_average_1min"] = [load_before, os.getloadavg()[0]]
    config = {**dataclasses.asdict(opts), "machine": common.machine()}
    return {"benchmark": "data_loader", "config": config, "results": results, "ratios": ratios}


def markdown(out: dict, command: str) -> str:
    """The results markdown, from the JSON record alone."""
    r, q = out["results"], out["ratios"]
    cases = [k.removesuffix("_rows_per_s") for k in r if k.endswith("_rows_per_s")]
    rows = [[c, r[f"{c}_rows"], f"{r[f'{c}_rows_per_s']:,.0f}"] for c in cases]
    load = " / ".join(f"{x:.1f}" for x in r["load_average_1min"])
    gen = r.get("synthetic_rows_per_min")  # None: --data named a dataset, nothing was generated
    if q["loader_vs_train_step"] is None:
        train = "- loader_vs_train_step (goal >= 5): not measured"
    else:
        train = (
            f"- loader_vs_train_step (shuffled loader / fastest training step, goal >= 5): "
            f"{q['loader_vs_train_step']:.1f} (training step, Trainer 1 rank, C2AL off, d=64 2-layer DHEN: "
            f"fp32 {r['train_step_fp32_samples_per_s']:,.0f}, bf16 {r['train_step_bf16_samples_per_s']:,.0f} "
            "samples/s)"
        )
    lines = [
        *common.results_header("Data loader throughput", out["config"], command),
        "",
        f"1-min load average before / after: {load} (other processes on the 2 cores slow both sides of a ratio, "
        "not always alike).",
        "",
        *common.md_table(["case", "rows", "rows/s (best of repeats)"], rows, "lrr"),
        "",
        f"- loader_vs_pyarrow (shuffled loader / raw pyarrow read, goal >= 0.5): {q['loader_vs_pyarrow']:.2f}",
        f"- loader_file_order_vs_pyarrow: {q['loader_file_order_vs_pyarrow']:.2f}",
        f"- loader_rank_vs_1_rank (slower rank of 2 / 1 rank, rows yielded per second; 1 = each rank reads "
        f"only its share): {q['loader_rank_vs_1_rank']:.2f}",
        train,
        *([f"- synthetic generator: {gen:,.0f} rows/min (goal >= 1,000,000 on 2 cores)"] if gen else []),
        "",
        "The pyarrow baseline yields Arrow record batches (no copy to tensors, no shuffle, no validation);",
        "the loader also validates every row it reads, shuffles within windows, builds dense/KJT/label tensors",
        "and applies the SparseIdTransform id rules. The machine is shared, so figures vary between runs by",
        "about 2x.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = common.base_parser(__doc__)  # --quick, --json, --record and --data (the Options field)
    common.add_option_flags(parser, Options, only=[f.name for f in dataclasses.fields(Options) if f.name != "data"])
    args = parser.parse_args(argv)
    opts = common.options_from_args(Options, args, Options(**QUICK) if args.quick else None)
    return common.finish("data_loader", run(opts), markdown, argv, args.quick, args.json, args.record)


if __name__ == "__main__":
    sys.exit(main())
