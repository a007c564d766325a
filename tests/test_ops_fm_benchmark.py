"""Tier 1: the fm_kernel benchmark runs (quick mode), writes its JSON contract, and merges per device."""

import json

from benchmarks import common, fm_kernel


def test_quick_benchmark_writes_json(tmp_path):
    out = tmp_path / "fm.json"
    fm_kernel.main(["--quick", "--device", "cpu", "--json", str(out)])
    data = json.loads(out.read_text())
    assert set(data) == {"benchmark", "device", "config", "results", "ratios_per_run", "load_average_1min", "ratios"}
    assert data["benchmark"] == "fm_kernel" and data["device"] == "cpu" and data["results"]["cpu"]["kernel"] == "cpu"
    assert len(data["ratios_per_run"]) == 1 and len(data["load_average_1min"]) == 2
    assert data["results"]["cpu"]["threads"] == 2 and data["results"]["cpu_t1"]["threads"] == 1
    assert {"cpu_fwd_speedup", "cpu_fwdbwd_speedup", "cpu_saved_memory_ratio"} <= set(data["ratios"])
    assert {"cpu_fwdbwd_speedup_t1", "cpu_fwdbwd_speedup_t2"} <= set(data["ratios"])
    # Eager saves X, Y and T; the op saves X and Y: (nd + nk) / (nd + nk + dk) at (32, 64, 16).
    assert abs(data["ratios"]["cpu_saved_memory_ratio"] - (2048 + 512) / (2048 + 512 + 1024)) < 1e-9
    assert data["results"]["cpu"]["fused_max_rel_err_vs_f64"] < 1e-5


def test_a_run_replaces_only_its_own_device_entries():
    cpu_run = {
        "benchmark": "fm_kernel", "device": "cpu", "config": {"cpu_shape": [1, 2, 3, 4]},
        "results": {"cpu": {"kernel": "cpu"}}, "ratios_per_run": [{"cpu_fwdbwd_speedup": 1.4}],
        "ratios": {"cpu_fwdbwd_speedup": 1.4, "cpu_fwdbwd_speedup_t1": 1.5},
    }  # fmt: skip
    cpu_file = common.merge_device(None, cpu_run, "python -m benchmarks.fm_kernel --device cpu", fm_kernel.ALWAYS)
    assert cpu_file["ratios"]["gpu_fwdbwd_speedup"] is None and cpu_file["ratios"]["cpu_fwdbwd_speedup"] == 1.4
    gpu_run = {
        "benchmark": "fm_kernel", "device": "gpu", "config": {"gpu_shape": [5]},
        "results": {"gpu": {"kernel": "triton"}}, "ratios": {"gpu_fwd_speedup": 2.0},
    }  # fmt: skip
    merged = common.merge_device(cpu_file, gpu_run, "python -m benchmarks.fm_kernel", fm_kernel.ALWAYS)
    assert merged["ratios"]["cpu_fwdbwd_speedup"] == 1.4 and merged["ratios"]["cpu_fwdbwd_speedup_t1"] == 1.5
    assert merged["ratios"]["gpu_fwd_speedup"] == 2.0 and merged["ratios"]["gpu_fwdbwd_speedup"] is None
    cpu, gpu = merged["devices"]["cpu"], merged["devices"]["gpu"]
    assert cpu["results"] == {"cpu": {"kernel": "cpu"}} and gpu["results"] == {"gpu": {"kernel": "triton"}}
    assert cpu["ratios_per_run"] == [{"cpu_fwdbwd_speedup": 1.4}] and cpu["config"] == {"cpu_shape": [1, 2, 3, 4]}
    assert gpu["command"] == "python -m benchmarks.fm_kernel" and gpu["config"] == {"gpu_shape": [5]}
    cpu_again = {**cpu_run, "config": {"c": 1}, "results": {"cpu": {}}, "ratios": {"cpu_fwdbwd_speedup": 1.3}}
    again = common.merge_device(merged, cpu_again, "python -m benchmarks.fm_kernel --device cpu", fm_kernel.ALWAYS)
    assert again["ratios"]["gpu_fwd_speedup"] == 2.0 and again["ratios"]["cpu_fwdbwd_speedup"] == 1.3
    assert "cpu_fwdbwd_speedup_t1" not in again["ratios"] and again["devices"]["gpu"] == gpu
    assert again["devices"]["cpu"]["config"] == {"c": 1} and list(again["ratios"]) == sorted(again["ratios"])


def test_the_committed_record_renders_as_committed():
    record = json.loads((common.RESULTS_DIR / "fm_kernel.json").read_text())
    assert fm_kernel.markdown(record) == (common.RESULTS_DIR / "fm_kernel.md").read_text()
