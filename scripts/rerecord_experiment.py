"""Redraw an experiment's forest plot, rewrite its report.md from its summary.json and record it again
(no training, no scoring).

    python scripts/rerecord_experiment.py runs/exp_synthetic synthetic [benchmarks/results]

For a finished experiment whose report or record format changed after it ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from c2al_rec.workflows.experiment import record_results, write_report


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    out, name = Path(argv[0]), argv[1]
    dest = Path(argv[2]) if len(argv) == 3 else Path("benchmarks/results")
    summary = json.loads((out / "summary.json").read_text())
    write_report(out, summary, summary.get("run_wall_s", {}))
    for path in record_results(out, dest, name):
        print(f"recorded {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
