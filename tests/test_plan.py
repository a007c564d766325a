"""Tier 1 (CPU, one process): ``python -m benchmarks.plan`` plans the production config for a CUDA cluster.

No GPU and no process group: torchrec's planner runs on the meta-device model. 16 GPUs (2 hosts) with
the committed production schema keeps it to seconds.
"""

import json
from pathlib import Path

from benchmarks import plan as plan_benchmark
from c2al_rec.config import load_config
from c2al_rec.data.schema import schema_from_dict

CONFIG = "launch/configs/production.toml"
SCHEMA = Path("launch/configs/production_schema.json")


def test_production_schema_loads() -> None:
    schema = schema_from_dict(json.loads(SCHEMA.read_text()), SCHEMA.parent)
    rows = [f.num_embeddings for f in schema.sparse]
    assert len(schema.sparse) == 26 and len(schema.dense) == 13
    assert min(rows) <= 1_000 and max(rows) >= 10_000_000
    assert any(f.multi_hot for f in schema.sparse)
    assert {a.name for a in schema.axes} >= {"user_value", "surface"}
    # the config's cohort spec is a real file (the trainer opens it relative to the repository root)
    assert Path(load_config(CONFIG).cohorts.spec).is_file()


def test_plan_16_gpus(tmp_path: Path) -> None:
    json_path, md_path = tmp_path / "plan.json", tmp_path / "plan.md"
    argv = ["--config", CONFIG, "--world-size", "16", "--json", str(json_path), "--md", str(md_path)]
    assert plan_benchmark.main(argv) == 0
    out = json.loads(json_path.read_text())

    schema = schema_from_dict(json.loads(SCHEMA.read_text()), SCHEMA.parent)
    assert out["config"]["schema_path"] == str(SCHEMA)  # data.path does not exist here
    tables = {t["table"]: t for t in out["tables"]}
    assert set(tables) == {f"t_{f.name}" for f in schema.sparse}
    allowed = set(out["config"]["sharding_types_allowed"])
    for f in schema.sparse:
        t = tables[f"t_{f.name}"]
        assert t["sharding_type"] in allowed and t["compute_kernel"] == "fused"
        assert t["ranks"] and all(0 <= r < 16 for r in t["ranks"])
        # the shards tile the table exactly
        assert sum(s["size"][0] * s["size"][1] for s in t["shards"]) == f.num_embeddings * t["dim"]

    memory = out["memory"]
    assert len(out["ranks"]) == 16
    assert memory["hbm_per_rank_bytes"]["max"] <= memory["hbm_cap_bytes"]
    assert all(r["hbm_bytes"] <= memory["hbm_cap_bytes"] for r in out["ranks"])
    assert out["perf"]["critical_path"]["total_ms"] > 0 and out["dense"]["fwd_flops_per_sample"] > 0
    assert out["step_estimate"]["bottleneck"]
    # the FLOPs parts add up to the total (the heads' fused first GEMM was once lost between them)
    parts = out["dense"]["fwd_flops_by_part"]
    assert sum(parts.values()) == out["dense"]["fwd_flops_per_sample"] and parts.get("heads_shared_gemm", 0) > 0

    # the JSON holds every key the markdown reads: rendering from the reloaded JSON gives the file back
    command = md_path.read_text().split("Command: `", 1)[1].split("`", 1)[0]
    assert plan_benchmark.markdown(out, command) == md_path.read_text()


def test_plan_writes_benchmarks_results_only_with_record(tmp_path: Path, monkeypatch, capsys) -> None:
    """The README's plan command prints; only ``--record`` writes the committed results."""
    monkeypatch.setattr(plan_benchmark, "RESULTS_DIR", tmp_path / "results")
    argv = ["--config", CONFIG, "--world-size", "16"]
    assert plan_benchmark.main(argv) == 0
    assert not (tmp_path / "results").exists() and "# Sharding plan" in capsys.readouterr().out
    assert plan_benchmark.main([*argv, "--record"]) == 0
    assert {p.name for p in (tmp_path / "results").iterdir()} == {"plan_production_16.json", "plan_production_16.md"}
