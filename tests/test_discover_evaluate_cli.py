"""Tier 4: `c2al-rec discover` and `c2al-rec evaluate` end to end on the shared smoke runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchrec.metrics.metrics_config import RecComputeMode, RecTaskInfo
from torchrec.metrics.ne import NEMetric

from c2al_rec.cli.main import main
from c2al_rec.cohorts.spec_file import load_cohort_spec


@pytest.fixture(scope="module")
def discovered(smoke_runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("discover") / "cohorts.json"
    rc = main(
        [
            "discover",
            "--checkpoint",
            str(smoke_runs.baseline),
            "--data",
            str(smoke_runs.data),
            "--axes",
            "user_value:quantiles=0.05,0.5,0.95",
            "age_bucket:categorical",
            "surface:categorical",
            "--min-rows",
            "50",
            "--min-positives",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    return out


def test_discover_writes_contract_spec_all_axes_and_plot(discovered: Path, smoke_runs) -> None:
    spec = load_cohort_spec(discovered)
    raw = json.loads(discovered.read_text())
    assert raw["version"] == 1 and raw["source"]["split"] == "valid" and raw["selection"]["metric"] == "js"
    assert raw["head"] != raw["tail"] and len(raw["pairs"]) >= 1
    pair = raw["pairs"][0]
    for key in ("a", "b", "kl_ab", "kl_ba", "js", "cosine", "wasserstein", "rows_a", "rows_b", "plr_a", "plr_b"):
        assert key in pair
    # head is the cohort of the chosen pair with the higher positive rate
    chosen = next(p for p in raw["pairs"] if {p["a"], p["b"]} == {spec.head, spec.tail})
    rate = {chosen["a"]: chosen["plr_a"], chosen["b"]: chosen["plr_b"]}
    assert rate[spec.head] >= rate[spec.tail]
    axes = json.loads(discovered.with_suffix(".axes.json").read_text())
    assert set(axes) == {"user_value", "age_bucket", "surface"}
    png = discovered.with_name("cohorts_densities.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_discover_errors(smoke_runs, tmp_path: Path, capsys) -> None:
    args = [
        "discover",
        "--checkpoint",
        str(smoke_runs.baseline),
        "--data",
        str(smoke_runs.data),
        "--out",
        str(tmp_path / "c.json"),
    ]
    assert main(args + ["--axes", "nope:categorical"]) == 2
    assert "'nope' is not an axis" in capsys.readouterr().err
    assert main(args + ["--axes", "user_value:quantiles=0.05,0.95", "--min-rows", "100000"]) == 2
    assert "min_rows=100000" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_evaluate_checkpoint_vs_baseline_and_torchrec_ne(discovered: Path, smoke_runs, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(smoke_runs.c2al),
            "--baseline",
            str(smoke_runs.baseline),
            "--data",
            str(smoke_runs.data),
            "--cohorts",
            str(discovered),
            "--out",
            str(out),
            "--resamples",
            "200",
        ]
    )
    assert rc == 0
    result = json.loads((out / "eval.json").read_text())
    spec = load_cohort_spec(discovered)
    groups = result["groups"]
    assert {"overall", "head", "tail"} <= set(groups)
    assert {f"segment:{c}" for c in spec.names} <= set(groups)
    o = groups["overall"]
    for key in (
        "rows",
        "positive_rate",
        "ne",
        "calibration",
        "auc",
        "ne_base",
        "ne_diff",
        "ci95",
        "ci_kind",
        "p_value",
        "bayes_ne",
    ):
        assert key in o, key
    assert o["ci_kind"] == "rows" and o["ci95"][0] <= o["ne_diff"] <= o["ci95"][1]
    assert (out / "eval.md").read_text().count("|") > 20 and (out / "ne_diff.png").is_file()

    # NE agrees with torchrec's NEMetric on the same predictions (scored by the same checkpoint)
    from c2al_rec.runs.load import load_run
    from c2al_rec.runs.scoring import score_split

    table = score_split(load_run(smoke_runs.c2al), smoke_runs.data, "test", progress=False)
    probs, labels = table.column("prob").to_numpy(), table.column("label").to_numpy().astype(np.float64)
    task = RecTaskInfo(name="t", label_name="l", prediction_name="p", weight_name="w")
    metric = NEMetric(
        world_size=1,
        my_rank=0,
        batch_size=len(probs),
        tasks=[task],
        window_size=len(probs),
        compute_mode=RecComputeMode.UNFUSED_TASKS_COMPUTATION,
    )
    metric.update(
        predictions={"t": torch.tensor(probs, dtype=torch.float64)},
        labels={"t": torch.tensor(labels)},
        weights={"t": torch.ones(len(probs), dtype=torch.float64)},
    )
    assert o["ne"] == pytest.approx(float(metric.compute()["ne-t|lifetime_ne"]), rel=1e-5)


def test_evaluate_from_predictions_files(discovered: Path, smoke_runs, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from c2al_rec.runs.load import load_run
    from c2al_rec.runs.scoring import score_split

    for name in ("c2al", "baseline"):
        table = score_split(load_run(getattr(smoke_runs, name)), smoke_runs.data, "test", progress=False)
        pq.write_table(table, tmp_path / f"{name}.parquet")
    rc = main(
        [
            "evaluate",
            "--predictions",
            str(tmp_path / "c2al.parquet"),
            "--baseline-predictions",
            str(tmp_path / "baseline.parquet"),
            "--cohorts",
            str(discovered),
            "--out",
            str(tmp_path / "e"),
            "--resamples",
            "100",
        ]
    )
    assert rc == 0
    assert "ne_diff" in json.loads((tmp_path / "e" / "eval.json").read_text())["groups"]["overall"]
