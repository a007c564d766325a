"""Tier 1: the fm_kernel benchmark runs (quick mode), writes its JSON contract, and merges per device."""

import json

from benchmarks import fm_kernel


def test_quick_benchmark_writes_json(tmp_path):
    out = tmp_path / "fm.json"
    fm_kernel.main(["--quick", "--device", "cpu", "--json", str(out)])
    data = json.loads(out.read_text())
    assert set(data) == {"benchmark", "config", "results", "ratios"}
    assert data["benchmark"] == "fm_kernel" and data["results"]["cpu"]["kernel"] == "cpu"
    assert data["results"]["cpu"]["threads"] == 2 and data["results"]["cpu_t1"]["threads"] == 1
    assert {"cpu_fwd_speedup", "cpu_fwdbwd_speedup", "cpu_saved_memory_ratio"} <= set(data["ratios"])
    assert {"cpu_fwdbwd_speedup_t1", "cpu_fwdbwd_speedup_t2"} <= set(data["ratios"])
    # Eager saves X, Y and T; the op saves X and Y: (nd + nk) / (nd + nk + dk) at (32, 64, 16).
    assert abs(data["ratios"]["cpu_saved_memory_ratio"] - (2048 + 512) / (2048 + 512 + 1024)) < 1e-9
    assert data["results"]["cpu"]["fused_max_rel_err_vs_f64"] < 1e-5


def test_a_run_replaces_only_its_own_device_entries():
    cpu_file = {
        "benchmark": "fm_kernel",
        "config": {"cpu": {"cpu_shape": [1, 2, 3, 4]}},
        "commands": {"cpu": "python -m benchmarks.fm_kernel --device cpu"},
        "results": {"cpu": {"kernel": "cpu"}, "cpu_ratios_per_run": [{"cpu_fwdbwd_speedup": 1.4}]},
        "ratios": {"cpu_fwdbwd_speedup": 1.4, "cpu_fwdbwd_speedup_t1": 1.5},
    }
    gpu_run = {
        "config": {"gpu_shape": [5]},
        "results": {"gpu": {"kernel": "triton"}},
        "ratios": {"gpu_fwd_speedup": 2.0},
    }
    merged = fm_kernel.merge(cpu_file, gpu_run, "python -m benchmarks.fm_kernel")
    assert merged["ratios"]["cpu_fwdbwd_speedup"] == 1.4 and merged["ratios"]["cpu_fwdbwd_speedup_t1"] == 1.5
    assert merged["ratios"]["gpu_fwd_speedup"] == 2.0 and merged["ratios"]["gpu_fwdbwd_speedup"] is None
    assert merged["results"]["cpu"] == {"kernel": "cpu"} and merged["results"]["gpu"] == {"kernel": "triton"}
    assert merged["results"]["cpu_ratios_per_run"] == [{"cpu_fwdbwd_speedup": 1.4}]
    assert merged["config"] == {"cpu": {"cpu_shape": [1, 2, 3, 4]}, "gpu": {"gpu_shape": [5]}}
    assert merged["commands"]["gpu"] == "python -m benchmarks.fm_kernel" and "cpu" in merged["commands"]
    cpu_run = {
        "config": {"c": 1},
        "results": {"cpu": {"kernel": "cpu", "new": True}},
        "ratios": {"cpu_fwdbwd_speedup": 1.3},
    }
    again = fm_kernel.merge(merged, cpu_run, "python -m benchmarks.fm_kernel --device cpu")
    assert again["ratios"]["gpu_fwd_speedup"] == 2.0 and again["ratios"]["cpu_fwdbwd_speedup"] == 1.3
    assert "cpu_fwdbwd_speedup_t1" not in again["ratios"] and again["results"]["gpu"] == {"kernel": "triton"}
    assert "cpu_ratios_per_run" not in again["results"] and again["config"]["cpu"] == {"c": 1}
    fresh = fm_kernel.merge(None, gpu_run, "cmd")  # the first record of a device
    assert fresh["commands"] == {"gpu": "cmd"} and fresh["ratios"]["gpu_fwdbwd_speedup"] is None
