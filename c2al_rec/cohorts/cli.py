"""Discover contrasting cohorts: run the baseline over the data, rank cohort pairs per axis, write the spec.

    c2al-rec discover --checkpoint runs/baseline --data DATA [--split valid] \
        --axes user_value:quantiles=0.05,0.25,0.5,0.75,0.95 age_bucket:categorical --out cohorts.json

Writes the spec of the most disparate eligible (head, tail) pair over all axes to --out (DESIGN.md
"Cohort spec"), every axis' spec and ranked pairs to <out>.axes.json, and a PNG of the head vs tail
prediction densities. Loads a DCP checkpoint: only your own (its metadata is pickled).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="baseline run directory or step_<N> directory")
    parser.add_argument("--which", default="latest", choices=["latest", "best"], help="checkpoint of a run directory")
    parser.add_argument("--data", required=True, help="dataset root (schema.json + splits)")
    parser.add_argument("--split", default="valid", help="split to score (default: valid)")
    parser.add_argument(
        "--axes", nargs="+", required=True, help="axis specs: name:quantiles=q1,q2,... | name:categorical"
    )
    parser.add_argument("--out", required=True, help="cohort spec JSON to write")
    parser.add_argument("--metric", default="js", choices=["js", "kl", "cosine", "wasserstein"], help="ranking metric")
    parser.add_argument("--min-rows", type=int, default=1000, help="minimum rows in each cohort of the pair")
    parser.add_argument("--min-positives", type=int, default=50, help="minimum positives in each cohort of the pair")
    parser.add_argument("--rare-share", type=float, default=0.01, help="categorical values under this share -> 'other'")
    parser.add_argument("--batch-size", type=int, default=4096, help="scoring batch size")


def run(args: argparse.Namespace) -> int:
    from c2al_rec.analysis.plots import plot_prediction_densities
    from c2al_rec.analysis.scoring import score_checkpoint
    from c2al_rec.data.schema import load_schema
    from c2al_rec.distributed.unsharded import load_unsharded
    from c2al_rec.io import atomic_write_json

    from .discovery import discover_axis, parse_axis_spec

    axes = [parse_axis_spec(a) for a in args.axes]
    schema = load_schema(args.data)
    known = {a.name: a for a in schema.axes}
    for axis in axes:
        if axis.name not in known:
            raise ValueError(f"--axes: '{axis.name}' is not an axis of {args.data} (schema.json axes: {sorted(known)})")
    loaded = load_unsharded(args.checkpoint, args.which, schema=schema)
    table = score_checkpoint(loaded, args.data, args.split, args.batch_size)
    probs = table.column("prob").to_numpy().astype(np.float64)
    labels = table.column("label").to_numpy()
    results = {}
    for axis in axes:
        results[axis.name] = discover_axis(
            axis,
            table.column(axis.name).combine_chunks(),
            probs,
            labels,
            min_rows=args.min_rows,
            min_positives=args.min_positives,
            metric=args.metric,
            rare_share=args.rare_share,
        )
    ranked = sorted(results.items(), key=lambda kv: kv[1].best_score, reverse=True)
    _print_table(ranked, known, args.metric)
    chosen = [(name, r) for name, r in ranked if r.spec is not None]
    if not chosen:
        reasons = "; ".join(f"{name}: {r.reason}" for name, r in ranked)
        raise ValueError(f"no axis has an eligible cohort pair ({reasons})")
    source = {"checkpoint": str(loaded.path), "data": str(Path(args.data).resolve()), "split": args.split}
    for _, r in chosen:
        r.spec.source = source
    best_name, best = chosen[0]
    out = Path(args.out)
    best.spec.save(out)
    atomic_write_json(
        out.with_suffix(".axes.json"),
        {
            name: {
                "spec": r.spec.to_json() if r.spec else None,
                "best_score": r.best_score if r.spec else None,
                "reason": r.reason,
                "sensitive": known[name].sensitive,
                "pairs": r.pairs,
            }
            for name, r in ranked
        },
    )
    idx = best.spec.assign(table.column(best_name).combine_chunks())
    png = plot_prediction_densities(
        probs[idx == best.spec.head_index],
        probs[idx == best.spec.tail_index],
        out.with_name(out.stem + "_densities.png"),
        f"{best_name}: head {best.spec.head} vs tail {best.spec.tail} ({args.split})",
    )
    print(
        f"wrote {out} (axis {best_name}: head {best.spec.head}, tail {best.spec.tail}), "
        f"{out.with_suffix('.axes.json')}, {png}"
    )
    return 0


def _print_table(ranked, known, metric: str) -> None:  # type: ignore[no-untyped-def]
    print(f"axes ranked by their best eligible pair ({metric}):")
    for name, r in ranked:
        flag = "  [sensitive]" if known[name].sensitive else ""
        if r.spec is None:
            print(f"  {name}{flag}: no eligible pair ({r.reason})")
            continue
        print(f"  {name}{flag}: head {r.spec.head} / tail {r.spec.tail}, score {r.best_score:.4f}")
        for p in r.pairs[:5]:
            mark = "" if p["eligible"] else f"  (ineligible: {p['ineligible_because']})"
            print(
                f"      {p['a']:>10} vs {p['b']:<10} js {p.get('js', float('nan')):.4f} "
                f"kl {p.get('kl_ab', float('nan')) + p.get('kl_ba', float('nan')):.4f} "
                f"1-cos {1 - p.get('cosine', float('nan')):.4f} w1 {p.get('wasserstein', float('nan')):.5f} "
                f"rows {p['rows_a']}/{p['rows_b']} plr {p['plr_a'] or 0:.4f}/{p['plr_b'] or 0:.4f}{mark}"
            )
