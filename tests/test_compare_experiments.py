"""scripts/compare_experiments.py: one variant across two experiments that share baselines."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("compare_experiments", ROOT / "scripts" / "compare_experiments.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def _experiment(root: Path, diffs: dict, ne_base: float = 0.9) -> Path:
    groups = {}
    for group, d in diffs.items():
        mean = sum(d) / len(d)
        groups[group] = {"ne_base": ne_base, "ne_diff": mean, "ci95": [mean - 0.001, mean + 0.001], "ne_diff_seeds": d}
    (root / "eval").mkdir(parents=True)
    (root / "eval" / "c2al.json").write_text(json.dumps({"groups": groups, "seeds": 3}))
    return root


def test_pairs_the_variant_seed_by_seed(tmp_path: Path) -> None:
    a = _experiment(tmp_path / "a", {"overall": [-0.001, -0.002, -0.003], "head": [-0.01, -0.02, -0.03]})
    b = _experiment(tmp_path / "b", {"overall": [-0.002, -0.002, -0.002], "head": [-0.01, -0.02, -0.03]})
    out = tmp_path / "res" / "cmp"
    assert compare.main([str(a), str(b), "--labels", "on h", "proj", "--out", str(out)]) == 0
    got = json.loads(out.with_suffix(".json").read_text())["results"]["proj minus on h"]
    assert got["overall"]["ne_diff_seeds"] == pytest.approx([-0.001, 0.0, 0.001])
    assert got["overall"]["ne_diff"] == pytest.approx(0.0, abs=1e-15)
    assert got["head"]["ne_diff"] == pytest.approx(0.0, abs=1e-15)
    text = out.with_suffix(".md").read_text()
    assert "| overall | -0.200% [-0.300, -0.100] | -0.200% [-0.300, -0.100] |" in text
    assert out.with_suffix(".png").stat().st_size > 0


def test_refuses_experiments_with_different_baselines(tmp_path: Path) -> None:
    a = _experiment(tmp_path / "a", {"overall": [-0.001, -0.002, -0.003]}, ne_base=0.9)
    b = _experiment(tmp_path / "b", {"overall": [-0.001, -0.002, -0.003]}, ne_base=0.91)
    with pytest.raises(SystemExit, match="group overall: baseline NE 0.9 in .* but 0.91 in"):
        compare.main([str(a), str(b), "--labels", "x", "y", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="no such evaluation"):
        compare.main([str(a), str(tmp_path / "missing"), "--labels", "x", "y", "--out", str(tmp_path / "o")])
