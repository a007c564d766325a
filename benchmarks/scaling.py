"""Cost-growth curves: samples/s and peak memory of the real trainer against five size axes, and export cost.

python -m benchmarks.scaling [--quick] [--record] [--json PATH] [--png PATH] [--threads N] [--<option> ...]

One axis varies at a time around a base point: sparse features, embedding dim, batch per rank, processes
(``elastic_launch``) and largest table rows (whose points also export their checkpoint, parity gate on).
Every point is a fresh subprocess running the real Trainer: samples/s from the median timed step, peak
memory from the process's own VmHWM. Each curve gets a line written from its numbers (ratio last / first,
log-log slopes and bend, a least-squares cost line). ``--record`` writes ``benchmarks/results/scaling.{md,json,png}``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from benchmarks import common
from benchmarks.common import RESULTS_DIR

NAME = "scaling"
ROOT = Path(__file__).resolve().parent.parent
RESULT_TAG = "SCALING_RESULT "
MIN_GENERATED_FEATURES = 10  # the synthetic generator's minimum (6 named + 4 cohort-pair extras)
TRAIN_FRACTION = 0.8  # generator default: 10% valid, 10% test
MIB = 2**20
# axis (also the point field it sets) -> its label, and the unit of x in its straight-line fit (size, name)
AXES = {
    "features": ("sparse features", 1, "feature"), "dim": ("embedding dim", 1, "unit of d"),
    "batch": ("batch size per rank", 1000, "1,000 samples"), "procs": ("processes", 1, "process"),
    "table_rows": ("largest table rows", 1e6, "1e6 rows"),
}  # fmt: skip


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
    model: dict = field(default_factory=common.production_model)
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
        opts, features=(8, 10), dims=(8, 16), batch_sizes=(128, 256), procs=(1, 2), table_rows=(1_000, 10_000),
        base_features=10, base_dim=8, base_batch=128, base_table_rows=1_000, rows_dim=8, model=common.tiny_model(),
        warmup=1, steps=2, launch_single=False, parity_rows=256, min_rows=4_000,
    )  # fmt: skip


def plan_points(opts: Options) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """The distinct points to run and, per axis, the point keys of its curve (in axis order)."""
    base = dict(features=opts.base_features, dim=opts.base_dim, batch=opts.base_batch, procs=1,
                table_rows=opts.base_table_rows)  # fmt: skip
    sweeps = dict(features=opts.features, dim=opts.dims, batch=opts.batch_sizes, procs=opts.procs,
                  table_rows=opts.table_rows)  # fmt: skip
    points: dict[str, dict] = {}
    curves: dict[str, list[str]] = {a: [] for a in AXES}
    for axis, values in sweeps.items():
        for value in values:
            p = dict(base, **{axis: value}, **({"dim": opts.rows_dim} if axis == "table_rows" else {}))
            launched = axis == "procs" and (value > 1 or opts.launch_single)
            key = "f{features}_d{dim}_b{batch}_p{procs}_t{table_rows}".format(**p) + ("_launched" if launched else "")
            point = points.setdefault(key, dict(p, launched=launched, export=False))
            point["export"] |= axis == "table_rows"
            curves[axis].append(key)
    return points, curves


def prepare_data(opts: Options, points: dict[str, dict], cache: Path) -> dict[str, str]:
    """Generate (or reuse) one dataset per (generated features, largest table), with enough train batches for
    every point using it; returns the dataset root of every point."""
    from c2al_rec.config import SyntheticConfig
    from c2al_rec.data.synthetic import generate_synthetic

    source = {key: (max(MIN_GENERATED_FEATURES, p["features"]), p["table_rows"]) for key, p in points.items()}
    need: dict[tuple[int, int], int] = {}
    for key, p in points.items():
        # + 3 batches: the pipeline reads ahead, and ranks split the row groups unevenly
        train_rows = (opts.warmup + opts.steps + 3) * p["batch"] * p["procs"]
        rows = max(opts.min_rows, math.ceil(train_rows / TRAIN_FRACTION * 1.1), 10 * opts.parity_rows + 1000)
        need[source[key]] = max(need.get(source[key], 0), rows)
    generated: dict[tuple[int, int], Path] = {}
    for (gen_features, table_rows), rows in sorted(need.items()):
        root = generated[gen_features, table_rows] = cache / f"f{gen_features}_t{table_rows}_r{rows}"
        if not (root / "schema.json").is_file():
            shutil.rmtree(root, ignore_errors=True)
            synth = SyntheticConfig(rows=rows, num_sparse=gen_features, max_table_size=table_rows, seed=1)
            seconds = common.timed(lambda: generate_synthetic(root, synth))
            _log(f"generated {root.name}: {rows:,} rows in {seconds:.1f} s")
    roots = {key: generated[src] for key, src in source.items()}
    for key, p in points.items():
        if p["features"] < MIN_GENERATED_FEATURES:  # fewer than the generator makes: a trimmed schema
            roots[key] = subset_features(roots[key], p["features"])
    return {key: str(root) for key, root in roots.items()}


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
    common.write_json(dst / "schema.json", schema)  # atomic: its presence marks the subset as done
    return dst


def peak_rss_mib() -> float:
    """This process's own peak RSS, MiB: VmHWM (since exec or the last clear_refs), not ``ru_maxrss``, which
    Linux keeps across fork + exec, so a point started by a large parent would report the parent's peak."""
    return int(Path("/proc/self/status").read_text().split("VmHWM:", 1)[1].split()[0]) / 1024


def _rank_worker(cfg_dict: dict, run_dir: str, warmup: int, steps: int, save: bool = False) -> dict[str, Any]:
    """One rank (of a launched point, or the single process of the others): build the trainer, time ``steps``
    steps after ``warmup``, save a checkpoint if asked, then leave the process group."""
    import torch.distributed as dist

    from c2al_rec.config import load_config_dict
    from c2al_rec.distributed.backend import destroy_distributed, init_distributed
    from c2al_rec.train.trainer import Trainer

    cfg = load_config_dict(cfg_dict)
    process_peak_before = peak_rss_mib()  # imports and whatever ran before the trainer
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts at the current RSS: the peak is what follows
    t0 = time.perf_counter()
    try:
        trainer = Trainer(cfg, Path(run_dir), init_distributed())
        trainer.build()
        batches = iter(trainer._reader(cfg.data.train_split, train=True))
        build_s = time.perf_counter() - t0
        try:
            for _ in range(warmup):
                trainer.train_step(batches)
            dist.barrier()
            start = time.perf_counter()
            step_s = [common.timed(lambda: trainer.train_step(batches)) for _ in range(steps)]
            dist.barrier()
            seconds = time.perf_counter() - start
            world = dist.get_world_size()
            out = {
                "samples_per_s": cfg.data.batch_size * world / statistics.median(step_s),
                "mean_samples_per_s": steps * cfg.data.batch_size * world / seconds,
                "peak_rss_mib": peak_rss_mib(),  # from the trainer's build to the last timed step
                "process_peak_rss_before_mib": process_peak_before, "step_seconds": step_s,
                "build_seconds": build_s, "world_size": world,
            }  # fmt: skip
            if save:
                trainer.save_checkpoint()
        finally:
            trainer.close()
    finally:
        destroy_distributed()
    return out


def run_job(job: dict) -> dict[str, Any]:
    """One point, in this (fresh) process: train and time (launched: in ``procs`` processes started by
    elastic_launch, whose peaks add up), then export the latest checkpoint if asked (fp32, parity gate on)."""
    from c2al_rec.config import ExportConfig, config_to_dict
    from c2al_rec.distributed.launch import launch_local
    from c2al_rec.export.exporter import export_checkpoint

    work, procs = Path(job["work"]), job["procs"]
    threads = max(1, job["threads"] // procs)
    cfg = common.trainer_config(
        job["data"], job["batch"], dict(job["model"], embedding_dim=job["dim"]), job["c2al"], job["sparse_lr"],
        job["dense_lr"], eval_batches=2, num_threads=threads,
    )  # fmt: skip
    args = (config_to_dict(cfg), str(work / "run"), job["warmup"], job["steps"])
    if job["launched"]:
        ranks = launch_local(_rank_worker, args, procs, f"scaling-{os.getpid()}-{procs}")
        peaks = [ranks[r]["peak_rss_mib"] for r in sorted(ranks)]
        result = dict(ranks[0], rank_peak_rss_mib=peaks, peak_rss_mib=sum(peaks), launcher_peak_rss_mib=peak_rss_mib())
    else:
        result = _rank_worker(*args, save=job["export"])
    result["threads_per_process"] = threads
    if job["export"]:
        gc.collect()
        export = ExportConfig(parity_rows=job["parity_rows"])
        seconds = common.timed(lambda: export_checkpoint(export, work / "run", work / "export"))
        files = {p.name: p.stat().st_size for p in (work / "export").rglob("*") if p.is_file()}
        result.update({
            "export_seconds": seconds, "export_artifact_bytes": sum(files.values()),
            "export_files_bytes": files, "export_peak_rss_mib": peak_rss_mib(),  # training + export in this process
        })  # fmt: skip
    return result


def child_main() -> int:
    """Subprocess entry: the job as JSON on stdin, the result as one tagged JSON line on stdout."""
    print(RESULT_TAG + json.dumps(run_job(json.loads(sys.stdin.read()))), flush=True)
    return 0


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
            return {**json.loads(line[len(RESULT_TAG) :]), "wall_seconds": wall}
    return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}", "wall_seconds": wall}


def run(opts: Options) -> dict[str, Any]:
    """Run every point; returns ``{"benchmark", "config", "results", "ratios"}``."""
    points, curves = plan_points(opts)
    t_start, load_before = time.perf_counter(), os.getloadavg()[0]
    measured: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="c2al-bench-scaling-") as tmp:
        cache = Path(opts.data_cache) if opts.data_cache else Path(tmp) / "data"
        cache.mkdir(parents=True, exist_ok=True)
        roots = prepare_data(opts, points, cache)
        _log(f"{len(points)} points, {opts.threads} thread(s) in all per point")
        for i, (key, point) in enumerate(points.items(), 1):
            load = os.getloadavg()[0]
            result = {**run_point(opts, point, roots[key], Path(tmp) / "points" / key), **point}
            schema = json.loads((Path(roots[key]) / "schema.json").read_text())
            rows = sum(int(f["num_embeddings"]) for f in schema["sparse"])  # over all embedding tables
            measured[key] = result = {
                **result, "embedding_rows": rows, "embedding_table_bytes": rows * point["dim"] * 4,  # fp32 tables
                "embedding_state_bytes": rows * (point["dim"] + 1) * 4,  # + RowWiseAdagrad: one fp32 per row
                "load_average_1min": load,
            }  # fmt: skip
            _log(
                f"[{i}/{len(points)}] {key}: FAILED {result['error'][-300:]}" if "error" in result else
                f"[{i}/{len(points)}] {key}: {result['samples_per_s']:,.0f} samples/s, peak RSS "
                f"{result['peak_rss_mib']:,.0f} MiB ({result['wall_seconds']:.0f} s, load {load:.1f})"
            )  # fmt: skip
    results: dict[str, Any] = {
        "points": measured,
        "curves": {axis: [dict(x=measured[k][axis], key=k) for k in keys] for axis, keys in curves.items()},
        "load_average_1min": [load_before, os.getloadavg()[0]], "cores": os.cpu_count(),
        "wall_seconds": time.perf_counter() - t_start,
    }  # fmt: skip
    out = {"benchmark": NAME, "config": {**dataclasses.asdict(opts), "machine": common.machine()}, "results": results}
    out["ratios"] = ratios(results)
    results["summary"] = summaries(out)
    return out


def curve(results: dict, axis: str, metric: Union[str, Callable[[dict], float]]) -> tuple[list[float], list[float]]:
    """(x, y) of ``metric`` (a point's key, or a function of the point) along ``axis``, failed points left out."""
    entries = [(e["x"], results["points"][e["key"]]) for e in results["curves"][axis]]
    pairs = [(x, metric(p) if callable(metric) else p.get(metric)) for x, p in entries if "error" not in p]
    measured = [(float(x), float(y)) for x, y in pairs if y is not None]
    return [x for x, _ in measured], [y for _, y in measured]


def ratios(results: dict) -> dict[str, Optional[float]]:
    """Per axis: the metric at the largest value over the metric at the smallest (None when not measured)."""
    per_axis = {"samples_per_s": "samples_per_s", "peak_rss": "peak_rss_mib"}  # ratio name -> point key
    metrics = {f"{axis}_{name}": (axis, metric) for axis in AXES for name, metric in per_axis.items()}
    metrics.update({m: ("table_rows", m) for m in ("export_seconds", "export_artifact_bytes")})
    out = {}
    for name, (axis, metric) in metrics.items():
        _, ys = curve(results, axis, metric)
        out[f"{name}_last_vs_first"] = ys[-1] / ys[0] if len(ys) >= 2 and ys[0] > 0 else None
    return out


def find_bend(xs: list[float], ys: list[float], threshold: float) -> dict[str, Any]:
    """The split of the curve into two runs of segments whose mean log-log slopes differ most, by >= ``threshold``
    (2 points: one segment, never a bend): ``{"slopes", "bend_x" (None: no bend), "before", "after"}``."""
    s = [math.log(ys[i + 1] / ys[i]) / math.log(xs[i + 1] / xs[i]) for i in range(len(xs) - 1)]  # d log y / d log x
    best: dict[str, Any] = {"slopes": s, "bend_x": None, "before": sum(s) / len(s) if s else None, "after": None}
    best_gap = threshold
    for k in range(1, len(s)):
        before, after = sum(s[:k]) / k, sum(s[k:]) / (len(s) - k)
        if abs(after - before) >= best_gap:
            best_gap = abs(after - before)
            best.update(bend_x=xs[k], before=before, after=after)
    return best


def _fmt_x(axis: str, x: float) -> str:
    return f"{x:.0e}".replace("e+0", "e") if axis == "table_rows" else f"{x:,.0f}"


def describe(axis: str, what: str, xs: list[float], ys: list[float], threshold: float, cost: tuple) -> str:
    """One line from the numbers of a curve: y last / first, its log-log slope(s) and bend, and the
    least-squares line ``cost = fixed + rate * x`` (``cost``: its name, unit and values, one per x)."""
    if len(xs) < 2:
        return f"{what} vs {AXES[axis][0]}: fewer than 2 points measured"
    bend, (label, scale, unit) = find_bend(xs, ys, threshold), AXES[axis]
    if bend["bend_x"] is None:
        slope = f"log-log slope {bend['before']:+.2f}, no bend"
    else:
        bx = _fmt_x(axis, bend["bend_x"])
        slope = f"log-log slope {bend['before']:+.2f} up to {bx}, {bend['after']:+.2f} after: bends at {bx}"
    name, cost_unit, costs = cost
    rate, fixed = statistics.linear_regression([x / scale for x in xs], costs)
    return (
        f"{what} vs {label}: x{ys[-1] / ys[0]:.2f} from {_fmt_x(axis, xs[0])} to {_fmt_x(axis, xs[-1])}; "
        f"{slope}; least squares: {name} {fixed:.3g} {cost_unit} + {rate:.3g} {cost_unit} per {unit}"
    )


def summaries(out: dict) -> dict[str, list[str]]:
    """Per axis (and ``export``), one line per curve, written from its numbers (also in the markdown)."""
    results, threshold = out["results"], out["config"]["bend"]
    lines: dict[str, list[str]] = {}
    for axis in AXES:
        xs, rate = curve(results, axis, "samples_per_s")
        _, step_ms = curve(results, axis, lambda p: 1000 * p["batch"] * p["world_size"] / p["samples_per_s"])
        samples = describe(axis, "samples/s", xs, rate, threshold, ("step", "ms", step_ms))  # the median step
        if axis == "procs" and len(xs) > 1:
            samples += f"; {100 * (rate[-1] / rate[0] - 1) / (xs[-1] / xs[0] - 1):.0f}% of linear scaling"
        mx, mem = curve(results, axis, "peak_rss_mib")
        memory = describe(axis, "peak memory", mx, mem, threshold, ("peak", "MiB", mem))
        _, state = curve(results, axis, lambda p: p["embedding_state_bytes"] / MIB)
        if len(mx) > 1:
            memory += f"; of its {mem[-1] - mem[0]:+,.0f} MiB, {state[-1] - state[0]:+,.0f} MiB is embedding state"
        loads = [results["points"][e["key"]].get("load_average_1min", 0.0) for e in results["curves"][axis]]
        if max(loads, default=0.0) > results["cores"]:
            samples += f" [load average up to {max(loads):.1f} on {results['cores']} cores while these points ran]"
        if axis == "procs":
            _, threads = curve(results, axis, lambda p: p.get("threads_per_process"))
            samples += " (threads per process: " + ", ".join(f"{t:.0f} at {x:.0f}" for x, t in zip(xs, threads)) + ")"
        lines[axis] = [samples, memory]
    xs, secs = curve(results, "table_rows", "export_seconds")
    _, size = curve(results, "table_rows", lambda p: p["export_artifact_bytes"] / MIB)
    _, tables = curve(results, "table_rows", lambda p: p["embedding_table_bytes"] / MIB)
    artifact = describe("table_rows", "artifact size", xs, size, threshold, ("artifact", "MiB", size))
    if len(xs) > 1:
        artifact += f"; fp32 tables are {100 * tables[0] / size[0]:.0f}% -> {100 * tables[-1] / size[-1]:.0f}% of it"
    lines["export"] = [describe("table_rows", "export seconds", xs, secs, threshold, ("export", "s", secs)), artifact]
    return lines


def plot(out: dict, path: Path) -> None:
    """One subplot per axis (samples/s and peak memory on twin axes) plus export cost vs table rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, c = out["results"], out["config"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = [(axis, "samples_per_s", "samples/s", "peak_rss_mib", "peak RSS (MiB)") for axis in AXES]
    panels.append(("table_rows", "export_seconds", "export seconds", lambda p: p["export_artifact_bytes"] / MIB,
                   "artifact (MiB)"))  # fmt: skip
    for ax, (axis, left, left_label, right, right_label) in zip(axes.flat, panels):
        sides = [(ax, left, left_label, "o-", "tab:blue"), (ax.twinx(), right, right_label, "s--", "tab:orange")]
        for side, metric, label, style, color in sides:
            side.plot(*curve(results, axis, metric), style, color=color)
            side.set_ylabel(label, color=color)
            side.set_ylim(bottom=0)
        xs, _ = curve(results, axis, left)  # the measured sizes: the ticks
        if axis != "procs" and len(xs) > 1:
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(xs, [_fmt_x(axis, x) for x in xs])
        ax.set_xlabel(AXES[axis][0])
        ax.set_title("export cost" if left == "export_seconds" else AXES[axis][0])
    fig.suptitle(
        f"c2al-rec trainer cost growth ({c['threads']} thread(s) in all per point; "
        f"base: {c['base_features']} features, d={c['base_dim']}, batch {c['base_batch']}, 1 process, "
        f"tables <= {c['base_table_rows']:.0e} rows; table-rows sweep at d={c['rows_dim']})", fontsize=10,
    )  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(out: dict, command: str) -> str:
    """The results markdown, from the JSON record alone (its prose lines are written from the numbers)."""
    r, c = out["results"], {k: tuple(v) if isinstance(v, list) else v for k, v in out["config"].items()}
    load, summary = r["load_average_1min"], summaries(out)
    blocks = [  # paragraphs, tables and lists (lists of lines), a blank line between each
        common.results_header("Cost-growth curves", c, command),
        "One axis varied at a time around the base point (1 process and the Config line's base_*; the table-rows "
        "sweep at rows_dim); every point a fresh process running the real Trainer (fp32). Samples/s: one step's "
        "samples (all ranks) / the median timed step's seconds (the curves; robust to bursts of load), and timed "
        "samples / timed seconds. "
        "Peak memory: the process's peak RSS from the trainer's build to the last timed step (its high-water "
        "mark restarted just before the build, so imports and set-up do not hide the curve; 2 processes: the sum "
        f"over ranks). Embedding state: rows x (d + 1) x 4 B (fp32 tables + RowWiseAdagrad). "
        f"Load average (1 min) before / after: {load[0]:.1f} / {load[1]:.1f} (the machine is shared); "
        f"wall time {r['wall_seconds'] / 60:.1f} min. Load: the 1-min load average as each point started.",
        *(f"Note: {note}" for note in out.get("notes", [])),
        "![scaling](scaling.png)",
    ]
    for axis in AXES:
        export = axis == "table_rows"
        head = [AXES[axis][0], "samples/s (median step)", "samples/s (all timed steps)", "peak RSS (MiB)",
                "embedding state (MiB)", "load"] + (["export (s)", "artifact (MiB)"] if export else [])  # fmt: skip
        rows = []
        for entry in r["curves"][axis]:
            p, x = r["points"][entry["key"]], _fmt_x(axis, entry["x"])
            if "error" in p:
                rows.append([x, f"failed: {p['error'][-120:]!r}"] + [""] * (len(head) - 2))
                continue
            rows.append(
                [x, f"{p['samples_per_s']:,.0f}", f"{p['mean_samples_per_s']:,.0f}", f"{p['peak_rss_mib']:,.0f}",
                 f"{p['embedding_state_bytes'] / MIB:,.1f}", f"{p['load_average_1min']:.1f}"]
                + ([f"{p['export_seconds']:.1f}", f"{p['export_artifact_bytes'] / MIB:,.1f}"] if export else [])
            )  # fmt: skip
        blocks += [f"## {AXES[axis][0]}", common.md_table(head, rows, "r" * len(head))]
        blocks.append([f"- {line}" for line in summary[axis] + (summary["export"] if export else [])])
    ratio_text = ", ".join(f"{k}={'n/a' if v is None else f'{v:.3f}'}" for k, v in out["ratios"].items())
    blocks.append("Ratios (largest / smallest axis value): " + ratio_text)
    return "\n\n".join(b if isinstance(b, str) else "\n".join(b) for b in blocks) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = common.base_parser(__doc__, "tiny sizes, 2 points per axis (about 1.5 min)", data=False)
    parser.add_argument("--png", default=None, help="write the figure here (--record: benchmarks/results/scaling.png)")
    common.add_option_flags(parser, Options)
    args = parser.parse_args(argv)
    opts = common.options_from_args(Options, args, quick_options(Options()) if args.quick else None)
    out = run(opts)
    record = args.record and not args.quick
    # the figure: --png, else next to the record, else next to --json; never in results/ for --quick
    png = args.png or (RESULTS_DIR / f"{NAME}.png" if record else args.json and Path(args.json).with_suffix(".png"))
    if png:
        plot(out, Path(png))
    common.finish(NAME, out, markdown, argv, args.quick, args.json, args.record)
    return 1 if any("error" in p for p in out["results"]["points"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
