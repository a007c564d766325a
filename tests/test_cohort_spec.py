"""Tier 1: the cohort spec contract (DESIGN.md "Cohort spec"): parsing, errors, assignment, quantiles."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from c2al_rec.cohorts.spec import quantile_cohorts, resolve_quantiles
from c2al_rec.cohorts.spec_file import load_cohort_spec, parse_cohort_spec

NUMERIC = {
    "version": 1,
    "axis": "user_value",
    "kind": "numeric",
    "cohorts": [
        {"name": "p0-p5", "lower": None, "upper": -1.6449},
        {"name": "p5-p95", "lower": -1.6449, "upper": 1.6449},
        {"name": "p95+", "lower": 1.6449, "upper": None},
    ],
    "head": "p95+",
    "tail": "p0-p5",
    "selection": {"metric": "js", "min_rows": 1000, "min_positives": 50},
    "pairs": [],
    "source": {"split": "valid"},
}


def test_numeric_assignment_half_open_and_nulls(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps(NUMERIC))
    spec = load_cohort_spec(p)
    col = pa.array([-5.0, -1.6449, 0.0, 1.6449, 9.0, None], pa.float64())
    assert spec.assign(col).tolist() == [0, 1, 1, 2, 2, -1]
    assert (spec.head_index, spec.tail_index) == (2, 0)
    # round trip through save keeps the contract keys
    spec.save(tmp_path / "out.json")
    again = json.loads((tmp_path / "out.json").read_text())
    assert again["cohorts"] == NUMERIC["cohorts"] and again["head"] == "p95+" and again["version"] == 1


def test_categorical_assignment() -> None:
    spec = parse_cohort_spec(
        {
            "axis": "gender",
            "kind": "categorical",
            "head": "F",
            "tail": "M",
            "cohorts": [{"name": "F", "values": ["F"]}, {"name": "M", "values": ["M"]}],
        }
    )
    assert spec.assign(pa.array(["M", "F", "X", None])).tolist() == [1, 0, -1, -1]
    # non-string raw values are compared as strings
    spec2 = parse_cohort_spec(
        {
            "axis": "age",
            "kind": "categorical",
            "head": "a",
            "tail": "b",
            "cohorts": [{"name": "a", "values": ["1"]}, {"name": "b", "values": ["2", "3"]}],
        }
    )
    assert spec2.assign(pa.array([3, 1, 7])).tolist() == [1, 0, -1]


@pytest.mark.parametrize(
    "patch, match",
    [
        ({"kind": "ordinal"}, "'kind' must be"),
        ({"head": "nope"}, "'head' must name one of the cohorts"),
        ({"tail": "p95+"}, "must differ"),
        (
            {
                "cohorts": [{"name": "a", "lower": 0, "upper": 2}, {"name": "b", "lower": 1, "upper": 3}],
                "head": "a",
                "tail": "b",
            },
            "overlap",
        ),
        (
            {"cohorts": [{"name": "a", "lower": 2, "upper": 1}, {"name": "b", "lower": 5}], "head": "a", "tail": "b"},
            "lower 2 must be < upper 1",
        ),
        ({"version": 2}, "version"),
        ({"cohorts": None}, "needs 'cohorts'"),
    ],
)
def test_invalid_specs_name_the_problem(tmp_path: Path, patch: dict, match: str) -> None:
    d = {**NUMERIC, **patch}
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=match) as e:
        load_cohort_spec(p)
    assert str(p) in str(e.value)


def test_not_json(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_cohort_spec(p)


def test_quantile_form_resolves_on_data() -> None:
    spec = parse_cohort_spec({"axis": "user_value", "kind": "numeric", "quantiles": [0.05, 0.95]})
    assert not spec.resolved
    rng = np.random.default_rng(0)
    values = rng.normal(size=20_000)
    # positives concentrated at high values: the top cohort becomes the head
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-(values * 2 - 3)))).astype(np.int64)
    resolved = resolve_quantiles(spec, values, labels)
    assert resolved.names == ["p0-p5", "p5-p95", "p95+"]
    assert (resolved.head, resolved.tail) == ("p95+", "p0-p5")
    idx = resolved.assign(values)
    shares = np.bincount(idx, minlength=3) / len(values)
    np.testing.assert_allclose(shares, [0.05, 0.90, 0.05], atol=0.002)
    assert resolved.cohorts[0].upper == pytest.approx(np.quantile(values, 0.05))


def test_quantile_cohorts_reject_repeated_cut_points() -> None:
    with pytest.raises(ValueError, match="empty cohort"):
        quantile_cohorts(np.zeros(100), [0.25, 0.75])


SHIPPED_QUANTILE_SPEC = Path(__file__).resolve().parents[1] / "launch" / "cohorts" / "user_value_p5_p95.json"


def test_unresolved_quantile_spec_is_a_value_error_naming_the_file() -> None:
    spec = load_cohort_spec(SHIPPED_QUANTILE_SPEC)
    with pytest.raises(ValueError, match=r"user_value_p5_p95\.json: gives 'quantiles' \[0\.05, 0\.95\]"):
        spec.assign(pa.array([0.1, 2.0]))


def test_evaluate_with_the_shipped_quantile_spec_ends_in_one_line(tmp_path: Path, capsys) -> None:
    import pyarrow.parquet as pq

    from c2al_rec.cli.main import main

    rng = np.random.default_rng(0)
    preds = pa.table(
        {
            "prob": rng.uniform(0.01, 0.5, 200).astype(np.float32),
            "label": rng.integers(0, 2, 200),
            "user_value": rng.normal(size=200),
        }
    )
    pq.write_table(preds, tmp_path / "p.parquet")
    code = main(
        [
            "evaluate",
            "--predictions",
            str(tmp_path / "p.parquet"),
            "--cohorts",
            str(SHIPPED_QUANTILE_SPEC),
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "user_value_p5_p95.json" in err and "quantiles" in err and "cohorts.json" in err
    assert not (tmp_path / "eval").exists()
