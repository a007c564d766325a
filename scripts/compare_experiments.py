"""Compare one variant across two finished experiments that share their seeds and baseline runs.

    python scripts/compare_experiments.py runs/aux128_h runs/aux128_p32 --labels "on h" "projection 32" \
        --out benchmarks/results/aux_projection_ne [--variant c2al]

For a model change that must keep C2AL's effect (e.g. ``model.aux_projection``): experiment B is
run with the change after copying A's ``baseline/`` runs and ``cohorts.json`` into it, so both
variants are scored against the very same baselines. Reports, per group, each variant against the
baseline and B minus A paired by seed (t-interval over seeds); writes ``<out>.md``, ``<out>.json``
and ``<out>.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from c2al_rec.io.atomic import atomic_write_json, atomic_write_text
from c2al_rec.workflows.experiment import paired_difference
from c2al_rec.workflows.experiment_report import plot_forest


def load_variant(experiment: Path, variant: str) -> dict[str, Any]:
    """``eval/<variant>.json`` of a finished experiment (its per-group results)."""
    path = experiment / "eval" / f"{variant}.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no such evaluation (has `c2al-rec experiment --out {experiment}` finished?)")
    return json.loads(path.read_text())


def check_same_baselines(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> None:
    """Both evaluations must be against identical baseline NE per group (the same baseline runs)."""
    if a["seeds"] != b["seeds"]:
        raise SystemExit(f"{names[0]} has {a['seeds']} seeds, {names[1]} {b['seeds']}: compare equal seeds")
    for group, ga in a["groups"].items():
        base_a, base_b = ga.get("ne_base"), b["groups"].get(group, {}).get("ne_base")
        if base_a is not None and (base_b is None or abs(base_a - base_b) > 1e-9 * abs(base_a)):
            raise SystemExit(
                f"group {group}: baseline NE {base_a} in {names[0]} but {base_b} in {names[1]}; "
                "copy the first experiment's baseline/ and cohorts.json into the second before running it"
            )


def provenance(experiment: Path, variant: str) -> dict[str, Any]:
    """The experiment's command and wall time, and the commit its ``variant`` runs were trained at."""
    summary = experiment / "summary.json"
    s = json.loads(summary.read_text()) if summary.is_file() else {}
    run = experiment / variant / "seed_0" / "provenance.json"
    commit = json.loads(run.read_text())["git_commit"] if run.is_file() else None
    return {"command": s.get("command"), "wall_time_s": s.get("wall_time_s"), "trained_at_commit": commit}


def markdown(
    labels: tuple[str, str], results: dict[str, Any], command: str, sources: dict[str, Any], machine: str
) -> str:
    a, b, diff = (results[k] for k in (labels[0], labels[1], f"{labels[1]} minus {labels[0]}"))
    pct = lambda r: f"{100 * r['ne_diff']:+.3f}% [{100 * r['ci95'][0]:+.3f}, {100 * r['ci95'][1]:+.3f}]"  # noqa: E731
    lines = [
        f"# {labels[1]} vs {labels[0]}: C2AL's effect on NE",
        "",
        f"Command: `{command}`",
        "",
        *(
            f"- {label}: `{src['command']}` (trained at {src['trained_at_commit']}, "
            f"{(src['wall_time_s'] or float('nan')) / 60:.1f} min)"
            for label, src in sources.items()
        ),
        f"- Machine: {machine}",
        "",
        "The second experiment ran on copies of the first's `baseline/` runs and `cohorts.json` (checked: the same "
        "baseline NE in every group), so both variants are scored against the very same baselines.",
        "",
        "NE_diff: relative NE change against the baseline of the same seed (negative = better), mean over "
        "seeds with a 95% t-interval; the last column pairs the two variants seed by seed.",
        "",
        f"| group | {labels[0]} vs baseline | {labels[1]} vs baseline | {labels[1]} minus {labels[0]} | p |",
        "| --- | --- | --- | --- | ---: |",
    ]
    for group, d in diff.items():
        lines.append(f"| {group} | {pct(a[group])} | {pct(b[group])} | {pct(d)} | {d['p_value']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="first experiment directory (the reference)")
    parser.add_argument("b", type=Path, help="second experiment directory (the change), same seeds and baselines")
    parser.add_argument("--labels", nargs=2, required=True, metavar=("A", "B"), help="names of the two variants")
    parser.add_argument("--variant", default="c2al", help="variant compared (eval/<variant>.json)")
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix (.md, .json, .png)")
    args = parser.parse_args(argv)
    labels = (args.labels[0], args.labels[1])
    ev_a, ev_b = load_variant(args.a, args.variant), load_variant(args.b, args.variant)
    check_same_baselines(ev_a, ev_b, (str(args.a), str(args.b)))
    results = {
        labels[0]: ev_a["groups"],
        labels[1]: ev_b["groups"],
        f"{labels[1]} minus {labels[0]}": paired_difference(ev_b["groups"], ev_a["groups"]),
    }
    command = "python scripts/compare_experiments.py " + " ".join(f'"{x}"' if " " in x else x for x in argv)
    from c2al_rec.runs.provenance import machine_summary

    sources = {labels[0]: provenance(args.a, args.variant), labels[1]: provenance(args.b, args.variant)}
    m = machine_summary()
    machine = f"{m['cpu']}, {m['cpus']} CPUs, Python {m['python']}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": command,
        "seeds": ev_a["seeds"],
        "experiments": sources,
        "machine": machine,
        "results": results,
    }
    atomic_write_json(args.out.with_suffix(".json"), record)
    atomic_write_text(args.out.with_suffix(".md"), markdown(labels, results, command, sources, machine))
    plot_forest(results, args.out.with_suffix(".png"), f"{ev_a['seeds']} seeds")
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
