"""Choosing the model to export: candidates scored on the valid split, the ``[select]`` rule, the record.

The rule (``SELECTION_RULE``, also in ``[select]``'s field docs): a candidate passes when none of
its valid NE_diff intervals (overall, head, tail, against the baseline) lies wholly above 0; a
group that cannot be judged (no positives or no negatives: no NE, or no interval) fails the pass;
the baseline passes by definition. Among passing candidates the lowest valid NE_diff point
estimate of ``select.objective`` wins, equal estimates going to the smaller lambda. ``choose``
sees valid figures only; the test figures of the chosen model are added to the record afterwards.

Example::

    cands = candidate_list(cfg)                      # baseline, lambda_0.03, lambda_0.1, ...
    record = choose({c.name: valid_groups[c.name] for c in cands}, cands, "overall")
    record["chosen"]                                 # e.g. "lambda_0.1"
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from typing import Any, Optional

from c2al_rec.config import SELECTION_RULE, Config

JUDGED_GROUPS = ("overall", "head", "tail")
BASELINE = "baseline"


class SelectionError(ValueError):
    """A selection setting that names no candidate."""


@dataclass(frozen=True)
class Candidate:
    """One model competing for export."""

    name: str
    """``baseline``, ``lambda_<x>``, ``gradsim`` or ``aux_projection_<w>``."""
    lam: float
    """Its aux loss weight (lambda_head = lambda_tail); 0 for the baseline. Ties go to the smaller."""
    weighting: str = "constant"
    """Aux loss weighting (``constant`` or ``gradsim``)."""
    aux_projection: Optional[int] = None
    """model.aux_projection of the candidate (None: the config's)."""

    @property
    def is_baseline(self) -> bool:
        return self.name == BASELINE

    def config(self, cfg: Config, spec: str) -> Config:
        """The candidate's training config (C2AL on ``spec``); the baseline's has the aux heads off."""
        if self.is_baseline:
            return replace(cfg, cohorts=replace(cfg.cohorts, enabled=False))
        cohorts = replace(
            cfg.cohorts, enabled=True, spec=spec, lambda_head=self.lam, lambda_tail=self.lam, weighting=self.weighting
        )
        model = cfg.model if self.aux_projection is None else replace(cfg.model, aux_projection=self.aux_projection)
        return replace(cfg, cohorts=cohorts, model=model)


def lambda_name(lam: float) -> str:
    return BASELINE if lam == 0 else f"lambda_{lam:g}"


def candidate_list(cfg: Config) -> list[Candidate]:
    """The ``[select]`` candidates in order: lambdas ascending (0 = baseline), then gradsim, aux projections."""
    s, c = cfg.select, cfg.cohorts
    out = [Candidate(lambda_name(lam), lam) for lam in sorted(s.candidates)]
    if s.gradsim:
        out.append(Candidate("gradsim", c.lambda_head, weighting="gradsim"))
    out += [Candidate(f"aux_projection_{w}", c.lambda_head, aux_projection=w) for w in s.aux_projection]
    return out


def resolve_force(force: str | float, candidates: list[Candidate]) -> Optional[str]:
    """``select.force`` -> a candidate name (``0.1`` -> ``lambda_0.1``, ``0`` -> ``baseline``); '' -> None."""
    if isinstance(force, str) and not force:
        return None
    force = f"{force:g}" if isinstance(force, float) else force
    names = [c.name for c in candidates]
    try:
        name = lambda_name(float(force))
    except ValueError:
        name = force
    if name not in names:
        raise SelectionError(f"--select.force={force}: not a candidate; candidates are {', '.join(names)}")
    return name


def judge(groups: dict[str, Any]) -> tuple[bool, str]:
    """Does a candidate with these valid groups pass? Returns (passes, why not)."""
    for g in JUDGED_GROUPS:
        fig = groups.get(g) or {}
        numbers = [fig.get("ne"), fig.get("ne_diff"), *(fig.get("ci95") or [None])]
        if any(x is None or not math.isfinite(x) for x in numbers):
            return False, f"{g} cannot be judged ({fig.get('reason') or 'no NE or no interval on valid'})"
        if fig["ci95"][0] > 0:
            return False, f"{g} worse than the baseline (ci95 [{fig['ci95'][0]:+.3%}, {fig['ci95'][1]:+.3%}])"
    return True, ""


def valid_figures(groups: dict[str, Any]) -> dict[str, Any]:
    """The record's per-group figures: ``ne``, ``ne_diff``, ``ci95`` (plus ``reason`` when unjudgeable)."""
    out = {}
    for g in JUDGED_GROUPS:
        fig = groups.get(g) or {}
        out[g] = {k: fig.get(k) for k in ("ne", "ne_diff", "ci95")}
        if fig.get("reason"):
            out[g]["reason"] = fig["reason"]
    return out


def choose(
    valid: dict[str, dict[str, Any]], candidates: list[Candidate], objective: str, force: str | float = ""
) -> dict[str, Any]:
    """Apply the rule to valid figures only.

    Args:
        valid: candidate name -> its valid groups (``{group: {"ne", "ne_diff", "ci95"}}``, NE_diff vs the
            baseline); the baseline's own entry may be anything (it passes by definition).
        candidates: the candidates, as from ``candidate_list`` (their lambdas break ties).
        objective: ``overall``, ``head`` or ``tail``.
        force: ``select.force`` ('' = the rule decides).

    Returns:
        ``{"rule", "objective", "chosen", "forced", "rule_choice", "candidates": {name: {"lambda", "passed",
        "why_not", "valid": {group: {"ne", "ne_diff", "ci95"}}}}}``.
    """
    if objective not in JUDGED_GROUPS:
        raise SelectionError(f"select.objective must be one of {JUDGED_GROUPS}, got {objective!r}")
    table: dict[str, Any] = {}
    ranked = []
    for order, cand in enumerate(candidates):
        groups = valid[cand.name]
        ok, why = (True, "") if cand.is_baseline else judge(groups)
        table[cand.name] = {"lambda": cand.lam, "passed": ok, "why_not": why, "valid": valid_figures(groups)}
        if ok:
            score = 0.0 if cand.is_baseline else groups[objective]["ne_diff"]
            ranked.append((score, cand.lam, order, cand.name))
    rule_choice = min(ranked)[3]  # the baseline always passes, so ranked is never empty
    forced = resolve_force(force, candidates)
    if forced is not None and forced != rule_choice:
        shown = f"{force:g}" if isinstance(force, float) else force
        print(
            f"[select] WARNING: --select.force={shown} exports {forced}; the rule would choose {rule_choice}",
            file=sys.stderr,
            flush=True,
        )
    return {
        "rule": SELECTION_RULE,
        "objective": objective,
        "chosen": forced or rule_choice,
        "forced": forced is not None,
        "rule_choice": rule_choice,
        "candidates": table,
    }


def format_selection(record: dict[str, Any]) -> str:
    """The candidates' valid table and the choice, for stdout and the report (markdown)."""

    def cell(fig: dict[str, Any]) -> str:
        if fig.get("ne_diff") is None or fig.get("ci95") is None:
            return "cannot judge"
        lo, hi = fig["ci95"]
        return f"{100 * fig['ne_diff']:+.3f}% [{100 * lo:+.3f}, {100 * hi:+.3f}]"

    lines = [
        "| candidate | lambda | valid NE overall | overall NE_diff | head NE_diff | tail NE_diff | passes |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in record["candidates"].items():
        v = c["valid"]
        ne = v["overall"].get("ne")
        mark = " **chosen**" if name == record["chosen"] else ""
        lines.append(
            f"| {name}{mark} | {c['lambda']:g} | {'n/a' if ne is None else f'{ne:.5f}'} | "
            + " | ".join(cell(v[g]) for g in JUDGED_GROUPS)
            + f" | {'yes' if c['passed'] else 'no: ' + c['why_not']} |"
        )
    how = (
        f"forced by --select.force (the rule would choose {record['rule_choice']})"
        if record["forced"]
        else f"by the rule, objective {record['objective']}"
    )
    lines += ["", f"Chosen: **{record['chosen']}**, {how}. Rule: {record['rule']}"]
    return "\n".join(lines)


def score_valid(
    tables: dict[str, Any], base_table: Any, spec: Any, resamples: int, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Valid groups of every candidate against the baseline: NE per group, NE_diff with an interval over rows.

    Args:
        tables: candidate name -> its predictions table on the valid split (the baseline's under ``baseline``).
        base_table: the reference baseline's predictions table (the same rows).
        spec: the cohort spec that defines head and tail.
        resamples: bootstrap resamples of each interval.
        seed: bootstrap seed.
    """
    from c2al_rec.analysis.evaluate import evaluate_groups

    out: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        if name == BASELINE:
            own = evaluate_groups([base_table], spec)["groups"]
            out[name] = {
                g: {"ne": (own.get(g) or {}).get("ne"), "ne_diff": 0.0, "ci95": [0.0, 0.0]} for g in JUDGED_GROUPS
            }
        else:
            out[name] = evaluate_groups([table], spec, [base_table], num_resamples=resamples, seed=seed)["groups"]
    return out
