"""The `[select]` rule and its config: pure functions on valid figures, no training (tier 1).

The pipeline and experiment wiring (valid figures feed the rule, the test split only reports) is
covered here with predictions tables built by hand, and end to end in test_pipeline_e2e.py and
test_experiment.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from c2al_rec.config import ConfigError, load_config
from c2al_rec.workflows.selection import (
    Candidate,
    SelectionError,
    candidate_list,
    choose,
    format_selection,
    judge,
    resolve_force,
    score_valid,
)

REPO = Path(__file__).resolve().parents[1]
CANDS = [Candidate("baseline", 0.0), Candidate("lambda_0.03", 0.03), Candidate("lambda_0.1", 0.1)]


def fig(diff: float, lo: float, hi: float, ne: float = 0.9) -> dict:
    return {"ne": ne, "ne_diff": diff, "ci95": [lo, hi]}


def groups(overall: dict, head: dict | None = None, tail: dict | None = None) -> dict:
    return {"overall": overall, "head": head or fig(0.0, -0.01, 0.01), "tail": tail or fig(0.0, -0.01, 0.01)}


BASE = groups(fig(0.0, 0.0, 0.0))


def test_lowest_valid_objective_among_passing_wins() -> None:
    valid = {
        "baseline": BASE,
        "lambda_0.03": groups(fig(-0.001, -0.002, 0.0)),
        "lambda_0.1": groups(fig(-0.003, -0.004, -0.002)),
    }
    record = choose(valid, CANDS, "overall")
    assert record["chosen"] == "lambda_0.1" and not record["forced"]
    assert all(c["passed"] for c in record["candidates"].values())
    assert record["candidates"]["lambda_0.1"]["valid"]["overall"] == fig(-0.003, -0.004, -0.002)
    # objective head: ranks by head, not overall
    valid["lambda_0.03"] = groups(fig(-0.001, -0.002, 0.0), head=fig(-0.02, -0.03, -0.01))
    assert choose(valid, CANDS, "head")["chosen"] == "lambda_0.03"


def test_a_candidate_with_any_interval_wholly_above_zero_fails() -> None:
    valid = {
        "baseline": BASE,
        "lambda_0.03": groups(fig(-0.005, -0.006, -0.004), tail=fig(0.01, 0.001, 0.02)),  # best overall, worse tail
        "lambda_0.1": groups(fig(-0.001, -0.003, 0.001)),
    }
    record = choose(valid, CANDS, "overall")
    assert record["chosen"] == "lambda_0.1"
    assert not record["candidates"]["lambda_0.03"]["passed"]
    assert "tail worse than the baseline" in record["candidates"]["lambda_0.03"]["why_not"]
    # ci95[0] == 0 exactly still passes (the interval does not lie wholly above 0)
    assert judge(groups(fig(0.001, 0.0, 0.002)))[0]


def test_nothing_passes_exports_the_baseline() -> None:
    valid = {
        "baseline": BASE,
        "lambda_0.03": groups(fig(0.002, 0.001, 0.003)),
        "lambda_0.1": groups(fig(-0.01, -0.02, 0.0), head=fig(0.05, 0.01, 0.09)),
    }
    record = choose(valid, CANDS, "overall")
    assert record["chosen"] == "baseline" and record["candidates"]["baseline"]["passed"]
    assert not any(record["candidates"][n]["passed"] for n in ("lambda_0.03", "lambda_0.1"))


def test_ties_go_to_the_smaller_lambda() -> None:
    tie = groups(fig(-0.002, -0.003, -0.001))
    valid = {"baseline": BASE, "lambda_0.03": tie, "lambda_0.1": tie}
    assert choose(valid, CANDS, "overall")["chosen"] == "lambda_0.03"
    # a candidate that ties the baseline at exactly 0 loses to the baseline (lambda 0)
    zero = groups(fig(0.0, -0.001, 0.001))
    assert choose({"baseline": BASE, "lambda_0.03": zero, "lambda_0.1": zero}, CANDS, "overall")["chosen"] == "baseline"


@pytest.mark.parametrize(
    "bad_head",
    [
        {"ne": None, "ne_diff": None, "ci95": None, "reason": "no positives"},  # issue-24 style null NE
        {"ne": 0.9},  # no NE_diff: the group had no positives, nothing to compare
        None,  # group missing altogether
        {"ne": float("inf"), "ne_diff": float("nan"), "ci95": [float("nan"), float("nan")]},
    ],
)
def test_a_group_that_cannot_be_judged_fails_the_pass(bad_head) -> None:
    cand = groups(fig(-0.01, -0.02, -0.005))
    cand["head"] = bad_head
    if bad_head is None:
        del cand["head"]
    record = choose(
        {"baseline": BASE, "lambda_0.03": cand, "lambda_0.1": groups(fig(-0.001, -0.002, 0.001))}, CANDS, "overall"
    )
    assert record["chosen"] == "lambda_0.1"
    assert "head cannot be judged" in record["candidates"]["lambda_0.03"]["why_not"]
    # the baseline passes even where its own groups cannot be judged
    assert choose({"baseline": {}, "lambda_0.03": cand, "lambda_0.1": cand}, CANDS, "overall")["chosen"] == "baseline"


def test_force_overrides_the_rule_with_a_warning_and_is_recorded(capsys) -> None:
    valid = {
        "baseline": BASE,
        "lambda_0.03": groups(fig(0.01, 0.005, 0.02)),
        "lambda_0.1": groups(fig(-0.001, -0.002, 0.0)),
    }
    record = choose(valid, CANDS, "overall", force="0.03")
    assert record["chosen"] == "lambda_0.03" and record["forced"] and record["rule_choice"] == "lambda_0.1"
    assert (
        "WARNING: --select.force=0.03 exports lambda_0.03; the rule would choose lambda_0.1" in capsys.readouterr().err
    )
    assert "forced by --select.force" in format_selection(record)
    assert resolve_force("0", CANDS) == "baseline" and resolve_force("lambda_0.1", CANDS) == "lambda_0.1"
    assert resolve_force(0.1, CANDS) == "lambda_0.1" and resolve_force(0.0, CANDS) == "baseline"  # --select.force=0.1
    with pytest.raises(
        SelectionError, match=r"--select.force=0.5: not a candidate; candidates are baseline, lambda_0.03, lambda_0.1"
    ):
        choose(valid, CANDS, "overall", force="0.5")


def test_rule_reads_valid_only_a_test_winner_that_loses_on_valid_is_not_chosen() -> None:
    """Tables by hand: lambda_0.03 is far better on test, worse on valid; score_valid + choose see valid only."""
    from c2al_rec.cohorts.spec import Cohort, CohortSpec

    rng = np.random.default_rng(0)
    n = 6000
    axis = rng.normal(size=n)
    label = (rng.random(n) < 0.2).astype(np.int64)
    truth = np.where(label == 1, 0.35, 0.15)

    def table(prob: np.ndarray) -> pa.Table:
        return pa.table({"prob": prob.astype(np.float32), "label": label, "user_value": axis})

    base = table(np.full(n, 0.2))
    good, bad = table(truth), table(np.where(label == 1, 0.1, 0.3))  # informative vs anti-informative
    cohorts = [Cohort("lo", None, -1.0), Cohort("mid", -1.0, 1.0), Cohort("hi", 1.0, None)]
    spec = CohortSpec("user_value", "numeric", cohorts, head="hi", tail="lo")
    # on valid lambda_0.03 is bad and lambda_0.1 is good; on test it would be the other way round
    valid_tables = {"baseline": base, "lambda_0.03": bad, "lambda_0.1": good}
    valid = score_valid(valid_tables, base, spec, resamples=50)
    assert valid["lambda_0.1"]["overall"]["ne_diff"] < 0 < valid["lambda_0.03"]["overall"]["ne_diff"]
    assert valid["baseline"]["overall"] == {
        "ne": pytest.approx(valid["lambda_0.1"]["overall"]["ne_base"]),
        "ne_diff": 0.0,
        "ci95": [0.0, 0.0],
    }
    assert choose(valid, CANDS, "overall")["chosen"] == "lambda_0.1"


def test_config_candidates_force_and_the_split_guard(capsys) -> None:
    cfg = load_config(None)
    assert [c.name for c in candidate_list(cfg)] == ["baseline", "lambda_0.03", "lambda_0.1", "lambda_0.3"]
    cfg = load_config(None, ["--select.candidates=[0.1, 0]", "--select.gradsim=true", "--select.aux_projection=[64]"])
    cands = candidate_list(cfg)
    assert [c.name for c in cands] == ["baseline", "lambda_0.1", "gradsim", "aux_projection_64"]
    spec = "cohorts.json"
    assert (
        cands[2].config(cfg, spec).cohorts.weighting == "gradsim"
        and cands[3].config(cfg, spec).model.aux_projection == 64
    )
    assert not cands[0].config(cfg, spec).cohorts.enabled and cands[1].config(cfg, spec).cohorts.lambda_tail == 0.1
    with pytest.raises(ConfigError, match=r"select.candidates must contain 0 \(the baseline"):
        load_config(None, ["--select.candidates=[0.1]"])
    with pytest.raises(
        ConfigError, match=r"pipeline.eval_split must not be 'valid': that split chooses the exported model"
    ):
        load_config(None, ["--pipeline.eval_split=valid"])
    with pytest.raises(ConfigError, match=r"select.objective: expected one of"):
        load_config(None, ["--select.objective=segment"])


def test_old_pipeline_lambdas_load_with_one_deprecation_line(tmp_path: Path, capsys) -> None:
    old = tmp_path / "old.toml"
    old.write_text("[pipeline]\nlambdas = [0.03, 0.1]\n")
    cfg = load_config(old)
    assert cfg.select.candidates == [0.0, 0.03, 0.1] and cfg.pipeline.lambdas == []
    err = capsys.readouterr().err
    assert err.count("pipeline.lambdas is deprecated") == 1 and "select.candidates = [0.0, 0.03, 0.1]" in err
    from c2al_rec.config import config_to_dict, load_config_dict

    assert load_config_dict(config_to_dict(cfg)) == cfg and capsys.readouterr().err == ""  # no line again in children


def test_pipeline_candidates_and_reference_with_and_without_init_from_baseline(tmp_path: Path) -> None:
    from c2al_rec.workflows.pipeline import Pipeline

    cfg = load_config(REPO / "launch/configs/demo.toml")
    plain = Pipeline(cfg, tmp_path)
    assert plain.candidate_dirs() == {"baseline": "baseline", "lambda_0.1": "lambda_0.1"}
    assert plain.reference == tmp_path / "baseline"
    # continued from the baseline: the lambda-0 candidate is the baseline trained on for the same steps,
    # and it is both the NE_diff reference and the baseline candidate
    cont = Pipeline(
        load_config(REPO / "launch/configs/demo.toml", ["--pipeline.init_c2al_from_baseline=true"]), tmp_path
    )
    assert cont.candidate_dirs()["baseline"] == "baseline_continued"
    assert cont.reference == tmp_path / "baseline_continued"
