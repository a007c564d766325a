"""The README's result tables and demo block, generated from the records in benchmarks/results/*.json.

python -m benchmarks.readme_tables            # print them
python -m benchmarks.readme_tables --write    # rewrite them in README.md (and docs/demo_ne_diff.png)

Each sits in README.md between ``<!-- <name> -->`` and ``<!-- /<name> -->`` (``results:benchmarks``,
``results:experiments``, ``demo``); tests/test_readme.py fails when the README and the records disagree.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Optional

from benchmarks.common import md_table, write_text
from c2al_rec.workflows.experiment_report import fmt_diff

RESULTS = Path(__file__).parent / "results"
README = Path(__file__).resolve().parents[1] / "README.md"
DEMO_PNG = Path(__file__).resolve().parents[1] / "docs" / "demo_ne_diff.png"

# (results file, ratio key, what it compares, goal: ">= x", "<= x", "a-b" or "" (report only))
BENCHMARK_ROWS: list[tuple[str, str, str, str]] = [
    ("fm_kernel", "cpu_fwdbwd_speedup", "fused FM op vs eager, forward+backward (CPU)", ">= 1.3"),
    ("fm_kernel", "cpu_saved_memory_ratio", "bytes saved for backward, fused / eager", "<= 0.75"),
    ("fm_kernel", "gpu_fwdbwd_speedup", "fused FM op vs eager bf16 bmm, forward+backward (H100)", ">= 2.5"),
    ("dhen_step", "cpu_fused_vs_reference", "DHEN step, fused op vs reference math, eager (CPU)", ""),
    ("dhen_step", "gpu_compiled_fused_vs_compiled_reference", "DHEN step, compiled fused vs ref (H100)", ">= 1.2"),
    ("data_loader", "loader_vs_pyarrow", "loader vs raw pyarrow read (shuffled)", ">= 0.5"),
    ("data_loader", "loader_vs_train_step", "loader vs training step consumption", ">= 5"),
    ("train_throughput", "mfu_fp32", "1-thread training step FLOP/s / 1-thread fp32 GEMM FLOP/s (MFU)", ""),
    ("train_throughput", "mfu_bf16", "1-thread training step FLOP/s / 1-thread bf16 GEMM FLOP/s (MFU)", ""),
    ("train_throughput", "trainer_vs_plain_pytorch", "trainer vs plain PyTorch, equal precision (min fp32, bf16)", ""),
    ("train_throughput", "c2al_vs_baseline", "throughput C2AL on / off (default aux heads)", ">= 0.97"),
    ("train_throughput", "c2al_vs_baseline_aux128",
     "throughput C2AL on / off (aux_head [128] on a 32-wide projection)", ">= 0.97"),
    ("serving", "torchscript_vs_eager_p50", "TorchScript export vs eager, p50 latency", "<= 1.0"),
    ("serving", "c2al_vs_baseline_export_p50", "C2AL export vs baseline export, p50 latency", "0.95-1.05"),
    ("serving", "int8_vs_fp32_size", "int8 / fp32 embedding storage", "<= 0.3"),
    ("serving", "pt2_vs_torchscript_p50_b1", "model.pt2 vs frozen TorchScript, predict p50, batch 1", "<= 0.67"),
    ("serving", "pt2_vs_torchscript_p50_b64", "model.pt2 vs frozen TorchScript, predict p50, batch 64", "<= 0.67"),
    ("serving", "pt2_vs_torchscript_p50_b4096", "model.pt2 vs frozen TorchScript, predict p50, batch 4096", "<= 1.0"),
    ("serving_http", "qps_batched_vs_single", "HTTP QPS, micro-batched vs one request at a time", ">= 5"),
    ("serving_http", "qps_pt2_vs_torchscript_batched", "HTTP QPS, model.pt2 vs model.pt, micro-batched", ""),
]  # fmt: skip


def meets(goal: str, value: float) -> bool:
    """Whether ``value`` meets ``goal`` (">= x", "<= x", "a-b"; an empty goal is report-only)."""
    if goal.startswith((">=", "<=")):
        return value >= float(goal[2:]) if goal[0] == ">" else value <= float(goal[2:])
    lo, hi = (float(x) for x in goal.split("-")) if goal else (-math.inf, math.inf)
    return lo <= value <= hi


GROUPS = ("overall", "head", "tail")


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def benchmark_table() -> str:
    rows = []
    for name, key, what, goal in BENCHMARK_ROWS:
        value = _load(name)["ratios"].get(key)
        met = value is None or meets(goal, value)
        shown = "not measured yet" if value is None else f"{value:.2f}" + ("" if met else " (goal not met)")
        rows.append([f"`{name}`", what, shown, goal or "report"])
    return "\n".join(md_table(["benchmark", "ratio", "recorded", "goal"], rows))


def experiment_table() -> str:
    rows = []
    for path in sorted(RESULTS.glob("experiment_*.json")):
        link = f"{path.stem.removeprefix('experiment_')} ([md](benchmarks/results/{path.stem}.md))"
        for i, (variant, groups) in enumerate(json.loads(path.read_text())["results"].items()):
            overall = groups.get("overall", {})
            seeds = f"{len(overall.get('ne_diff_seeds') or []) or 1} ({overall.get('ci_kind', '?')})"
            rows.append(["" if i else link, variant, seeds, *(fmt_diff(groups.get(g)) for g in GROUPS)])
    header = ["data", "variant", "seeds (interval over)", *(f"{g} NE_diff" for g in GROUPS)]
    return "\n".join(md_table(header, rows))


def _pct(x: float) -> str:
    return f"{100 * x:+.3f}%"


def _interval(ci: list[float]) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def _selection_line(sel: dict[str, Any]) -> str:
    """The demo's selection on the valid split: each candidate's valid NE_diff (the baseline's is 0 by
    definition) and the choice."""
    figures = "; ".join(
        f"`{name}` "
        + ", ".join(
            f"{g} {_pct(f['ne_diff'])} {_interval(f['ci95'])}"
            for g, f in groups.items()
            if f.get("ne_diff") is not None
        )
        for name, groups in sel["valid"].items()
        if name != "baseline"
    )
    how = "forced with --select.force" if sel.get("forced") else "by the rule"
    return (
        f"Selection on the valid split (rows interval): {figures}. Exported: **`{sel['chosen']}`** ({how}: "
        f"{sel['rule']}). The table below is that model on the test split."
    )


def _attention_line(att: dict[str, Any]) -> str:
    """Near-zero FM attention weights and their Gini, baseline vs C2AL: denser means both went down."""
    b, m = att["baseline"], att["c2al"]
    fewer, lower = m["near_zero_fraction"] < b["near_zero_fraction"], m["gini"] < b["gini"]
    denser = "denser here (fewer near-zero weights, lower Gini), the mechanism the paper analyses"
    if fewer != lower:
        reading = "the two statistics disagree, so this run shows no clear change in attention density"
    else:
        reading = f"C2AL's attention is {denser if fewer else 'not denser here'}"
    return (
        f"Near-zero FM attention weights in the first DHEN layer: {100 * b['near_zero_fraction']:.2f}% (baseline) "
        f"vs {100 * m['near_zero_fraction']:.2f}% (C2AL), Gini {b['gini']:.3f} vs {m['gini']:.3f}: {reading} "
        "(`runs/demo/eval/attention.png`)."
    )


def demo_block() -> str:
    """The README's demo paragraph, table and prose, from benchmarks/results/demo.json: every number
    and every claim (which intervals exclude 0, whether attention got denser) follows the record."""
    rec = _load("demo")
    c, groups = rec["cohorts"], rec["groups"]
    label = {"overall": "overall", "head": f"head ({c['head']})", "tail": f"tail ({c['tail']})"}
    nxt = c["next_axes"]
    runner_up = f"; next axis `{nxt[0]['axis']}` {nxt[0]['score']:.3f}" if nxt else ""
    rows = []
    for name, g in ((n, groups[n]) for n in GROUPS):
        if g.get("ne") is None:
            rows.append([label[name], f"n/a ({g.get('reason', 'undefined')})", "", "", ""])
        else:
            bayes = f"{g['bayes_ne']:.5f}" if g.get("bayes_ne") is not None else ""
            rows.append([label[name], f"{g['ne']:.5f}", bayes, _pct(g["ne_diff"]), _interval(g["ci95"])])
    judged = [n for n in GROUPS if groups[n].get("ne_diff") is not None and groups[n].get("ci95")]
    excl = [n for n in judged if groups[n]["ci95"][0] > 0 or groups[n]["ci95"][1] < 0]  # intervals that exclude 0
    said = ", ".join(f"{n} ({'lower' if groups[n]['ne_diff'] < 0 else 'higher'} NE)" for n in excl)
    paragraphs = [
        f"`make demo` at commit {rec['commit'][:7]}{' (uncommitted changes)' if 'dirty' in rec['commit'] else ''} "
        f"({rec['wall_s']:.0f} s of stage time on the 2-core development machine) discovered "
        f"`{c['axis']}` {c['head']} (head) vs {c['tail']} (tail) ({c['metric'].upper()} {c['score']:.3f}{runner_up}) "
        f"and reported, on the `{rec.get('split') or 'test'}` split:",
        _selection_line(rec["selection"]),
        "\n".join(md_table(["group", "NE", "Bayes NE", "NE_diff vs baseline", "95% CI (test rows of one seed)"], rows)),
        f"The row interval excludes 0 for: {said}; the others cross 0." if excl else "No interval excludes 0.",
        _attention_line(rec["attention"]) + "\n![NE_diff per group, demo](docs/demo_ne_diff.png)",
        "The demo trains one seed of each model: its interval resamples test rows only and says nothing about "
        "seed-to-seed spread, which at the paper's effect sizes (-0.05% to -0.3%) is usually wider; "
        '`c2al-rec experiment` gives seed-level intervals (see "Research results"). Re-record after a change '
        f"to what the demo computes: `{rec['command']}`.",
    ]
    return "\n\n".join(paragraphs)


def write_demo_plot(path: Path = DEMO_PNG) -> Optional[Path]:
    """``docs/demo_ne_diff.png`` from the record (None: no group has an NE_diff to plot)."""
    from c2al_rec.analysis.report import plot_ne_diff

    rec = _load("demo")
    result = {"groups": rec["groups"], "axis": rec["cohorts"]["axis"], "seeds": 1}
    return plot_ne_diff(result, path, f"make demo ({rec['commit'][:7]}): C2AL vs baseline by {result['axis']}")


BLOCKS = {"results:benchmarks": benchmark_table, "results:experiments": experiment_table, "demo": demo_block}


def render(readme: str) -> str:
    """``readme`` with every results block (and the demo block) replaced by its freshly generated text."""
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name} -->\n)(?:.*?\n)?(<!-- /{name} -->)", re.S)
        if not pattern.search(readme):
            raise ValueError(f"README.md has no <!-- {name} --> ... <!-- /{name} --> block")
        readme = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(2), readme)
    return readme


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    args = parser.parse_args(argv)
    if args.write:
        write_text(README, render(README.read_text()))
        png = write_demo_plot()
        print(f"rewrote the result tables and the demo block in {README.name}" + (f", and {png.name}" if png else ""))
    else:
        for name, make in BLOCKS.items():
            print(f"<!-- {name} -->\n{make()}\n<!-- /{name} -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
