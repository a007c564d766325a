"""Tier 1: the fm_kernel benchmark runs (quick mode) and writes its JSON contract."""

import json

from benchmarks import fm_kernel


def test_quick_benchmark_writes_json(tmp_path):
    out = tmp_path / "fm.json"
    fm_kernel.main(["--quick", "--json", str(out)])
    data = json.loads(out.read_text())
    assert set(data) == {"benchmark", "config", "results", "ratios"}
    assert data["benchmark"] == "fm_kernel" and data["results"]["cpu"]["kernel"] == "cpu"
    assert {"cpu_fwd_speedup", "cpu_fwdbwd_speedup", "cpu_saved_memory_ratio"} <= set(data["ratios"])
    # Eager saves X, Y and T; the op saves X and Y: (nd + nk) / (nd + nk + dk) at (32, 64, 16).
    assert abs(data["ratios"]["cpu_saved_memory_ratio"] - (2048 + 512) / (2048 + 512 + 1024)) < 1e-9
    assert data["results"]["cpu"]["fused_max_rel_err_vs_f64"] < 1e-5
