"""Reading a cohort spec file: validation with errors that name the file and the key.

A saved random-cohort control spec (``"random_control"`` key) reloads as a ``RandomizedCohortSpec``.

Example::

    spec = load_cohort_spec("cohorts.json")
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from c2al_rec.config.errors import echo

from .random_control import RandomizedCohortSpec
from .spec import SPEC_VERSION, Cohort, CohortSpec


def _fail(path: str, msg: str) -> ValueError:
    return ValueError(f"cohort spec {path}: {msg}")


def parse_cohort_spec(d: dict[str, Any], path: str = "<dict>") -> CohortSpec:
    """Validate a spec dict; errors name the file and the key."""
    for key in ("axis", "kind"):
        if not isinstance(d.get(key), str):
            raise _fail(path, f"'{key}' must be a string")
    if d.get("version", SPEC_VERSION) != SPEC_VERSION:
        raise _fail(path, f"'version' {d.get('version')} is not supported (expected {SPEC_VERSION})")
    kind = d["kind"]
    if kind not in ("numeric", "categorical"):
        raise _fail(path, f"'kind' must be 'numeric' or 'categorical', got {echo(kind)}")
    quantiles = d.get("quantiles")
    raw = d.get("cohorts")
    if raw is None and quantiles is None:
        raise _fail(path, "needs 'cohorts' (or 'quantiles' for a numeric axis)")
    if quantiles is not None:
        if kind != "numeric" or raw:
            raise _fail(path, "'quantiles' is only for a numeric axis without 'cohorts'")
        if not quantiles or any(not (0 < q < 1) for q in quantiles) or sorted(set(quantiles)) != list(quantiles):
            raise _fail(path, f"'quantiles' must be increasing values in (0, 1), got {quantiles}")
    cohorts = []
    for i, c in enumerate(raw or []):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise _fail(path, f"cohorts[{i}] needs a string 'name'")
        if kind == "numeric":
            lo, hi = c.get("lower"), c.get("upper")
            for b, v in (("lower", lo), ("upper", hi)):
                if v is not None and not isinstance(v, (int, float)):
                    raise _fail(path, f"cohorts[{i}].{b} must be a number or null, got {echo(v)}")
            if lo is not None and hi is not None and not lo < hi:
                raise _fail(path, f"cohorts[{i}] ({c['name']}): lower {lo} must be < upper {hi}")
            cohorts.append(Cohort(c["name"], None if lo is None else float(lo), None if hi is None else float(hi)))
        else:
            values = c.get("values")
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise _fail(path, f"cohorts[{i}].values must be a list of strings")
            cohorts.append(Cohort(c["name"], values=values))
    names = [c.name for c in cohorts]
    if len(set(names)) != len(names):
        raise _fail(path, f"cohort names must be unique, got {names}")
    if kind == "numeric":
        _check_disjoint(cohorts, path)
    else:
        seen: dict[str, str] = {}
        for c in cohorts:
            for v in c.values or []:
                if v in seen:
                    raise _fail(path, f"value {echo(v)} is in both {echo(seen[v])} and {echo(c.name)}")
                seen[v] = c.name
    head, tail = d.get("head"), d.get("tail")
    if cohorts:
        for key, v in (("head", head), ("tail", tail)):
            if v not in names:
                raise _fail(path, f"'{key}' must name one of the cohorts {echo(names)}, got {echo(v)}")
        if head == tail:
            raise _fail(path, "'head' and 'tail' must differ")
    spec = CohortSpec(
        axis=d["axis"],
        kind=kind,
        cohorts=cohorts,
        head=head or "",
        tail=tail or "",
        version=SPEC_VERSION,
        selection=d.get("selection", {}),
        pairs=d.get("pairs", []),
        source=d.get("source", {}),
        quantiles=list(quantiles) if quantiles is not None else None,
        origin=path,
    )
    control = d.get("random_control")
    if control is not None:  # a saved random-cohort control spec reloads as one (e.g. on resume)
        if not isinstance(control, dict) or len(control.get("shares", [])) != len(cohorts):
            raise _fail(path, "'random_control' needs 'shares' (one per cohort) and 'seed'")
        return RandomizedCohortSpec(**{**spec.__dict__, "shares": control["shares"], "seed": int(control["seed"])})
    return spec


def _check_disjoint(cohorts: list[Cohort], path: str) -> None:
    spans = sorted(
        ((-math.inf if c.lower is None else c.lower, math.inf if c.upper is None else c.upper, c.name) for c in cohorts)
    )
    for (lo1, hi1, n1), (lo2, hi2, n2) in zip(spans, spans[1:]):
        if lo2 < hi1:
            raise _fail(path, f"cohorts {n1} and {n2} overlap")


def load_cohort_spec(path: str | Path) -> CohortSpec:
    """Read and validate a cohort spec JSON file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"cohort spec {p} does not exist")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise _fail(str(p), f"not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise _fail(str(p), "must be a JSON object")
    return parse_cohort_spec(d, str(p))
