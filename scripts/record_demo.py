"""Record `make demo`'s result in benchmarks/results/demo.json, then regenerate what is made from it.

    make demo && python scripts/record_demo.py [--run runs/demo]

Reads the demo's output directory: ``eval/eval.json`` (the C2AL model against the baseline on the
test split), ``cohorts.json`` and ``cohorts.axes.json`` (the discovered pair and the other axes'
best scores), ``eval/attention.json``, ``timings.json`` (seconds per stage, written by `pipeline`)
and the C2AL run's ``provenance.json`` (the commit that trained it). Adds the numeric fingerprint of
the current code (``benchmarks/demo_fingerprint.py``, under a minute), writes the record, then the
README's demo block and ``docs/demo_ne_diff.png`` (``python -m benchmarks.readme_tables --write``).
Record layout: ``{"commit", "wall_s", "groups": {"overall"|"head"|"tail": {"ne", "ne_diff", "ci95",
...}}, "cohorts", "attention", "stages_s", "command", "fingerprint"}``; paths are repo-relative.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout: the benchmarks package sits beside it

from benchmarks import demo_fingerprint, readme_tables  # noqa: E402
from c2al_rec.io import atomic_write_json  # noqa: E402

GROUP_KEYS = ("rows", "positive_rate", "ne", "bayes_ne", "ne_base", "ne_diff", "ci95", "ci_kind", "p_value", "reason")
FIRST_LAYER = "over_arch.dhen.layers.0.interactions.0"


def _read(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make demo` first (it writes {path.parent})")
    return json.loads(path.read_text())


def _lam(selection: dict[str, Any]) -> Any:
    """Sort key of a candidate name: its lambda (the C2AL candidate with the largest lambda is compared)."""
    return lambda name: selection["candidates"][name].get("lambda", 0.0)


def demo_record(run: Path) -> dict[str, Any]:
    """The record of a finished demo directory, without the fingerprint."""
    evaluation = _read(run / "eval" / "eval.json")
    spec = _read(run / "cohorts.json")
    axes = _read(run / "cohorts.axes.json") if (run / "cohorts.axes.json").is_file() else {}
    attention = _read(run / "eval" / "attention.json")
    timings = _read(run / "timings.json")
    selection = _read(run / "selection.json")
    # the commit that trained the exported model; attention compares the baseline with the C2AL candidate
    provenance = _read(run / selection["runs"][selection["chosen"]] / "provenance.json")
    c2al = selection["chosen"] if selection["chosen"] != "baseline" else max(selection["runs"], key=_lam(selection))
    chosen = spec["pairs"][0]
    others = [
        {"axis": name, "score": a["best_score"]}
        for name, a in axes.items()
        if name != spec["axis"] and a.get("best_score") is not None
    ]
    return {
        "commit": provenance.get("git_commit"),
        "command": "make demo && python scripts/record_demo.py"
        + ("" if _relative(run) == "runs/demo" else f" --run {_relative(run)}"),
        "config": "launch/configs/demo.toml",
        "wall_s": timings["wall_s"],
        "stages_s": timings["stages_s"],
        "split": evaluation.get("split"),
        "groups": {
            g: {k: evaluation["groups"][g][k] for k in GROUP_KEYS if k in evaluation["groups"][g]}
            for g in readme_tables.GROUPS
        },
        "cohorts": {
            "axis": spec["axis"],
            "head": spec["head"],
            "tail": spec["tail"],
            "metric": spec.get("selection", {}).get("metric"),
            "score": chosen.get("score"),
            "next_axes": sorted(others, key=lambda a: -a["score"]),
        },
        "selection": {
            "rule": selection["rule"],
            "chosen": selection["chosen"],
            "forced": selection.get("forced", False),
            "valid": {
                name: {g: {k: fig.get(k) for k in ("ne_diff", "ci95")} for g, fig in c["valid"].items()}
                for name, c in selection["candidates"].items()
            },
        },
        "attention": {
            "module": FIRST_LAYER,
            "c2al_run": c2al,
            **{
                key: {k: attention[name][FIRST_LAYER][k] for k in ("near_zero_fraction", "gini", "entropy_bits")}
                for key, name in (("baseline", "baseline"), ("c2al", c2al))
            },
        },
    }


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="the demo's output directory (default: runs/demo)")
    args = parser.parse_args(argv)
    record = demo_record(Path(args.run))
    print("running the demo's mini pipeline for the fingerprint (under a minute) ...", flush=True)
    record["fingerprint"] = demo_fingerprint.compute()
    atomic_write_json(demo_fingerprint.RECORD, record)
    print(f"recorded {_relative(demo_fingerprint.RECORD)}")
    return readme_tables.main(["--write"])


if __name__ == "__main__":
    sys.exit(main())
