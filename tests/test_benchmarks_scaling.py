"""benchmarks.scaling: --quick end to end into a temp dir (fresh processes per point), its bend finder and
curve lines, and that a point's peak RSS is its own."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from benchmarks import scaling
from benchmarks.common import RESULTS_DIR


def _results_state() -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in RESULTS_DIR.glob(f"{scaling.NAME}.*")}


def test_quick_run_writes_the_contract(tmp_path: Path) -> None:
    before = _results_state()
    json_path, png_path = tmp_path / "scaling.json", tmp_path / "scaling.png"
    assert scaling.main(["--quick", "--json", str(json_path), "--png", str(png_path)]) == 0
    assert _results_state() == before  # --quick never writes benchmarks/results/
    assert png_path.stat().st_size > 0

    out = json.loads(json_path.read_text())
    assert set(out) >= {"benchmark", "config", "results", "ratios"}
    assert out["benchmark"] == "scaling"
    assert out["config"]["threads"] == 1 and "machine" in out["config"]
    results = out["results"]
    assert set(results["curves"]) == set(scaling.AXES)
    for axis, entries in results["curves"].items():
        assert len(entries) == 2, axis  # --quick: 2 points per axis
        assert entries[0]["x"] < entries[1]["x"]
    for key, point in results["points"].items():
        assert "error" not in point, (key, point.get("error"))
        assert point["samples_per_s"] > 0 and math.isfinite(point["samples_per_s"]), key
        assert point["peak_rss_mib"] > 0, key
        if point["export"]:
            assert point["export_seconds"] > 0 and point["export_artifact_bytes"] > 0, key
    procs = [results["points"][e["key"]] for e in results["curves"]["procs"]]
    assert [p["world_size"] for p in procs] == [1, 2]
    assert len(procs[1]["rank_peak_rss_mib"]) == 2
    assert all(results["points"][e["key"]]["export"] for e in results["curves"]["table_rows"])
    for name, value in out["ratios"].items():
        assert value is not None and math.isfinite(value) and value > 0, name
    assert set(results["summary"]) == set(scaling.AXES) | {"export"}
    assert all(line for lines in results["summary"].values() for line in lines)


def test_find_bend() -> None:
    xs = [256, 512, 1024, 2048, 4096, 8192]
    rising_then_flat = [1000, 1400, 2000, 2000, 2010, 2000]
    bend = scaling.find_bend(xs, rising_then_flat, 0.3)
    assert bend["bend_x"] == 1024 and bend["before"] > 0.4 and abs(bend["after"]) < 0.05
    straight = [1000 * (x / 256) ** -1 for x in xs]  # a power law: one slope, no bend
    bend = scaling.find_bend(xs, straight, 0.3)
    assert bend["bend_x"] is None and math.isclose(bend["before"], -1.0)
    assert scaling.find_bend([1, 2], [5, 10], 0.3)["bend_x"] is None  # one segment never bends
    step_ms = [10 + 0.5 * x / 1000 for x in xs]  # a step: 10 ms fixed + 0.5 ms per 1,000 samples
    line = scaling.describe("batch", "samples/s", xs, rising_then_flat, 0.3, ("step", "ms", step_ms))
    assert "x2.00 from 256 to 8,192" in line and "bends at 1,024" in line
    assert "least squares: step 10 ms + 0.5 ms per 1,000 samples" in line


def test_a_points_peak_rss_is_its_own() -> None:
    """A point runs in a child of the benchmark's process: its peak must not be the parent's (Linux keeps
    ru_maxrss across fork + exec; VmHWM starts afresh)."""
    ballast = b"x" * (512 * scaling.MIB)  # written, so resident: the parent's peak is above 512 MiB
    code = "from benchmarks.scaling import peak_rss_mib; print(peak_rss_mib())"
    proc = subprocess.run([sys.executable, "-c", code], cwd=scaling.ROOT, capture_output=True, text=True, check=True)
    assert scaling.peak_rss_mib() > 512 and float(proc.stdout) < 128, (len(ballast), proc.stdout)
