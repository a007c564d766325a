"""The pipeline's evaluation stage: C2AL vs baseline per cohort, attention comparison, report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from c2al_rec.analysis.attention import attention_stats_for_checkpoint, layer_weight_stats, plot_attention_comparison
from c2al_rec.analysis.report import attention_table, markdown_table
from c2al_rec.cohorts.spec_file import load_cohort_spec
from c2al_rec.config import Config
from c2al_rec.io import atomic_write_json, atomic_write_text

from .evaluate import RunScorer, evaluate_runs


def write_pipeline_report(cfg: Config, out: Path, spec_path: Path) -> dict[str, Any]:
    """Score both runs on the eval split, write eval/ (json, md, png), attention stats and report.md."""
    data, split = cfg.data.path, cfg.pipeline.eval_split
    spec = load_cohort_spec(spec_path)
    scorer = RunScorer(data, split)
    eval_dir = out / "eval"
    result = evaluate_runs(
        [out / "c2al"], [out / "baseline"], data, split, spec, cfg.pipeline.resamples, eval_dir, scorer
    )
    table_md = markdown_table(result, result["sensitive_axis"])
    ne_png = eval_dir / "ne_diff.png" if (eval_dir / "ne_diff.png").is_file() else None
    runs = {name: scorer.run(out / name) for name in ("baseline", "c2al")}
    attention = {name: attention_stats_for_checkpoint(run, data, split) for name, run in runs.items()}
    atomic_write_json(eval_dir / "attention.json", attention)
    att_png = plot_attention_comparison(attention, eval_dir / "attention.png", "FM attention weights: baseline vs C2AL")
    layers = {name: layer_weight_stats(run.model) for name, run in runs.items()}
    atomic_write_json(eval_dir / "layer_weights.json", layers)
    plot_attention_comparison(
        layers, eval_dir / "layer_weights.png", "Weights of the layers before / after FM attention"
    )
    report = _report_markdown(result, table_md, attention, spec_path, out, ne_png, att_png)
    atomic_write_text(out / "report.md", report)
    return result


def _report_markdown(result, table_md, attention, spec_path, out, ne_png, att_png) -> str:  # type: ignore[no-untyped-def]
    lines = [
        "# C2AL vs baseline",
        "",
        f"Cohort axis **{result['axis']}**: head `{result['head']}`, tail `{result['tail']}` "
        f"(discovered: `{spec_path.relative_to(out)}`). Evaluated on the `{result['split']}` split.",
        "",
        table_md,
        "",
        "NE_diff = (NE_c2al - NE_base) / NE_base; negative is better.",
        "",
        "**One seed cannot show significance at these effect sizes.** The interval above resamples test rows "
        "only; the spread across training seeds is usually several times wider. For the real evidence run "
        "`c2al-rec experiment --config <config> --seeds 5` and see the committed multi-seed results in "
        "`benchmarks/results/experiment_*.md`.",
        "",
    ]
    if ne_png:
        lines += [f"![NE_diff per group]({Path(ne_png).relative_to(out)})", ""]
    lines += ["## FM attention weights", "", *attention_table(attention)]
    if att_png:
        lines += [
            "",
            f"![attention weights]({Path(att_png).relative_to(out)})",
            "",
            "Weights of the layers before and after each FM attention (Figure 4 of the paper): "
            "`eval/layer_weights.png`, `eval/layer_weights.json`.",
        ]
    return "\n".join(lines) + "\n"
