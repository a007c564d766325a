"""Benchmarks at tiny sizes: each core function runs and returns the JSON contract (no timings checked)."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from benchmarks import common, data_loader, scaling, serving, serving_http, train_throughput
from benchmarks.common import tiny_model
from c2al_rec.config import SyntheticConfig
from c2al_rec.data.synthetic import generate_synthetic

TINY_MODEL = tiny_model()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "data"
    generate_synthetic(root, SyntheticConfig(rows=4000, num_sparse=10, max_table_size=500, seed=1))
    return root


def _check_contract(out: dict, name: str, ratio_names: set[str]) -> None:
    assert set(out) >= {"benchmark", "config", "results", "ratios"}
    assert out["benchmark"] == name
    assert ratio_names <= set(out["ratios"])
    json.loads(json.dumps(out))  # what --json writes must be JSON
    for key in ratio_names:
        value = out["ratios"][key]
        assert value is None or (math.isfinite(value) and value > 0), (key, value)


def test_train_throughput_contract(tiny_data: Path) -> None:
    opts = train_throughput.Options(
        data=str(tiny_data), batch_size=64, model=TINY_MODEL, warmup=1, steps_per_round=1, rounds=2,
        cost_repeats=2, eval_batches=2, two_procs=False, levers=False,
    )  # fmt: skip
    out = train_throughput.run(opts)
    names = {"trainer_vs_plain_pytorch", "trainer_vs_plain_fp32", "trainer_vs_plain_bf16", "c2al_vs_baseline",
             "c2al_vs_baseline_aux128", "c2al_vs_baseline_aux128_on_h", "lever_aux_projection",
             "aa_control", "two_procs_vs_one"}  # fmt: skip
    _check_contract(out, "train_throughput", names)
    q = out["ratios"]
    assert q["trainer_vs_plain_pytorch"] == min(q["trainer_vs_plain_fp32"], q["trainer_vs_plain_bf16"])
    assert q["trainer_vs_plain_fp32"] == q["trainer_vs_plain_fp32_1proc"]  # 2 processes not measured here
    assert q["two_procs_vs_one"] is None and q["trainer_vs_plain_fp32_2procs"] is None
    assert out["results"]["steps_per_case"] == 3
    assert set(out["results"]["rounds_samples_per_s"]) == {
        "trainer", "plain", "trainer_bf16", "plain_bf16", "c2al/trainer", "c2al/trainer_again", "c2al/trainer_c2al",
        "c2al/trainer_c2al_aux128", "c2al/trainer_c2al_aux128_on_h",
    }  # fmt: skip
    assert set(out["results"]["valid_ne"]) == {
        "trainer", "trainer_bf16", "trainer_c2al", "trainer_c2al_aux128", "trainer_c2al_aux128_on_h",
    }  # fmt: skip
    assert len(out["results"]["rounds_samples_per_s"]["c2al/trainer"]) == 4  # 2 repeats of 2 rounds, pooled
    assert len(out["results"]["c2al_repeat_ratios"]["c2al_vs_baseline"]) == 2
    extra = out["results"]["c2al_extra_flops"]  # what the aux heads add to a step's model FLOPs
    assert set(extra) == {"trainer_c2al", "trainer_c2al_aux128", "trainer_c2al_aux128_on_h"}
    assert 0 < extra["trainer_c2al_aux128"] < extra["trainer_c2al_aux128_on_h"] and extra["trainer_c2al"] > 0
    assert out["results"]["step_gflops"]["trainer_again"] == out["results"]["step_gflops"]["trainer"]
    assert all(math.isfinite(v) for v in out["results"]["valid_ne"].values())
    text = train_throughput._markdown(out, "python -m benchmarks.train_throughput")
    assert "trainer_vs_plain_pytorch" in text and "Machine:" in text


def test_median_interval_brackets_the_median() -> None:
    values = [0.9, 0.95, 0.97, 0.98, 1.0, 1.02, 1.05, 0.99, 0.96, 1.01]
    low, high = train_throughput.median_interval(values)
    assert low <= sorted(values)[4] <= high and min(values) <= low < high <= max(values)
    assert train_throughput.median_interval([1.0, 1.1]) is None  # too few to resample


def test_median_interval_over_repeats_carries_the_spread_between_builds() -> None:
    g = torch.Generator().manual_seed(0)
    # three builds of 40 rounds each, whose levels differ by more than the rounds within a build
    values = [level + 0.002 * float(torch.randn(1, generator=g)) for level in (0.97, 0.98, 0.99) for _ in range(40)]
    flat_low, flat_high = train_throughput.median_interval(values)
    low, high = train_throughput.median_interval(values, repeats=3)
    assert low < flat_low and high > flat_high  # wider: three builds are three samples of the build effect
    assert low <= statistics.median(values) <= high and 0.965 < low and high < 0.995


def test_train_throughput_needs_a_c2al_cost_repeat() -> None:
    with pytest.raises(ValueError, match="cost_repeats"):
        train_throughput.run(train_throughput.Options(cost_repeats=0))


def test_plain_baseline_runs_under_ddp_with_two_gloo_ranks(tiny_data: Path, tmp_path: Path) -> None:
    opts = train_throughput.Options(data=str(tiny_data), batch_size=32, model=TINY_MODEL)
    payload = {"opts": dataclasses.asdict(opts), "root": str(tiny_data), "bf16": False}
    rate = train_throughput.launched_rate("plain", payload, tmp_path, nproc=2, warmup=1, steps=2)
    assert math.isfinite(rate) and rate > 0


def test_serving_contract(tiny_data: Path) -> None:
    # pt2=False: the AOTInductor compile (tens of seconds) is tested once, in tests/test_export_pt2.py
    opts = serving.Options(data=str(tiny_data), model=TINY_MODEL, calls={1: 2, 7: 2}, warmup=1, pt2=False)
    out = serving.run(opts)
    _check_contract(out, "serving", {"torchscript_vs_eager_p50", "c2al_vs_baseline_export_p50", "int8_vs_fp32_size"})
    r = out["results"]
    # same seed -> the C2AL export and the baseline export compute the same primary probabilities
    assert r["ts_fp32_c2al_max_abs_diff_vs_eager"] < 1e-5 and r["ts_fp32_baseline_max_abs_diff_vs_eager"] < 1e-5
    assert r["fp32_embedding_bytes"] == r["embedding_rows"] * 8 * 4
    assert r["int8_embedding_bytes"] < r["fp32_embedding_bytes"]
    assert {f"{m}_b7_p99_ms" for m in serving.MODELS} <= set(r)
    assert "int8_vs_fp32_size" in serving._markdown(out, "python -m benchmarks.serving")


def test_data_loader_contract(tiny_data: Path) -> None:
    opts = dataclasses.replace(
        data_loader.Options(data=str(tiny_data), batch_size=256, repeats=1), train_warmup=1, train_steps=1
    )
    out = data_loader.run(opts)
    _check_contract(out, "data_loader", {"loader_vs_pyarrow", "loader_vs_train_step"})
    assert out["ratios"]["loader_vs_train_step"] is not None
    assert out["results"]["train_step_fp32_samples_per_s"] > 0


def test_dhen_step_contract_and_per_device_merge() -> None:
    from benchmarks import dhen_step

    opts = dhen_step.Options(
        device="cpu", num_tokens=8, model=dhen_step.QUICK["model"], batch_size=16, warmup=1, steps=1, threads=1,
        compile_backend="aot_eager",
    )  # fmt: skip
    out = dhen_step.run(opts)
    names = {f"cpu_{a}_vs_{b}" for a, b in dhen_step.RATIO_PAIRS}
    _check_contract(out, "dhen_step", names | {"cpu_fused_vs_reference", "cpu_compiled_fused_vs_compiled_reference"})
    assert set(out["results"]) == set(dhen_step.VARIANTS)
    assert all(r["device"] == "cpu" for r in out["results"].values())
    assert out["results"]["fused"]["fm_kernel"] == "cpu"
    # fp32: the fused op and the plain math give the same first loss
    losses = {r["first_loss"] for r in out["results"].values()}
    assert max(losses) - min(losses) < 1e-5, losses
    # a CPU run keeps a recorded GPU run's entries, and GPU ratios never measured are null
    gpu = {
        "devices": {"gpu": {"machine": "H100"}},
        "ratios": {"gpu_fused_vs_reference": 1.3, "cpu_fused_vs_reference": 9},
    }
    merged = common.merge_device(gpu, out, "python -m benchmarks.dhen_step --threads 1", dhen_step.ALWAYS)
    assert merged["ratios"]["gpu_fused_vs_reference"] == 1.3 and merged["devices"]["gpu"] == {"machine": "H100"}
    assert merged["ratios"]["cpu_fused_vs_reference"] == out["ratios"]["cpu_fused_vs_reference"]
    assert merged["devices"]["cpu"]["command"] == "python -m benchmarks.dhen_step --threads 1"
    fresh = common.merge_device(None, out, "cmd", dhen_step.ALWAYS)
    assert fresh["ratios"]["gpu_compiled_fused_vs_compiled_reference"] is None
    assert "Unmeasured" in dhen_step._markdown(fresh) and "cpu_fused_vs_reference" in dhen_step._markdown(fresh)


def test_a_launch_whose_rank_dies_is_launched_once_more_and_recorded(monkeypatch, tmp_path: Path) -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    calls = []

    def launched_rate(kind, payload, run_dir, nproc, warmup, steps):
        calls.append(run_dir)
        if len(calls) == 1:
            failure = ProcessFailure(local_rank=1, pid=123, exitcode=-6, error_file="")
            raise ChildFailedError("_rank_worker", {1: failure})
        return 42.0

    monkeypatch.setattr(train_throughput, "launched_rate", launched_rate)
    failures: list[str] = []
    opts = train_throughput.Options()
    rate = train_throughput._launched_with_retry("plain", dict, tmp_path / "a", 2, opts, "plain x2 round 0", failures)
    assert rate == 42.0 and calls == [tmp_path / "a", tmp_path / "a-retry"]
    assert failures == ["plain x2 round 0: rank 1 exited with -6 (SIGABRT)"]

    def always_fails(*args):
        raise ChildFailedError("_rank_worker", {1: ProcessFailure(local_rank=1, pid=1, exitcode=-6, error_file="")})

    monkeypatch.setattr(train_throughput, "launched_rate", always_fails)
    with pytest.raises(ChildFailedError):
        train_throughput._launched_with_retry("plain", dict, tmp_path / "b", 2, opts, "x", [])


def test_quick_modes_do_little_work() -> None:
    """``--quick`` is a smoke run (its help says so): its work stays small in steps, rows and rounds.
    The bound is on the work, not the wall time (a loaded machine makes any time flaky); at these sizes
    each finished within 90 s on the 2-core machine."""
    t = train_throughput.QUICK
    assert t["rows"] <= 50_000 and t["max_table_size"] <= 50_000 and t["batch_size"] <= 512
    assert t["warmup"] + t["rounds"] * t["steps_per_round"] <= 8 and t["cost_repeats"] == 1
    assert not t["levers"] and not t["two_procs"]  # no torch.compile, no process launches
    d = data_loader.QUICK
    assert d["rows"] <= 200_000 and d["repeats"] == 1 and d["train_steps"] * d["train_rounds"] <= 4
    s = serving.QUICK
    assert s["rows"] <= 20_000 and sum(s["calls"].values()) <= 100
    h = serving_http.QUICK
    assert h["rows"] <= 20_000 and h["seconds"] <= 5
    q = scaling.quick_options(scaling.Options())
    assert q.steps <= 3 and max(q.table_rows) <= 10_000 and not q.launch_single
    assert all(len(axis) <= 2 for axis in (q.features, q.dims, q.batch_sizes, q.procs, q.table_rows))
