"""What every benchmark shares: the machine line, the production-shaped model, timing, the CLI and the record."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from c2al_rec.cli.options import add_dataclass_flags as add_option_flags  # noqa: F401 (the benchmarks' parsers)
from c2al_rec.cli.options import dataclass_from_args as options_from_args  # noqa: F401
from c2al_rec.io.atomic import atomic_write_json
from c2al_rec.io.atomic import atomic_write_text as write_text  # a results file: never left half-written

RESULTS_DIR = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent
COHORT_SPEC = REPO / "launch" / "cohorts" / "user_value_p5_p95.json"
RECORD_HELP = "write the results into benchmarks/results/ (the committed record: the only flag that writes there)"


def cpu_bf16_isa() -> str:
    """The CPU's bf16 matrix instructions (``amx_bf16``, ``avx512_bf16``) or ``none`` (bf16 then runs
    emulated, slower than fp32): hosts that print the same model name differ here."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    return "+".join(f for f in ("amx_bf16", "avx512_bf16") if f in flags) or "none"


def machine() -> str:
    """CPU model and bf16 ISA, cores, OS and Python: the 'Machine' line of every results file."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name:")), "unknown")
    return (
        f"{model} (bf16 ISA: {cpu_bf16_isa()}), {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}"
    )


def accelerator_machine() -> str:
    """``machine()`` plus the GPU, torch and triton versions: the line of the benchmarks that also run on a GPU."""
    import torch

    try:
        from triton import __version__ as triton_version
    except ImportError:
        triton_version = "not installed"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return f"{machine()}; GPU {gpu}; torch {torch.__version__}; triton {triton_version}"


def production_model() -> dict[str, Any]:
    """ModelConfig fields of the production-shaped model the throughput and serving benchmarks share."""
    return dict(
        embedding_dim=64, dense_arch=[256], dhen_layers=[["fm", "linear"], ["fm", "linear"]],
        fm={"rank": 16, "compressed_tokens": 16, "out_tokens": 8, "mlp": [512]}, linear={"out_tokens": 8},
        primary_head=[256], aux_head=[128],
    )  # fmt: skip


def tiny_model() -> dict[str, Any]:
    """ModelConfig fields of the smallest model that still has every part (quick runs and tests)."""
    return dict(
        embedding_dim=8, dense_arch=[16], dhen_layers=[["fm", "linear"]],
        fm={"rank": 4, "compressed_tokens": 4, "out_tokens": 4, "mlp": [16]}, linear={"out_tokens": 4},
        primary_head=[16], aux_head=[8],
    )  # fmt: skip


def model_config(fields: dict[str, Any]) -> Any:
    """``ModelConfig`` from a ``[model]`` table (module settings as nested dicts), checked as a config file is."""
    from c2al_rec.config import load_config_dict

    return load_config_dict({"model": fields}, "benchmark model").model


def trainer_config(
    data: str, batch_size: int, model: dict[str, Any], c2al: bool, sparse_lr: float, dense_lr: float, **train: Any
) -> Any:
    """The trainer ``Config`` every trainer benchmark runs: RowWiseAdagrad + Adam, no logging, never resumed;
    C2AL on uses the p5/p95 user-value cohort spec. ``train``: further ``TrainConfig`` fields."""
    from c2al_rec.config import CheckpointConfig, CohortsConfig, Config, DataConfig, TrainConfig

    return Config(
        data=DataConfig(path=data, batch_size=batch_size),
        model=model_config(model),
        cohorts=CohortsConfig(enabled=c2al, spec=str(COHORT_SPEC) if c2al else ""),
        train=TrainConfig(
            sparse_optimizer="rowwise_adagrad", sparse_lr=sparse_lr, dense_optimizer="adam", dense_lr=dense_lr,
            log_every=0, **train,
        ),
        checkpoint=CheckpointConfig(resume="never"),
    )  # fmt: skip


def synthetic_root(opts: Any, work: Path, seed: int = 0) -> Path:
    """``opts.data``, or a synthetic dataset generated into ``work/data``: ``opts.rows`` rows (all splits),
    ``opts.num_sparse`` tables of at most ``opts.max_table_size`` rows."""
    if opts.data:
        return Path(opts.data)
    from c2al_rec.config import SyntheticConfig
    from c2al_rec.data.synthetic import generate_synthetic

    sizes = dict(rows=opts.rows, num_sparse=opts.num_sparse, max_table_size=opts.max_table_size)
    generate_synthetic(work / "data", SyntheticConfig(**sizes, seed=seed))
    return work / "data"


def results_header(title: str, config: dict[str, Any], command: str) -> list[str]:
    """The first lines of every results markdown: title, machine, exact command, config."""
    config_line = "Config: " + ", ".join(f"{k}={v!r}" for k, v in config.items() if k != "machine")
    return [f"# {title}", "", f"Machine: {config['machine']}", "", f"Command: `{command}`", "", config_line]


def md_table(header: list[str], rows: list[list[Any]], align: str = "") -> list[str]:
    """A markdown table's lines: ``header``, the rule (``align``: one ``l`` or ``r`` per column, default all
    ``l``; ``r`` writes ``---:``) and one line per row, cells as ``str()``."""
    rule = ["---:" if a == "r" else "---" for a in (align or "l" * len(header))]
    return ["| " + " | ".join(map(str, line)) + " |" for line in [header, rule, *rows]]


def ratio_lines(ratios: dict[str, Optional[float]], prefix: str, per_run: Optional[list[dict]] = None) -> list[str]:
    """``- `key`: value`` per measured ratio of one device (keys ``<prefix>_*``); with ``per_run``, each
    run's value in brackets."""
    each = lambda key: "" if per_run is None else " [" + ", ".join(f"{r[key]:.3f}" for r in per_run if key in r) + "]"  # noqa: E731
    return [f"- `{k}`: {v:.3f}{each(k)}" for k, v in ratios.items() if k.startswith(prefix + "_") and v is not None]


def merge_device(previous: Optional[dict], out: dict[str, Any], command: str, always: list[str]) -> dict[str, Any]:
    """A record kept per device (``out["device"]``: cpu or gpu) after this run: this device's entry (``out`` but
    its ratios, with the command) and ratios (``<device>_*``) replace the recorded ones, the other device's stay;
    every ``always`` ratio is named (null: unmeasured), sorted."""
    previous = previous or {"devices": {}, "ratios": {}}
    device = out["device"]
    entry = {**{k: v for k, v in out.items() if k not in ("benchmark", "device", "ratios")}, "command": command}
    kept = {k: v for k, v in previous["ratios"].items() if not k.startswith(device + "_")}
    ratios = dict(sorted({**dict.fromkeys(always), **kept, **out["ratios"]}.items()))
    return {"benchmark": out["benchmark"], "devices": {**previous["devices"], device: entry}, "ratios": ratios}


def base_parser(doc: Optional[str], quick_help: str = "small sizes (seconds)", data: bool = True) -> Any:
    """--quick / --json / --record, and --data (``data``): the flags every benchmark takes."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help + "; no results file is written")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    parser.add_argument("--record", action="store_true", help=RECORD_HELP)
    if data:
        parser.add_argument("--data", default="", help="read this dataset instead of generating one")
    return parser


def command_line(name: str, argv: Optional[list[str]]) -> str:
    """The exact command of this run, as recorded next to its numbers."""
    return f"python -m benchmarks.{name} " + " ".join(argv if argv is not None else sys.argv[1:])


def write_json(path: Path | str, obj: Any) -> None:
    """``obj`` as indented JSON (the form of every committed results file), written atomically."""
    atomic_write_json(path, obj)


def resolve_device(name: str) -> str:
    """``--device``: auto (cuda when present, else cpu), cpu or cuda."""
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device: expected auto, cpu or cuda, got {name!r}")
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def sync(device: Any) -> None:
    """Wait for the device's queued work (a no-op on CPU), so a timer measures the work itself."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], calls: int = 1) -> float:
    """Seconds of ``calls`` calls of ``fn`` (CPU work; on a GPU use ``interleaved_seconds``, which syncs)."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - t0


def interleaved_seconds(
    fns: dict[str, Callable[[], object]], rounds: int, device: Any = "cpu", rotate: bool = False
) -> dict[str, list[float]]:
    """Seconds per call of each function over ``rounds`` rounds of one call each, in turn, so that load
    from other processes on a shared machine hits all alike (``rotate``: the order shifts every round, so
    no function always runs right after the same other one)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)] if rotate else names:
            sync(device)
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def finish(
    name: str, out: dict[str, Any], markdown: Callable[..., str], argv: Optional[list[str]], quick: bool,
    json_path: Optional[str], record: bool = False, always: Optional[list[str]] = None,
) -> int:  # fmt: skip
    """Print the record's markdown; with ``record`` (``--record``, not ``--quick``) write ``results/<name>.json``
    and the ``.md`` rendered from it; ``json_path``: this run's own output. ``always``: a benchmark recorded per
    device: the record is this run merged into the recorded one (``merge_device``), rendered by ``markdown(record)``
    (else ``markdown(out, command)``)."""
    record, path, command = record and not quick, RESULTS_DIR / f"{name}.json", command_line(name, argv).strip()
    if always is None:
        rec, text = out, markdown(out, command)
    else:
        rec = merge_device(json.loads(path.read_text()) if record and path.exists() else None, out, command, always)
        text = markdown(rec)
    print(text)
    if record:
        write_json(path, rec)
        write_text(RESULTS_DIR / f"{name}.md", text)
    if json_path and (always is None or Path(json_path).resolve() != path.resolve()):  # never over a merged record
        write_json(json_path, out)
    return 0
