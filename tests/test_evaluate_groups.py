"""Tier 1: evaluation groups, NE_diff pairing and the markdown / PNG outputs on synthetic tables."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from c2al_rec.analysis.evaluate import evaluate_groups
from c2al_rec.analysis.report import markdown_table, plot_ne_diff
from c2al_rec.analysis.stats import normalized_entropy
from c2al_rec.cohorts.spec_file import parse_cohort_spec

SPEC = parse_cohort_spec(
    {
        "axis": "user_value",
        "kind": "numeric",
        "head": "hi",
        "tail": "lo",
        "cohorts": [
            {"name": "lo", "upper": -1.0},
            {"name": "mid", "lower": -1.0, "upper": 1.0},
            {"name": "hi", "lower": 1.0},
        ],
    }
)


def _tables(seed: int, n: int = 30000):
    rng = np.random.default_rng(100)  # same rows and labels for every seed
    value = rng.normal(size=n)
    true = 1 / (1 + np.exp(-(-2.5 + 0.8 * value)))
    label = (rng.random(n) < true).astype(np.int64)
    noise = np.random.default_rng(seed).normal(size=n)
    base = np.clip(true * np.exp(0.5 * noise), 1e-6, 0.999)
    better = np.clip(true * np.exp(0.25 * noise), 1e-6, 0.999)  # closer to the truth everywhere
    mk = lambda p: pa.table({"prob": pa.array(p, pa.float32()), "label": label, "user_value": value, "true_prob": true})  # noqa: E731
    return mk(better), mk(base)


def test_groups_ne_and_pairing() -> None:
    model, base = _tables(0)
    res = evaluate_groups([model], SPEC, [base], num_resamples=200)
    g = res["groups"]
    assert set(g) == {"overall", "head", "tail", "segment:lo", "segment:mid", "segment:hi"}
    assert g["head"]["rows"] == g["segment:hi"]["rows"] and g["tail"]["rows"] == g["segment:lo"]["rows"]
    assert g["overall"]["rows"] == sum(g[f"segment:{c}"]["rows"] for c in ("lo", "mid", "hi"))
    prob = model.column("prob").to_numpy()
    label = model.column("label").to_numpy()
    assert g["overall"]["ne"] == pytest.approx(normalized_entropy(prob, label))
    assert g["overall"]["ne_diff"] < 0 and g["overall"]["ci95"][1] < 0 and g["overall"]["ci_kind"] == "rows"
    assert g["overall"]["bayes_ne"] < g["overall"]["ne"]  # the truth beats any model


def test_several_seeds_give_seed_level_intervals() -> None:
    pairs = [_tables(s) for s in range(3)]
    res = evaluate_groups([m for m, _ in pairs], SPEC, [b for _, b in pairs], num_resamples=100)
    overall = res["groups"]["overall"]
    assert overall["ci_kind"] == "seeds" and len(overall["ne_diff_seeds"]) == 3
    assert overall["ne_diff"] == pytest.approx(np.mean(overall["ne_diff_seeds"]))


def test_mismatched_rows_and_counts_are_errors() -> None:
    model, base = _tables(0)
    with pytest.raises(ValueError, match="one baseline per seed"):
        evaluate_groups([model, model], SPEC, [base])
    shuffled = base.take(np.random.default_rng(0).permutation(base.num_rows))
    with pytest.raises(ValueError, match="not on the same rows"):
        evaluate_groups([model], SPEC, [shuffled])
    with pytest.raises(ValueError, match="no column 'user_value'"):
        evaluate_groups([model.drop_columns(["user_value"])], SPEC)


def test_markdown_and_plot(tmp_path: Path) -> None:
    model, base = _tables(0)
    res = evaluate_groups([model], SPEC, [base], num_resamples=100)
    md = markdown_table(res, sensitive=True)
    assert "| overall |" in md and "row-level only" in md and "protected attribute" in md
    png = plot_ne_diff(res, tmp_path / "ne_diff.png")
    assert png is not None and png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_plot_colour_follows_the_interval_not_the_sign() -> None:
    from c2al_rec.analysis.plots import CROSSES_ZERO, EXCLUDES_ZERO, interval_color

    assert interval_color((-0.003, -0.001)) == EXCLUDES_ZERO == interval_color((0.001, 0.004))
    assert interval_color((-0.003, 0.001)) == CROSSES_ZERO  # negative estimate, interval crosses 0


def _one_class_in_head(value: float) -> tuple[pa.Table, pa.Table]:
    """The tables of ``_tables`` with every head (user_value >= 1) label set to ``value``."""
    model, base = _tables(0)
    head = model.column("user_value").to_numpy() >= 1.0
    label = np.where(head, value, model.column("label").to_numpy()).astype(np.int64)
    return model.set_column(1, "label", pa.array(label)), base.set_column(1, "label", pa.array(label))


@pytest.mark.parametrize("value,reason", [(0, "no positives"), (1, "no negatives")])
def test_a_one_class_group_is_not_judged(tmp_path: Path, value: int, reason: str) -> None:
    """NE of a one-class group is a clipping artefact (the old code printed NE 843598361.7 and
    calibration 1.6e12): eval.json says null with a reason, the table and the plot say n/a."""
    model, base = _one_class_in_head(value)
    res = evaluate_groups([model], SPEC, [base], num_resamples=50)
    head = res["groups"]["head"]
    assert head["ne"] is None and head["reason"] == reason and head["auc"] is None
    assert "ne_diff" not in head and "ci95" not in head and "bayes_ne" not in head
    assert (head["calibration"] is None) == (reason == "no positives")
    assert res["groups"]["overall"]["ne"] is not None and "reason" not in res["groups"]["overall"]
    md = markdown_table(res)
    row = next(line for line in md.splitlines() if line.startswith("| head |"))
    assert f"n/a ({reason})" in row and not any(c.isdigit() for c in "".join(row.split("|")[5:]))
    assert plot_ne_diff(res, tmp_path / "ne_diff.png") is not None


def test_fmt_diff_names_why_a_group_is_not_judged() -> None:
    from c2al_rec.workflows.experiment_report import fmt_diff

    assert fmt_diff({"ne": None, "reason": "no positives"}) == "n/a (no positives)"
    assert fmt_diff(None) == "n/a"
