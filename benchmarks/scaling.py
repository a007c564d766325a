"""Cost-growth curves: samples/s and peak memory of the real trainer against five size axes, and export cost.

python -m benchmarks.scaling [--quick] [--json PATH] [--png PATH] [--threads N] [--data-cache DIR]

One sweep per axis around a base point (26 sparse features, embedding dim 64, batch 2048 per rank,
1 process, largest table 1e5 rows, the production-shaped model of ``benchmarks.common``), varying
one axis at a time:

- sparse features 8 / 26 / 64 (the synthetic generator makes >= 10: the 8-feature dataset is its
  10-feature dataset with a schema listing the first 8 features);
- embedding dim 16 / 64 / 128;
- batch size per rank 256 .. 8192;
- processes 1 / 2 (``elastic_launch``, batch per rank fixed, so 2 processes step 2x the samples;
  ``--threads`` is the total: each process gets ``max(1, threads // processes)`` threads, so with the
  default ``--threads 1`` two processes use 2 threads in all);
- largest table rows 1e4 / 1e5 / 1e6 / 1e7 (the other tables follow the generator's ratios), at
  embedding dim ``rows_dim`` (16: the 1e7-row model at d=64 holds 4.4 GB of tables, too much for an
  8 GB machine once the export copies it); each of these runs also saves a checkpoint and exports it
  (``export_checkpoint``, fp32, parity gate on) in the same process: export seconds and artifact size.

Every point is a fresh subprocess running the real :class:`c2al_rec.train.trainer.Trainer` (DMP +
fused RowWiseAdagrad + ``TrainPipelineSparseDist``, C2AL off unless ``c2al``, fp32) on planted-cohort
synthetic data (``generate_synthetic``, cached per (features, largest table) under a temporary
directory or ``--data-cache``): ``warmup`` untimed steps, then ``steps`` timed steps; samples/s =
samples of one step (all ranks) / the median timed step's seconds (robust to bursts of load on a
shared machine; the mean over all timed steps is reported too); peak memory = the process's own
peak RSS (VmHWM) from the trainer's build to the last timed step, the high-water mark restarted just
before the build (2 processes: the sum over ranks; the process's earlier peak is kept beside it).
Threads are fixed (``--threads``, default 1, stable on a shared machine).

With ``--record`` writes ``benchmarks/results/scaling.{md,json,png}``: a table per axis and one line per curve saying
where it bends (log-log slopes between points; a bend is a change of slope by >= ``bend``) and what a
straight-line fit of the measured numbers attributes the cost to (fixed vs per unit of the axis; for
memory, the embedding state's share); JSON ``{"benchmark", "config", "results", "ratios"}`` with
ratios ``<axis>_samples_per_s_last_vs_first`` / ``<axis>_peak_rss_last_vs_first`` (cost growth from
the smallest to the largest value of each axis) and ``export_seconds_last_vs_first`` /
``export_artifact_bytes_last_vs_first``. ``--quick`` runs tiny sizes, 2 points per axis, and writes no
results file (only ``--json`` / ``--png`` if given).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from benchmarks.common import (
    RECORD_HELP,
    RESULTS_DIR,
    finish,
    machine,
    production_model,
    results_header,
    tiny_model,
    trainer_config,
    write_json,
)

NAME = "scaling"
ROOT = Path(__file__).resolve().parent.parent
RESULT_TAG = "SCALING_RESULT "
MIN_GENERATED_FEATURES = 10  # the synthetic generator's minimum (6 named + 4 cohort-pair extras)
TRAIN_FRACTION = 0.8  # generator default: 10% valid, 10% test
AXES = ("features", "dim", "batch", "procs", "table_rows")
AXIS_LABEL = {
    "features": "sparse features",
    "dim": "embedding dim",
    "batch": "batch size per rank",
    "procs": "processes",
    "table_rows": "largest table rows",
}
MIB = 2**20
NOUN = {"features": "F", "dim": "d", "batch": "B", "procs": "P", "table_rows": "rows"}


@dataclass
class Options:
    """Benchmark options (``--quick`` shrinks them)."""

    features: tuple = (8, 26, 64)
    """Sparse features of the features sweep (one table each)."""
    dims: tuple = (16, 64, 128)
    """Embedding dims of the dim sweep."""
    batch_sizes: tuple = (256, 512, 1024, 2048, 4096, 8192)
    """Batch sizes per rank of the batch sweep."""
    procs: tuple = (1, 2)
    """Process counts of the processes sweep (elastic_launch)."""
    table_rows: tuple = (10_000, 100_000, 1_000_000, 10_000_000)
    """Largest-table sizes of the table-rows sweep (the export is measured at each)."""
    base_features: int = 26
    """Sparse features at the base point."""
    base_dim: int = 64
    """Embedding dim at the base point."""
    base_batch: int = 2048
    """Batch size per rank at the base point."""
    base_table_rows: int = 100_000
    """Largest table rows at the base point."""
    rows_dim: int = 16
    """Embedding dim of the table-rows sweep (1e7 rows x d=64 fp32 would be 4.4 GB of tables)."""
    model: dict = field(default_factory=production_model)
    """ModelConfig fields (production-shaped); embedding_dim is set per point."""
    c2al: bool = False
    """C2AL on (cohort spec, aux heads, aux loss) at every point; off: the plain baseline model."""
    warmup: int = 3
    """Untimed steps per point (pipeline fill, allocator warm-up)."""
    steps: int = 10
    """Timed steps per point."""
    threads: int = 1
    """Total torch threads per point (each of P processes gets max(1, threads // P))."""
    launch_single: bool = True
    """Launch the 1-process point of the processes sweep with elastic_launch too (False: reuse the base point)."""
    parity_rows: int = 1024
    """Rows the export's parity gate scores."""
    sparse_lr: float = 0.05
    """Embedding learning rate (RowWiseAdagrad)."""
    dense_lr: float = 1e-3
    """Dense learning rate (Adam)."""
    min_rows: int = 20_000
    """Fewest synthetic rows per dataset (more when a point needs them)."""
    bend: float = 0.3
    """Change of log-log slope between curve segments that counts as a bend."""
    point_timeout_s: int = 1800
    """Seconds one point's subprocess may take."""
    data_cache: str = ""
    """Keep generated datasets here between runs (empty: a temporary directory, removed at the end)."""


def quick_options(opts: Options) -> Options:
    """Tiny sizes, 2 points per axis (about 1.5 minutes on a quiet 2-core machine)."""
    return dataclasses.replace(
        opts,
        features=(8, 10),
        dims=(8, 16),
        batch_sizes=(128, 256),
        procs=(1, 2),
        table_rows=(1_000, 10_000),
        base_features=10,
        base_dim=8,
        base_batch=128,
        base_table_rows=1_000,
        rows_dim=8,
        model=tiny_model(),
        warmup=1,
        steps=2,
        launch_single=False,
        parity_rows=256,
        min_rows=4_000,
    )


# ------------------------------------------------------------------------------------------ points
def point_key(features: int, dim: int, batch: int, procs: int, table_rows: int, launched: bool) -> str:
    return f"f{features}_d{dim}_b{batch}_p{procs}_t{table_rows}" + ("_launched" if launched else "")


def plan_points(opts: Options) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """The distinct points to run and, per axis, the point keys of its curve (in axis order)."""
    points: dict[str, dict] = {}
    curves: dict[str, list[str]] = {a: [] for a in AXES}

    def add(axis: str, *, features: int, dim: int, batch: int, procs: int, table_rows: int, export: bool) -> None:
        launched = axis == "procs" and (procs > 1 or opts.launch_single)
        key = point_key(features, dim, batch, procs, table_rows, launched)
        p = points.setdefault(
            key,
            dict(features=features, dim=dim, batch=batch, procs=procs, table_rows=table_rows, launched=launched,
                 export=False),
        )  # fmt: skip
        p["export"] = p["export"] or export
        curves[axis].append(key)

    base = dict(features=opts.base_features, dim=opts.base_dim, batch=opts.base_batch, procs=1,
                table_rows=opts.base_table_rows)  # fmt: skip
    for f in opts.features:
        add("features", **dict(base, features=f), export=False)
    for d in opts.dims:
        add("dim", **dict(base, dim=d), export=False)
    for b in opts.batch_sizes:
        add("batch", **dict(base, batch=b), export=False)
    for p in opts.procs:
        add("procs", **dict(base, procs=p), export=False)
    for t in opts.table_rows:
        add("table_rows", **dict(base, table_rows=t, dim=opts.rows_dim), export=True)
    return points, curves


def dataset_rows(opts: Options, points: dict[str, dict]) -> dict[tuple[int, int], int]:
    """Synthetic rows per (generated features, largest table): enough train batches for every point using it."""
    need: dict[tuple[int, int], int] = {}
    for p in points.values():
        key = (max(MIN_GENERATED_FEATURES, p["features"]), p["table_rows"])
        # + 3 batches: the pipeline reads ahead, and ranks split the row groups unevenly
        train_rows = (opts.warmup + opts.steps + 3) * p["batch"] * p["procs"]
        rows = max(opts.min_rows, math.ceil(train_rows / TRAIN_FRACTION * 1.1), 10 * opts.parity_rows + 1000)
        need[key] = max(need.get(key, 0), rows)
    return need


def prepare_data(opts: Options, points: dict[str, dict], cache: Path) -> dict[str, str]:
    """Generate (or reuse) the datasets; returns the dataset root of every point."""
    from c2al_rec.config import SyntheticConfig
    from c2al_rec.data.synthetic import generate_synthetic

    generated: dict[tuple[int, int], Path] = {}
    for (gen_features, table_rows), rows in sorted(dataset_rows(opts, points).items()):
        root = cache / f"f{gen_features}_t{table_rows}_r{rows}"
        if not (root / "schema.json").is_file():
            t0 = time.perf_counter()
            shutil.rmtree(root, ignore_errors=True)
            generate_synthetic(
                root, SyntheticConfig(rows=rows, num_sparse=gen_features, max_table_size=table_rows, seed=1)
            )
            _log(f"generated {root.name}: {rows:,} rows in {time.perf_counter() - t0:.1f} s")
        generated[(gen_features, table_rows)] = root
    roots: dict[str, str] = {}
    for key, p in points.items():
        src = generated[(max(MIN_GENERATED_FEATURES, p["features"]), p["table_rows"])]
        roots[key] = str(src if p["features"] >= MIN_GENERATED_FEATURES else subset_features(src, p["features"]))
    return roots


def subset_features(src: Path, n: int) -> Path:
    """A dataset of the first ``n`` sparse features of ``src``: its schema, trimmed, over links to its splits."""
    dst = src.with_name(f"{src.name}_first{n}")
    if (dst / "schema.json").is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    schema = json.loads((src / "schema.json").read_text())
    schema["sparse"] = schema["sparse"][:n]
    for split_dir in sorted(set((schema.get("splits") or {}).values())):
        link = dst / split_dir
        if not link.exists():
            link.symlink_to((src / split_dir).resolve(), target_is_directory=True)
    (dst / "schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    return dst


def embedding_rows(data_root: str) -> int:
    """Rows over all embedding tables of a dataset."""
    schema = json.loads((Path(data_root) / "schema.json").read_text())
    return sum(int(f["num_embeddings"]) for f in schema["sparse"])


# ------------------------------------------------------------------------------------------ child side
def make_config(job: dict, threads: int) -> Any:
    """The trainer config of one point."""
    model = dict(job["model"], embedding_dim=job["dim"])
    return trainer_config(
        job["data"], job["batch"], model, job["c2al"], job["sparse_lr"], job["dense_lr"], eval_batches=2,
        num_threads=threads,
    )  # fmt: skip


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Restart the high-water mark of this process's RSS at its current RSS (Linux >= 4.0), so a later
    ``training_peak_rss_mib`` measures the trainer, not what the process did before it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def training_peak_rss_mib() -> float:
    """Peak RSS since ``reset_peak_rss`` (VmHWM), MiB; the lifetime peak where that is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def _train_and_time(cfg: Any, run_dir: Path, warmup: int, steps: int, save: bool) -> dict[str, Any]:
    """Build the trainer in this process (this process group's rank), time ``steps`` steps after ``warmup``."""
    import torch.distributed as dist

    from c2al_rec.distributed.backend import init_distributed
    from c2al_rec.train.trainer import Trainer

    process_peak_before = peak_rss_mib()  # imports and whatever ran before the trainer
    reset_peak_rss()
    t0 = time.perf_counter()
    trainer = Trainer(cfg, run_dir, init_distributed())
    trainer.build()
    batches = iter(trainer._reader(cfg.data.train_split, train=True))
    build_s = time.perf_counter() - t0
    try:
        for _ in range(warmup):
            trainer.train_step(batches)
        dist.barrier()
        step_s = []
        start = time.perf_counter()
        for _ in range(steps):
            t = time.perf_counter()
            trainer.train_step(batches)
            step_s.append(time.perf_counter() - t)
        dist.barrier()
        seconds = time.perf_counter() - start
        world = dist.get_world_size()
        out = {
            # the median step: on a shared machine a burst of load inflates single steps
            "samples_per_s": cfg.data.batch_size * world / statistics.median(step_s),
            "mean_samples_per_s": steps * cfg.data.batch_size * world / seconds,
            "peak_rss_mib": training_peak_rss_mib(),  # from the trainer's build to the last timed step
            "process_peak_rss_before_mib": process_peak_before,
            "step_seconds": step_s,
            "build_seconds": build_s,
            "world_size": world,
        }
        if save:
            trainer.save_checkpoint()
    finally:
        trainer.close()
    return out


def _rank_worker(cfg_dict: dict, run_dir: str, warmup: int, steps: int) -> dict[str, Any]:
    """One rank of a launched point."""
    from c2al_rec.config import load_config_dict
    from c2al_rec.distributed.backend import destroy_distributed

    try:
        return _train_and_time(load_config_dict(cfg_dict), Path(run_dir), warmup, steps, save=False)
    finally:
        destroy_distributed()


def _launch(cfg: Any, run_dir: Path, nproc: int, warmup: int, steps: int) -> dict[str, Any]:
    """A point with ``nproc`` local processes started by elastic_launch (as train_throughput's launched_rate)."""
    from c2al_rec.config import config_to_dict
    from c2al_rec.distributed.launch import launch_local

    args = (config_to_dict(cfg), str(run_dir), warmup, steps)
    ranks = launch_local(_rank_worker, args, nproc, f"scaling-{os.getpid()}-{nproc}")
    out = dict(ranks[0])
    out["rank_peak_rss_mib"] = [ranks[r]["peak_rss_mib"] for r in sorted(ranks)]
    out["peak_rss_mib"] = sum(out["rank_peak_rss_mib"])  # peaks of all ranks: the job's memory
    out["launcher_peak_rss_mib"] = peak_rss_mib()
    return out


def _export(run_dir: Path, out_dir: Path, parity_rows: int) -> dict[str, Any]:
    """Export the run's latest checkpoint (fp32, parity gate on); seconds and the artifact's bytes."""
    from c2al_rec.config import ExportConfig
    from c2al_rec.export.exporter import export_checkpoint

    t0 = time.perf_counter()
    export_checkpoint(ExportConfig(parity_rows=parity_rows), run_dir, out_dir)
    seconds = time.perf_counter() - t0
    files = {p.name: p.stat().st_size for p in out_dir.rglob("*") if p.is_file()}
    return {
        "export_seconds": seconds,
        "export_artifact_bytes": sum(files.values()),
        "export_files_bytes": files,
        "export_peak_rss_mib": peak_rss_mib(),  # training + export in this process
    }


def run_job(job: dict) -> dict[str, Any]:
    """One point, in this (fresh) process: train and time, then export if asked."""
    work = Path(job["work"])
    procs = job["procs"]
    threads = max(1, job["threads"] // procs)
    cfg = make_config(job, threads)
    if job["launched"]:
        result = _launch(cfg, work / "run", procs, job["warmup"], job["steps"])
    else:
        from c2al_rec.distributed.backend import destroy_distributed

        try:
            result = _train_and_time(cfg, work / "run", job["warmup"], job["steps"], save=job["export"])
        finally:
            destroy_distributed()
    result["threads_per_process"] = threads
    if job["export"]:
        gc.collect()
        result.update(_export(work / "run", work / "export", job["parity_rows"]))
    return result


def child_main() -> int:
    """Subprocess entry: the job as JSON on stdin, the result as one tagged JSON line on stdout."""
    job = json.loads(sys.stdin.read())
    result = run_job(job)
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------------------------------ parent side
def _log(msg: str) -> None:
    print(f"[scaling {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_point(opts: Options, point: dict, data: str, work: Path) -> dict[str, Any]:
    """Run one point in a fresh subprocess; its result, or ``{"error": ...}``."""
    job = dict(
        point, data=data, work=str(work), model=opts.model, c2al=opts.c2al, warmup=opts.warmup, steps=opts.steps,
        threads=opts.threads, parity_rows=opts.parity_rows, sparse_lr=opts.sparse_lr, dense_lr=opts.dense_lr,
    )  # fmt: skip
    per_proc = str(max(1, opts.threads // point["procs"]))
    env = dict(os.environ, OMP_NUM_THREADS=per_proc, MKL_NUM_THREADS=per_proc)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    code = "import sys; from benchmarks.scaling import child_main; sys.exit(child_main())"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], input=json.dumps(job), capture_output=True, text=True, cwd=str(ROOT),
            env=env, timeout=opts.point_timeout_s,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {opts.point_timeout_s} s", "wall_seconds": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG) :])
            result["wall_seconds"] = wall
            return result
    tail = (proc.stderr or proc.stdout)[-2000:]
    return {"error": f"exit {proc.returncode}: {tail}", "wall_seconds": wall}


def run(opts: Options) -> dict[str, Any]:
    """Run every point; returns ``{"benchmark", "config", "results", "ratios"}``."""
    points, curves = plan_points(opts)
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    tmp = tempfile.TemporaryDirectory(prefix="c2al-bench-scaling-")
    try:
        cache = Path(opts.data_cache) if opts.data_cache else Path(tmp.name) / "data"
        cache.mkdir(parents=True, exist_ok=True)
        roots = prepare_data(opts, points, cache)
        _log(f"{len(points)} points, {opts.threads} thread(s) in all per point")
        measured: dict[str, dict] = {}
        for i, (key, point) in enumerate(points.items(), 1):
            load = os.getloadavg()[0]
            result = run_point(opts, point, roots[key], Path(tmp.name) / "points" / key)
            result.update(point)
            rows = embedding_rows(roots[key])
            result["embedding_rows"] = rows
            result["embedding_table_bytes"] = rows * point["dim"] * 4  # fp32 tables
            result["embedding_state_bytes"] = rows * (point["dim"] + 1) * 4  # + RowWiseAdagrad: one fp32 per row
            result["load_average_1min"] = load
            measured[key] = result
            if "error" in result:
                _log(f"[{i}/{len(points)}] {key}: FAILED {result['error'][-300:]}")
                continue
            extra = (
                f", export {result['export_seconds']:.1f} s, artifact {result['export_artifact_bytes'] / MIB:,.1f} MiB"
                if point["export"] else ""
            )  # fmt: skip
            _log(
                f"[{i}/{len(points)}] {key}: {result['samples_per_s']:,.0f} samples/s, peak RSS "
                f"{result['peak_rss_mib']:,.0f} MiB{extra} ({result['wall_seconds']:.0f} s, load {load:.1f})"
            )
    finally:
        tmp.cleanup()
    results: dict[str, Any] = {
        "points": measured,
        "curves": {axis: [dict(x=measured[k][axis], key=k) for k in keys] for axis, keys in curves.items()},
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "cores": os.cpu_count(),
        "wall_seconds": time.perf_counter() - t_start,
    }
    config = {**dataclasses.asdict(opts), "machine": machine()}
    out = {"benchmark": NAME, "config": config, "results": results, "ratios": ratios(results)}
    out["results"]["summary"] = summaries(out)
    return out


# ------------------------------------------------------------------------------------------ analysis
def curve(results: dict, axis: str, metric: str) -> tuple[list[float], list[float]]:
    """(x, y) of ``metric`` along ``axis``, failed points left out."""
    xs, ys = [], []
    for entry in results["curves"][axis]:
        p = results["points"][entry["key"]]
        if "error" not in p and p.get(metric) is not None:
            xs.append(float(entry["x"]))
            ys.append(float(p[metric]))
    return xs, ys


def ratios(results: dict) -> dict[str, Optional[float]]:
    """Per axis: the metric at the largest value over the metric at the smallest (None when not measured)."""
    out: dict[str, Optional[float]] = {}

    def last_vs_first(axis: str, metric: str) -> Optional[float]:
        xs, ys = curve(results, axis, metric)
        return ys[-1] / ys[0] if len(ys) >= 2 and ys[0] > 0 else None

    for axis in AXES:
        out[f"{axis}_samples_per_s_last_vs_first"] = last_vs_first(axis, "samples_per_s")
        out[f"{axis}_peak_rss_last_vs_first"] = last_vs_first(axis, "peak_rss_mib")
    out["export_seconds_last_vs_first"] = last_vs_first("table_rows", "export_seconds")
    out["export_artifact_bytes_last_vs_first"] = last_vs_first("table_rows", "export_artifact_bytes")
    return out


def loglog_slopes(xs: list[float], ys: list[float]) -> list[float]:
    """d log y / d log x between consecutive points."""
    return [math.log(ys[i + 1] / ys[i]) / math.log(xs[i + 1] / xs[i]) for i in range(len(xs) - 1)]


def find_bend(xs: list[float], ys: list[float], threshold: float) -> dict[str, Any]:
    """The split of the curve into two runs of segments whose mean log-log slopes differ most.

    Returns ``{"slopes", "bend_x" (None: no bend), "before", "after"}``; a bend needs the means to
    differ by >= ``threshold`` (with 2 points there is one segment and never a bend).
    """
    s = loglog_slopes(xs, ys)
    best: dict[str, Any] = {"slopes": s, "bend_x": None, "before": sum(s) / len(s) if s else None, "after": None}
    best_gap = threshold
    for k in range(1, len(s)):
        before, after = sum(s[:k]) / k, sum(s[k:]) / (len(s) - k)
        if abs(after - before) >= best_gap:
            best_gap = abs(after - before)
            best.update(bend_x=xs[k], before=before, after=after)
    return best


def _fmt_x(axis: str, x: float) -> str:
    if axis == "table_rows":
        return f"{x:.0e}".replace("e+0", "e")
    return f"{x:,.0f}"


def _shape(slope: float, noun: str, change: float = 1.0) -> str:
    """'flat' / 'grows ~ noun^a' / 'falls ~ noun^a' (``change``: last / first y of the segment)."""
    if abs(slope) < 0.1 and 0.85 <= change <= 1 / 0.85:
        return f"flat ({noun}^{slope:+.2f})"
    return f"{'grows' if slope > 0 else 'falls'} ~ {noun}^{slope:+.2f}"


def _shape_text(axis: str, xs: list[float], ys: list[float], threshold: float) -> str:
    """'<shape> from lo to hi, no bend' or '<shape> up to X, then <shape> to hi: bends at X', and the ratio."""
    bend = find_bend(xs, ys, threshold)
    lo, hi = _fmt_x(axis, xs[0]), _fmt_x(axis, xs[-1])
    overall = f"(x{ys[-1] / ys[0]:.2f} overall)"
    if bend["bend_x"] is None:
        return f"{_shape(bend['before'], NOUN[axis], ys[-1] / ys[0])} from {lo} to {hi}, no bend {overall}"
    k, bx = xs.index(bend["bend_x"]), _fmt_x(axis, bend["bend_x"])
    before, after = _shape(bend["before"], NOUN[axis], ys[k] / ys[0]), _shape(bend["after"], NOUN[axis], ys[-1] / ys[k])
    return f"{before} up to {bx}, then {after} to {hi}: bends at {bx} {overall}"


def _fixed_and_rate(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = fixed + rate * x`` over the measured points (the part of y that x does not move)."""
    rate, fixed = statistics.linear_regression(xs, ys) if len(set(xs)) > 1 else (0.0, ys[0])
    return fixed, rate


def _why_samples(axis: str, xs: list[float], ys: list[float], emb_mib: list[float]) -> str:
    """The cost per sample split by a straight-line fit into a part the axis moves and a part it does not."""
    lo, hi = _fmt_x(axis, xs[0]), _fmt_x(axis, xs[-1])
    if axis == "batch":  # a step = fixed + per sample x B
        step_ms = [1e3 * x / y for x, y in zip(xs, ys)]
        fixed, per = _fixed_and_rate(xs, step_ms)
        if fixed <= 0:
            return f"a step is {1e3 * per:.1f} us per sample with no fixed per-step part to spread over more samples"
        share = [100 * fixed / t for t in step_ms]
        return (
            f"a step is {fixed:.1f} ms fixed + {1e3 * per:.1f} us per sample (least squares): the fixed part, "
            f"{share[0]:.0f}% of a step at {lo} and {share[-1]:.0f}% at {hi}, is spread over more samples"
        )
    unit = {"features": "feature", "dim": "unit of d", "table_rows": "MiB of embedding state"}[axis]
    at = emb_mib if axis == "table_rows" else xs  # rows cost through their bytes
    cost_us = [1e6 / y for y in ys]
    fixed, per = _fixed_and_rate(at, cost_us)
    return (
        f"cost per sample {cost_us[0]:,.0f} -> {cost_us[-1]:,.0f} us, fitted as {fixed:,.0f} us fixed + {per:,.3g} us "
        f"per {unit} ({per * at[0]:,.0f} us at {lo}, {per * at[-1]:,.0f} us at {hi})"
    )


def _why_memory(axis: str, xs: list[float], ys: list[float], emb_mib: list[float]) -> str:
    """How much of the peak-memory change the embedding state (rows x (d + 1) x 4 B) accounts for."""
    d_mem, d_emb = ys[-1] - ys[0], emb_mib[-1] - emb_mib[0]
    per = f" ({d_mem / ((xs[-1] - xs[0]) / 1000):+,.1f} MiB per 1,000 samples)" if axis == "batch" else ""
    return (
        f"{d_mem:+,.0f} MiB from {_fmt_x(axis, xs[0])} to {_fmt_x(axis, xs[-1])}{per}: {d_emb:+,.0f} MiB of it "
        f"embedding tables + RowWiseAdagrad state, {d_mem - d_emb:+,.0f} MiB activations, dense parameters + "
        f"Adam state and allocator slack, over a {ys[0]:,.0f} MiB start"
    )


def describe(axis: str, metric: str, xs: list[float], ys: list[float], threshold: float, emb: list[float]) -> str:
    """One line from the measured numbers: the curve's shape and bend, and what the fitted numbers attribute it to."""
    what = {"samples_per_s": "samples/s", "peak_rss_mib": "peak memory"}[metric]
    if len(xs) < 2:
        return f"{what} vs {AXIS_LABEL[axis]}: fewer than 2 points measured"
    emb_mib = [e / MIB for e in emb]
    if axis == "procs":
        r, p = ys[-1] / ys[0], xs[-1] / xs[0]
        line = f"{what} at {xs[-1]:.0f} processes vs {xs[0]:.0f}: x{r:.2f}"
        if metric == "samples_per_s":
            return (
                f"{line}, {100 * (r - 1) / (p - 1):.0f}% of what each added process would bring if it scaled linearly"
            )
        return f"{line}, x{r / p:.2f} per process; {_why_memory(axis, xs, ys, emb_mib)}"
    why = _why_samples if metric == "samples_per_s" else _why_memory
    return f"{what} vs {AXIS_LABEL[axis]}: {_shape_text(axis, xs, ys, threshold)}; {why(axis, xs, ys, emb_mib)}"


def describe_export(
    xs: list[float], secs: list[float], size: list[float], tables: list[float], threshold: float
) -> list[str]:
    """Lines for export seconds and artifact size against table rows (``tables``: fp32 table bytes)."""
    if len(xs) < 2:
        return ["export vs largest table rows: fewer than 2 points measured"]
    mib = [t / MIB for t in tables]
    fixed, per = _fixed_and_rate(mib, secs)
    lo, hi = _fmt_x("table_rows", xs[0]), _fmt_x("table_rows", xs[-1])
    share = [100 * t / s for t, s in zip(tables, size)]
    return [
        f"export seconds vs largest table rows: {_shape_text('table_rows', xs, secs, threshold)}; fitted as "
        f"{fixed:.1f} s that the tables do not move (tracing, scripting, the parity gate) + {100 * per:.2f} s per "
        f"100 MiB of fp32 tables: the fixed part is {100 * fixed / secs[0]:.0f}% of the export at {lo}, "
        f"{100 * fixed / secs[-1]:.0f}% at {hi}",
        f"artifact size vs largest table rows: {_shape_text('table_rows', xs, size, threshold)}; the fp32 tables are "
        f"{share[0]:.0f}% of its bytes at {lo}, {share[-1]:.0f}% at {hi}; the rest "
        f"({(size[0] - tables[0]) / MIB:,.1f} MiB at {lo}) is the dense model and TorchScript code",
    ]


def summaries(out: dict) -> dict[str, list[str]]:
    """Per axis, the computed bend-and-why lines (also in the markdown)."""
    results, threshold = out["results"], out["config"]["bend"]
    lines: dict[str, list[str]] = {}
    for axis in AXES:
        ex, emb = curve(results, axis, "embedding_state_bytes")
        lines[axis] = []
        for metric in ("samples_per_s", "peak_rss_mib"):
            xs, ys = curve(results, axis, metric)
            lines[axis].append(describe(axis, metric, xs, ys, threshold, [emb[ex.index(x)] for x in xs]))
        loads = [results["points"][e["key"]].get("load_average_1min", 0.0) for e in results["curves"][axis]]
        cores = results.get("cores") or 1
        if max(loads, default=0.0) > cores:
            lines[axis][0] += (
                f" [load average up to {max(loads):.1f} on {cores} cores while these points ran: differences "
                "may be noise]"
            )
    threads = [(e["x"], results["points"][e["key"]].get("threads_per_process")) for e in results["curves"]["procs"]]
    if lines["procs"]:
        lines["procs"][0] += " (threads per process: " + ", ".join(f"{t} at {x:.0f}" for x, t in threads) + ")"
    xs, secs = curve(results, "table_rows", "export_seconds")
    _, size = curve(results, "table_rows", "export_artifact_bytes")
    tx, tables = curve(results, "table_rows", "embedding_table_bytes")
    lines["export"] = describe_export(xs, secs, size, [tables[tx.index(x)] for x in xs], threshold)
    return lines


# ------------------------------------------------------------------------------------------ outputs
def plot(out: dict, path: Path) -> None:
    """One subplot per axis (samples/s and peak memory on twin axes) plus export cost vs table rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = out["results"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = [(axis, ("samples_per_s", "samples/s"), ("peak_rss_mib", "peak RSS (MiB)")) for axis in AXES]
    panels.append(("table_rows", ("export_seconds", "export seconds"), ("export_artifact_bytes", "artifact (MiB)")))
    for ax, (axis, (left, left_label), (right, right_label)) in zip(axes.flat, panels):
        xs, ys = curve(results, axis, left)
        rx, ry = curve(results, axis, right)
        if right == "export_artifact_bytes":
            ry = [v / MIB for v in ry]
        ax.plot(xs, ys, "o-", color="tab:blue")
        ax.set_ylabel(left_label, color="tab:blue")
        ax.set_xlabel(AXIS_LABEL[axis])
        twin = ax.twinx()
        twin.plot(rx, ry, "s--", color="tab:orange")
        twin.set_ylabel(right_label, color="tab:orange")
        if axis in ("batch", "table_rows", "dim", "features") and len(xs) > 1:
            ax.set_xscale("log")
            ax.set_xticks(xs)
            ax.set_xticklabels([_fmt_x(axis, x) for x in xs])
            ax.minorticks_off()
        if axis == "procs":
            ax.set_xticks(xs)
        title = "export cost" if left == "export_seconds" else f"{AXIS_LABEL[axis]}"
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        twin.set_ylim(bottom=0)
    c = out["config"]
    fig.suptitle(
        f"c2al-rec trainer cost growth ({c['threads']} thread(s) in all per point; "
        f"base: {c['base_features']} features, d={c['base_dim']}, batch {c['base_batch']}, 1 process, "
        f"tables <= {c['base_table_rows']:.0e} rows; "
        f"table-rows sweep at d={c['rows_dim']})",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(out: dict, command: str) -> str:
    r, c = out["results"], out["config"]
    load = r["load_average_1min"]
    lines = [
        *results_header("Cost-growth curves", c, command),
        "",
        f"Base point: {c['base_features']} sparse features, embedding dim {c['base_dim']}, batch {c['base_batch']} "
        f"per rank, 1 process, largest table {c['base_table_rows']:,} rows; one axis varied at a time (the "
        f"table-rows sweep at dim {c['rows_dim']}). Every point: a fresh process running the real Trainer "
        f"({'C2AL on' if c['c2al'] else 'C2AL off'}, fp32), {c['warmup']} untimed + {c['steps']} timed steps, "
        f"{c['threads']} thread(s) in all. Samples/s: one step's samples (all ranks) / the median timed step's "
        "seconds (the curves; robust to bursts of load), and timed samples / timed seconds. "
        "Peak memory: the process's peak RSS from the trainer's build to the last timed step (its high-water "
        "mark restarted just before the build, so imports and set-up do not hide the curve; 2 processes: the sum "
        f"over ranks). Embedding state: rows x (d + 1) x 4 B (fp32 tables + RowWiseAdagrad). "
        f"Load average (1 min) before / after: {load[0]:.1f} / {load[1]:.1f} (the machine is shared); "
        f"wall time {r['wall_seconds'] / 60:.1f} min. Load: the 1-min load average as each point started.",
        "",
        "![scaling](scaling.png)",
        "",
    ]
    for axis in AXES:
        export = axis == "table_rows"
        lines += [f"## {AXIS_LABEL[axis]}", ""]
        head = (
            f"| {AXIS_LABEL[axis]} | samples/s (median step) | samples/s (all timed steps) | peak RSS (MiB) | "
            "embedding state (MiB) | load |"
        )
        sep = "| ---: | ---: | ---: | ---: | ---: | ---: |"
        if export:
            head += " export (s) | artifact (MiB) |"
            sep += " ---: | ---: |"
        lines += [head, sep]
        for entry in r["curves"][axis]:
            p = r["points"][entry["key"]]
            x = _fmt_x(axis, entry["x"])
            if "error" in p:
                lines.append(f"| {x} | failed: {p['error'][-120:]!r} | | | | |" + (" | |" if export else ""))
                continue
            row = (
                f"| {x} | {p['samples_per_s']:,.0f} | {p['mean_samples_per_s']:,.0f} | {p['peak_rss_mib']:,.0f} | "
                f"{p['embedding_state_bytes'] / MIB:,.1f} | {p['load_average_1min']:.1f} |"
            )
            if export:
                row += f" {p['export_seconds']:.1f} | {p['export_artifact_bytes'] / MIB:,.1f} |"
            lines.append(row)
        lines.append("")
        lines += [f"- {line}" for line in r["summary"][axis]]
        if axis == "table_rows":
            lines += [f"- {line}" for line in r["summary"]["export"]]
        lines.append("")
    ratio_text = ", ".join(f"{k}={'n/a' if v is None else f'{v:.3f}'}" for k, v in out["ratios"].items())
    lines += ["Ratios (largest / smallest axis value): " + ratio_text, ""]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, 2 points per axis (about 1.5 minutes on a quiet 2-core machine); no results file is written",
    )
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    parser.add_argument("--record", action="store_true", help=RECORD_HELP)
    parser.add_argument("--threads", type=int, default=Options.threads, help="total torch threads per point")
    parser.add_argument("--png", default=None, help="write the figure here (full runs: benchmarks/results/scaling.png)")
    parser.add_argument("--data-cache", default="", help="keep generated datasets in this directory between runs")
    args = parser.parse_args(argv)
    opts = Options(threads=args.threads, data_cache=args.data_cache)
    if args.quick:
        opts = quick_options(opts)
    out = run(opts)
    png = Path(args.png) if args.png else None
    if png is None:  # full runs: next to the markdown; --quick: next to --json (if any), never in results/
        png = (
            RESULTS_DIR / f"{NAME}.png"
            if args.record and not args.quick
            else (Path(args.json).with_suffix(".png") if args.json else None)
        )
    if png is not None:
        plot(out, png)
    if args.record and not args.quick:
        write_json(RESULTS_DIR / f"{NAME}.json", out)
    finish(NAME, out, _markdown, argv, args.quick, args.json, args.record)
    failed = [k for k, p in out["results"]["points"].items() if "error" in p]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
