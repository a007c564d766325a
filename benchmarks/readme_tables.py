"""The README's result tables, generated from the recorded results in benchmarks/results/*.json.

python -m benchmarks.readme_tables            # print the tables
python -m benchmarks.readme_tables --write    # rewrite them in README.md (between the markers)

Each table sits in README.md between ``<!-- results:<name> -->`` and ``<!-- /results:<name> -->``;
tests/test_readme.py fails when the README and the recorded results disagree, so every number in
those tables comes from a results file and the command recorded beside it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from c2al_rec.workflows.experiment_report import fmt_diff

RESULTS = Path(__file__).parent / "results"
README = Path(__file__).resolve().parents[1] / "README.md"

# (results file, ratio key ("a|b": the first one present), what it compares, goal: ">= x", "<= x", "a-b" or "")
BENCHMARK_ROWS: list[tuple[str, str, str, str]] = [
    ("fm_kernel", "cpu_fwdbwd_speedup", "fused FM op vs eager, forward+backward (CPU)", ">= 1.3"),
    ("fm_kernel", "cpu_saved_memory_ratio", "bytes saved for backward, fused / eager", "<= 0.75"),
    ("fm_kernel", "gpu_fwdbwd_speedup", "fused FM op vs eager bf16 bmm, forward+backward (H100)", ">= 2.5"),
    ("dhen_step", "cpu_fused_vs_reference", "DHEN step, fused op vs reference math, eager (CPU)", ""),
    ("dhen_step", "gpu_compiled_fused_vs_compiled_reference", "DHEN step, compiled fused vs ref (H100)", ">= 1.2"),
    ("data_loader", "loader_vs_pyarrow", "loader vs raw pyarrow read (shuffled)", ">= 0.5"),
    ("data_loader", "loader_vs_train_step", "loader vs training step consumption", ">= 5"),
    ("train_throughput", "trainer_vs_plain_fp32|trainer_fp32_vs_plain_pytorch", "trainer vs plain, fp32", ">= 1.5"),
    ("train_throughput", "trainer_vs_plain_bf16", "trainer vs plain PyTorch, both bf16 autocast", ">= 1.5"),
    ("train_throughput", "c2al_vs_baseline", "throughput C2AL on / off (default aux heads)", ">= 0.97"),
    (
        "train_throughput",
        "c2al_vs_baseline_aux128",
        "throughput C2AL on / off (aux_head [128] on a 32-wide projection)",
        ">= 0.97",
    ),
    ("serving", "torchscript_vs_eager_p50", "TorchScript export vs eager, p50 latency", "<= 1.0"),
    ("serving", "c2al_vs_baseline_export_p50", "C2AL export vs baseline export, p50 latency", "0.95-1.05"),
    ("serving", "int8_vs_fp32_size", "int8 / fp32 embedding storage", "<= 0.3"),
    ("serving", "pt2_vs_torchscript_p50_b1", "model.pt2 vs frozen TorchScript, predict p50, batch 1", "<= 0.67"),
    ("serving", "pt2_vs_torchscript_p50_b64", "model.pt2 vs frozen TorchScript, predict p50, batch 64", "<= 0.67"),
    ("serving", "pt2_vs_torchscript_p50_b4096", "model.pt2 vs frozen TorchScript, predict p50, batch 4096", "<= 1.0"),
    ("serving_http", "qps_batched_vs_single", "HTTP QPS, micro-batched vs one request at a time", ">= 5"),
    ("serving_http", "qps_pt2_vs_torchscript_batched", "HTTP QPS, model.pt2 vs model.pt, micro-batched", ""),
]


def meets(goal: str, value: float) -> bool:
    """Whether ``value`` meets ``goal`` (">= x", "<= x", "a-b"; an empty goal is report-only)."""
    if not goal:
        return True
    if goal.startswith(">="):
        return value >= float(goal[2:])
    if goal.startswith("<="):
        return value <= float(goal[2:])
    lo, hi = (float(x) for x in goal.split("-"))
    return lo <= value <= hi


GROUPS = ("overall", "head", "tail")


def _load(name: str) -> Optional[dict[str, Any]]:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def benchmark_table() -> str:
    lines = [
        "| benchmark | ratio | recorded | goal |",
        "|---|---|---|---|",
    ]
    for name, key, what, goal in BENCHMARK_ROWS:
        data = _load(name)
        ratios = (data or {}).get("ratios", {})
        value = next((ratios[k] for k in key.split("|") if ratios.get(k) is not None), None)
        if value is None:
            shown = "not measured yet"
        else:
            shown = f"{value:.2f}" + ("" if meets(goal, value) else " (goal not met)")
        lines.append(f"| `{name}` | {what} | {shown} | {goal or 'report'} |")
    return "\n".join(lines)


def experiment_table() -> str:
    lines = [
        "| data | variant | seeds (interval over) | overall NE_diff | head NE_diff | tail NE_diff |",
        "|---|---|---|---|---|---|",
    ]
    for path in sorted(RESULTS.glob("experiment_*.json")):
        results = json.loads(path.read_text())["results"]
        name = path.stem.removeprefix("experiment_")
        for i, (variant, groups) in enumerate(results.items()):
            overall = groups.get("overall", {})
            seeds = len(overall.get("ne_diff_seeds") or []) or 1
            first = f"{name} ([md](benchmarks/results/{path.stem}.md))" if i == 0 else ""
            cells = " | ".join(fmt_diff(groups.get(g)) for g in GROUPS)
            lines.append(f"| {first} | {variant} | {seeds} ({overall.get('ci_kind', '?')}) | {cells} |")
    return "\n".join(lines)


TABLES: dict[str, Callable[[], str]] = {"benchmarks": benchmark_table, "experiments": experiment_table}


def render(readme: str) -> str:
    """``readme`` with every results block replaced by its freshly generated table."""
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n)(?:.*?\n)?(<!-- /results:{name} -->)", re.S)
        if not pattern.search(readme):
            raise ValueError(f"README.md has no <!-- results:{name} --> ... <!-- /results:{name} --> block")
        readme = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(2), readme)
    return readme


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    args = parser.parse_args(argv)
    if args.write:
        README.write_text(render(README.read_text()))
        print(f"rewrote the result tables in {README}")
    else:
        for name, make in TABLES.items():
            print(f"<!-- results:{name} -->\n{make()}\n<!-- /results:{name} -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
