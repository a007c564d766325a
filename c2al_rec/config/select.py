"""The ``[select]`` section: which models compete for export, and the rule that picks one on the valid split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .checks import require_finite, require_range
from .errors import ConfigError, echo

SELECTION_SPLIT = "valid"
"""The split every candidate is scored on to choose; the final report (``pipeline.eval_split``) never is it."""

SELECTION_RULE = (
    "A candidate passes when none of its valid NE_diff intervals (overall, head, tail; vs the baseline) lies "
    "wholly above 0 (ci95[0] <= 0 for each); a group with no positives or no negatives cannot be judged and "
    "fails the pass; the baseline passes by definition. Among passing candidates the lowest valid NE_diff "
    "point estimate of select.objective wins; equal estimates go to the smaller lambda. The test split never "
    "chooses."
)


@dataclass
class SelectConfig:
    """Model selection of `pipeline` and `experiment`: candidates scored on the valid split, one exported.

    Rule: a candidate passes when none of its valid NE_diff intervals (overall, head, tail) lies wholly
    above 0 (ci95[0] <= 0); an unjudgeable group (no positives or no negatives) fails; the baseline
    passes by definition. Among passing candidates the lowest valid NE_diff of `objective` wins; ties
    go to the smaller lambda. The test split only reports.
    """

    candidates: list[float] = field(default_factory=lambda: [0.0, 0.03, 0.1, 0.3])
    """Lambdas competing for export (lambda_head = lambda_tail); 0 = the baseline run itself, always required."""
    gradsim: bool = False
    """Also a candidate: C2AL at cohorts.lambda_head/tail with gradient-similarity gating."""
    aux_projection: list[int] = field(default_factory=list)
    """Also candidates: C2AL at cohorts.lambda_head/tail with model.aux_projection set to each width (> 0)."""
    objective: Literal["overall", "head", "tail"] = "overall"
    """Group whose valid NE_diff point estimate ranks the passing candidates (lowest wins)."""
    force: str | float = ""
    """Export this candidate whatever the rule says (a lambda such as 0.1, or a name such as gradsim); warns,
    and the model card records the override. Empty: the rule chooses."""

    def __post_init__(self) -> None:
        require_finite(self, "select")
        if not self.candidates:
            raise ConfigError("select.candidates needs at least 0 (the baseline)")
        for i, lam in enumerate(self.candidates):
            require_range(f"select.candidates[{i}]", lam, low=0.0)
        if 0.0 not in self.candidates:
            raise ConfigError(
                "select.candidates must contain 0 (the baseline, which passes by definition), "
                f"got {echo(self.candidates)}"
            )
        if len(set(self.candidates)) != len(self.candidates):
            raise ConfigError(f"select.candidates lists a lambda twice: {self.candidates}")
        for i, width in enumerate(self.aux_projection):
            if width <= 0:
                raise ConfigError(f"select.aux_projection[{i}] must be a width > 0, got {echo(width)}")
