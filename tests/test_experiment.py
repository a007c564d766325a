"""The multi-seed experiment: the paired design (identical shared initial parameters per seed), the
paired C2AL-minus-control arithmetic, and a 2-seed run end to end.

Tiers: 1 (pure arithmetic), 2 (trainer build on 1 gloo rank), 4 (`c2al-rec experiment` on tiny data).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from c2al_rec.config import load_config
from c2al_rec.workflows.experiment import paired_difference, summarize_attention
from c2al_rec.workflows.run_pool import RunJob, RunPool
from c2al_rec.workflows.selection import candidate_list, choose

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "launch" / "configs" / "smoke.toml"
SPEC = REPO / "launch" / "cohorts" / "user_value_p5_p95.json"


def test_c2al_minus_random_is_a_paired_t_interval_over_seeds() -> None:
    c2al = {"head": {"ne_diff_seeds": [-0.006, -0.007, -0.005, -0.008], "ne_seeds": [0.9, 0.91, 0.92, 0.93]}}
    rand = {"head": {"ne_diff_seeds": [-0.001, 0.0, -0.002, 0.001], "ne_seeds": [0.95] * 4}}
    got = paired_difference(c2al, rand)["head"]
    d = np.array(c2al["head"]["ne_diff_seeds"]) - np.array(rand["head"]["ne_diff_seeds"])
    lo, hi = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
    assert got["ne_diff_seeds"] == pytest.approx(d.tolist())
    assert got["ne_diff"] == pytest.approx(d.mean()) and got["ci95"] == pytest.approx([lo, hi])
    assert got["ci_kind"] == "seeds" and got["ne_seeds"] == c2al["head"]["ne_seeds"]


def test_attention_summary_means_and_paired_difference() -> None:
    def stats(nz: float) -> dict:
        return {"fm0": {"near_zero_fraction": nz, "gini": 0.5, "entropy_bits": 5.0, "kurtosis": 1.0}}

    per_seed = {"baseline": [stats(0.07), stats(0.06), stats(0.08)], "c2al": [stats(0.05), stats(0.05), stats(0.06)]}
    out = summarize_attention(per_seed)
    assert out["baseline"]["fm0"]["near_zero_fraction"]["mean"] == pytest.approx(0.07)
    diff = out["c2al_minus_baseline"]["fm0"]["near_zero_fraction"]
    assert diff["seeds"] == pytest.approx([-0.02, -0.01, -0.02]) and diff["ci95"][1] < 0


def _build_trainer_params(tmp_path: Path, name: str, overrides: list[str]) -> dict:
    """Build (not train) a Trainer on 1 gloo rank; its model parameters right after initialisation."""
    from c2al_rec.config import load_config
    from c2al_rec.distributed.backend import destroy_distributed, free_port, init_distributed
    from c2al_rec.train.launch import preflight
    from c2al_rec.train.trainer import Trainer

    cfg = preflight(load_config(SMOKE, [f"--data.path={tmp_path / 'data'}", f"--cohorts.spec={SPEC}", *overrides]))
    env = {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        ctx = init_distributed()
        try:
            trainer = Trainer(cfg, tmp_path / name, ctx)
            trainer.build()
            state = {k: v.detach().clone() for k, v in trainer.task.model.state_dict().items() if hasattr(v, "detach")}
        finally:
            destroy_distributed()
    return state


def test_baseline_and_c2al_of_a_seed_start_from_identical_shared_parameters(tmp_path: Path) -> None:
    base = _build_trainer_params(tmp_path, "base", ["--cohorts.enabled=false", "--train.seed=3"])
    c2al = _build_trainer_params(tmp_path, "c2al", ["--cohorts.enabled=true", "--train.seed=3"])
    other = _build_trainer_params(tmp_path, "other", ["--cohorts.enabled=false", "--train.seed=4"])
    shared = sorted(base)
    assert shared and set(shared) <= set(c2al)
    assert any("aux_heads" in k for k in c2al) and not any("aux_heads" in k for k in base)
    assert any("embedding" in k for k in shared)  # the sharded tables are compared too
    for k in shared:
        assert torch_equal(base[k], c2al[k]), f"{k} differs between baseline and C2AL of the same seed"
    assert not all(torch_equal(base[k], other[k]) for k in shared)  # another seed starts elsewhere


def torch_equal(a, b) -> bool:  # type: ignore[no-untyped-def]
    import torch

    if hasattr(a, "local_shards"):  # ShardedTensor: compare this rank's shards
        return all(torch.equal(x.tensor, y.tensor) for x, y in zip(a.local_shards(), b.local_shards()))
    return torch.equal(a, b)


def test_experiment_end_to_end_two_seeds(tmp_path: Path, capsys) -> None:
    from c2al_rec.cli.main import main

    out = tmp_path / "exp"
    args = [
        "experiment",
        "--config",
        str(REPO / "launch/configs/demo.toml"),
        "--seeds",
        "2",
        "--out",
        str(out),
        "--record",
        str(tmp_path / "results"),
        "--record-name",
        "tiny",
        f"--data.path={tmp_path / 'data'}",
        "--data.synthetic.rows=20000",
        "--data.synthetic.max_table_size=1000",
        "--data.batch_size=256",
        "--data.shuffle_buffer=2048",
        "--model.embedding_dim=8",
        "--model.fm.mlp=[16]",
        "--model.primary_head=[16]",
        "--train.max_steps=8",
        "--train.warmup_steps=2",
        "--train.log_every=0",
        "--checkpoint.every_steps=0",
        "--discover.min_rows=50",
        "--discover.min_positives=5",
        "--pipeline.nproc_per_node=1",
        "--pipeline.resamples=50",
        "--select.candidates=[0, 0.1, 0.3]",
    ]
    assert main([*args, "--pipeline.concurrent_runs=2"]) == 0
    summary = json.loads((tmp_path / "results" / "experiment_tiny.json").read_text())
    results = summary["results"]
    assert {"c2al", "random", "noeffect", "lambda_0.1", "lambda_0.3", "selected", "c2al_minus_random"} <= set(results)
    for variant in ("c2al", "random", "noeffect", "selected", "c2al_minus_random"):
        for group in ("overall", "head", "tail"):
            g = results[variant][group]
            assert g["ci_kind"] == "seeds" and len(g["ne_diff_seeds"]) == 2 and len(g["ci95"]) == 2
            assert g["ci95"][0] <= g["ne_diff"] <= g["ci95"][1]
    # lambda 0.1 is the configured lambda: evaluated on the c2al runs, not trained again
    assert results["lambda_0.1"]["overall"]["ne_diff_seeds"] == results["c2al"]["overall"]["ne_diff_seeds"]
    assert not (out / "lambda_0.1").exists() and (out / "lambda_0.3" / "seed_1" / "metrics.json").is_file()
    assert summary["power"]["c2al"]["overall"]["seeds"] == 2 and summary["command"].startswith("c2al-rec experiment")
    assert summary["wall_time_s"] > 0 and summary["spec"]["source"]["split"] == "valid"
    assert summary["attention"]["c2al_minus_baseline"]
    # selection: per seed the rule chose on valid figures only, and `selected` is that run's test result
    sel = summary["selection"]
    assert len(sel["chosen"]) == 2 and sum(sel["counts"].values()) == 2 and sel["split"] == "valid"
    assert set(sel["counts"]) == {"baseline", "lambda_0.1", "lambda_0.3"}
    for s, record in enumerate(sel["per_seed"]):
        valid = {name: c["valid"] for name, c in record["candidates"].items()}
        assert (
            choose(valid, candidate_list(load_config(out / "experiment.toml")), "overall")["chosen"] == record["chosen"]
        )
        for group in ("overall", "head", "tail"):
            want = 0.0 if record["chosen"] == "baseline" else results[record["chosen"]][group]["ne_diff_seeds"][s]
            assert results["selected"][group]["ne_diff_seeds"][s] == pytest.approx(want, abs=1e-12)
        base_valid = record["candidates"]["baseline"]["valid"]["overall"]
        assert base_valid["ne_diff"] == 0.0 and base_valid["ne"] != results["c2al"]["overall"]["ne_seeds"][s]
    timing = summary["timing"]
    assert 0 < timing["training_done_s"] <= timing["wall_s"] and timing["runs_trained_here"] == timing["runs"]
    assert (out / "scores" / "lambda_0.3" / "seed_1" / "valid.parquet").is_file()
    assert not (out / "scores" / "random" / "seed_1" / "valid.parquet").exists()  # not a candidate: test only
    for f in ("experiment_tiny.md", "experiment_tiny_forest.png", "experiment_tiny_attention.png"):
        assert (tmp_path / "results" / f).is_file()
    md = (tmp_path / "results" / "experiment_tiny.md").read_text()
    assert "Machine: " in md and "wall time of the experiment" in md and "trained at commit" in md
    assert summary["machine"]["cpus"] >= 1 and summary["trained_at_commit"]
    # runs trained two at a time in child processes train exactly as in the foreground
    again = tmp_path / "again"
    cfg = load_config(out / "c2al" / "seed_1" / "config.toml")
    RunPool(nproc_per_node=1, concurrent_runs=1, log_dir=tmp_path).run([RunJob("again", again, cfg)])
    here, there = (json.loads((d / "metrics.json").read_text()) for d in (again, out / "c2al" / "seed_1"))
    assert here["primary"] == pytest.approx(there["primary"], rel=1e-6)
    assert [here["aux"][h]["ne"] for h in ("head", "tail")] == pytest.approx(
        [there["aux"][h]["ne"] for h in ("head", "tail")], rel=1e-6
    )
    assert (out / "logs" / "c2al_seed_1.log").is_file()
    # resumable: a second call trains nothing
    capsys.readouterr()
    assert main(args) == 0
    assert "training" not in capsys.readouterr().out


def test_run_pool_skips_done_runs_and_names_the_failed_one(tmp_path: Path, capsys) -> None:
    cfg = load_config(SMOKE, [f"--data.path={tmp_path / 'missing'}", "--data.synthetic.rows=0"])
    done = tmp_path / "done"
    done.mkdir()
    (done / "metrics.json").write_text("{}")
    jobs = [RunJob("done", done, cfg), RunJob("bad/seed_0", tmp_path / "bad", cfg)]
    # a user error in the child (here: no data) stays a one-line user error, naming the run and its log
    failed = r"training bad/seed_0 failed: .*schema.json does not exist.*bad_seed_0\.log"
    with pytest.raises(ValueError, match=failed) as info:
        RunPool(nproc_per_node=1, concurrent_runs=2, log_dir=tmp_path / "logs").run(jobs)
    assert "data" in str(info.value.__cause__)  # the child's own error travels with it
    assert "done: done, skipped" in capsys.readouterr().out
    assert not (tmp_path / "bad" / "metrics.json").exists()
