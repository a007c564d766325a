"""Tier 1: the random-cohort control keeps cohort sizes but breaks the link to the axis."""

import numpy as np
import pyarrow as pa

from c2al_rec.cohorts.random_control import randomize_spec
from c2al_rec.cohorts.spec_file import parse_cohort_spec

SPEC = parse_cohort_spec(
    {
        "axis": "user_value",
        "kind": "numeric",
        "head": "hi",
        "tail": "lo",
        "cohorts": [
            {"name": "lo", "upper": -1.645},
            {"name": "mid", "lower": -1.645, "upper": 1.645},
            {"name": "hi", "lower": 1.645},
        ],
    }
)


def test_same_shares_random_membership_deterministic() -> None:
    rng = np.random.default_rng(0)
    train, other = pa.array(rng.normal(size=100_000)), pa.array(rng.normal(size=50_000))
    control = randomize_spec(SPEC, train, seed=3)
    real, rand = SPEC.assign(other), control.assign(other)
    np.testing.assert_allclose(
        np.bincount(rand, minlength=3) / 50_000, np.bincount(real, minlength=3) / 50_000, atol=0.006
    )
    # membership is unrelated to the value: the random head has the axis' overall mean
    values = other.to_numpy()
    assert abs(values[rand == control.head_index].mean()) < 0.1 < values[real == SPEC.head_index].mean()
    assert np.array_equal(control.assign(other), rand)  # deterministic
    assert not np.array_equal(randomize_spec(SPEC, train, seed=4).assign(other), rand)
    assert control.to_json()["random_control"]["seed"] == 3


def test_nulls_are_in_no_cohort() -> None:
    control = randomize_spec(SPEC, pa.array(np.linspace(-3, 3, 1000)), seed=0)
    assert control.assign(pa.array([0.5, None]))[1] == -1


def test_saved_control_reloads_as_control(tmp_path) -> None:
    from c2al_rec.cohorts.spec_file import load_cohort_spec

    control = randomize_spec(SPEC, pa.array(np.linspace(-3, 3, 1000)), seed=5)
    control.save(tmp_path / "c.json")
    again = load_cohort_spec(tmp_path / "c.json")
    col = pa.array(np.random.default_rng(1).normal(size=1000))
    assert np.array_equal(again.assign(col), control.assign(col))


_CATEGORICAL_ASSIGN = """
import json, sys
import pyarrow as pa
from c2al_rec.cohorts.random_control import randomize_spec
from c2al_rec.cohorts.spec_file import parse_cohort_spec
spec = parse_cohort_spec({"axis": "surface", "kind": "categorical", "head": "a", "tail": "b",
    "cohorts": [{"name": "a", "values": ["feed"]}, {"name": "b", "values": ["stories", "reels"]}]})
column = pa.array(["feed", "stories", "reels", "search", "feed", "video"] * 50 + [f"v{i}" for i in range(200)])
print(json.dumps(randomize_spec(spec, column, seed=1).assign(column).tolist()))
"""


def test_categorical_random_cohorts_are_the_same_in_every_process() -> None:
    """Two ranks are two processes with different string-hash salts; they must draw the same cohorts."""
    import json
    import os
    import subprocess
    import sys

    draws = []
    for salt in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": salt}
        out = subprocess.run([sys.executable, "-c", _CATEGORICAL_ASSIGN], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        draws.append(json.loads(out.stdout))
    assert draws[0] == draws[1]
    assert len(set(draws[0][300:])) > 1  # the 200 distinct values do not all land in one cohort
