"""The pipeline's evaluation stage: the chosen model vs baseline per cohort, attention comparison, report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from c2al_rec.analysis.attention import attention_stats_for_checkpoint, layer_weight_stats, plot_attention_comparison
from c2al_rec.analysis.report import attention_table, markdown_table
from c2al_rec.cohorts.spec_file import load_cohort_spec
from c2al_rec.config import Config
from c2al_rec.io import atomic_write_json, atomic_write_text

from .evaluate import RunScorer, evaluate_runs
from .selection import format_selection


def write_pipeline_report(
    cfg: Config,
    out: Path,
    spec_path: Path,
    model: Optional[Path] = None,
    baseline: Optional[Path] = None,
    selection: Optional[dict[str, Any]] = None,
    runs: Optional[dict[str, Path]] = None,
) -> dict[str, Any]:
    """Score the chosen model and the baseline on the eval split; write eval/ (json, md, png), attention
    stats and report.md.

    Args:
        model: the exported (chosen) run (default ``out/c2al``).
        baseline: the reference baseline run (default ``out/baseline``).
        selection: the select stage's record (its valid table goes into the report).
        runs: name -> run directory of every run whose attention is compared (default baseline and model).
    """
    data, split = cfg.data.path, cfg.pipeline.eval_split
    model, baseline = model or out / "c2al", baseline or out / "baseline"
    spec = load_cohort_spec(spec_path)
    scorer = RunScorer(data, split, batch_size=16384)
    eval_dir = out / "eval"
    result = evaluate_runs([model], [baseline], data, split, spec, cfg.pipeline.resamples, eval_dir, scorer)
    table_md = markdown_table(result, result["sensitive_axis"])
    ne_png = eval_dir / "ne_diff.png" if (eval_dir / "ne_diff.png").is_file() else None
    runs = runs or {"baseline": baseline, model.name: model}
    loaded = {name: scorer.run(path) for name, path in runs.items()}
    attention = {name: attention_stats_for_checkpoint(run, data, split) for name, run in loaded.items()}
    atomic_write_json(eval_dir / "attention.json", attention)
    att_png = plot_attention_comparison(attention, eval_dir / "attention.png", "FM attention weights: baseline vs C2AL")
    layers = {name: layer_weight_stats(run.model) for name, run in loaded.items()}
    atomic_write_json(eval_dir / "layer_weights.json", layers)
    plot_attention_comparison(
        layers, eval_dir / "layer_weights.png", "Weights of the layers before / after FM attention"
    )
    report = _report_markdown(result, table_md, attention, spec_path, out, ne_png, att_png, selection)
    atomic_write_text(out / "report.md", report)
    return result


def _report_markdown(result, table_md, attention, spec_path, out, ne_png, att_png, selection=None) -> str:  # type: ignore[no-untyped-def]
    lines = ["# C2AL vs baseline", ""]
    if selection is not None:
        lines += [
            "## Selection on the valid split",
            "",
            "Every candidate trained from the baseline's seed and data order and was scored on the `valid` split "
            "(NE_diff vs the baseline, 95% interval over rows). The chosen model is the one exported and served; "
            "the figures below it are its evaluation on the held-out split, which never took part in the choice.",
            "",
            format_selection(selection),
            "",
            f"## The exported model (`{selection['chosen']}`) vs the baseline",
            "",
        ]
    lines += [
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
