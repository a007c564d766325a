"""Config sections of the stages after training: export, discovery, pipeline and experiment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .checks import require_finite, require_range
from .errors import ConfigError, echo
from .select import SELECTION_SPLIT

DISPARITY_METRICS: tuple[str, ...] = ("js", "kl", "cosine", "wasserstein")
"""Names of the disparity metrics that rank cohort pairs; ``c2al_rec.cohorts.divergences`` registers one
implementation under each (a test keeps the two equal)."""
DisparityMetric = Literal[DISPARITY_METRICS]  # type: ignore[valid-type]  # config loading checks names against it


@dataclass
class ExportConfig:
    """Serving export and its parity gate."""

    quantize: Literal["none", "int8", "fp16"] = "none"
    """Embedding quantization of the exported model."""
    parity_rows: int = 4096
    """Held-out rows the parity gate scores."""
    parity_max_abs_diff: float = 1e-5
    """fp32 gate: max |p_export - p_train| allowed."""
    parity_ne_tolerance: float = 0.005
    """int8/fp16 gate: allowed relative NE change vs fp32."""
    pt2: bool = False
    """Also write model.pt2 (torch.export + AOTInductor for CPU; needs a C++ compiler; fp32 only)."""

    def __post_init__(self) -> None:
        require_finite(self, "export")
        if self.parity_rows <= 0:
            raise ConfigError(f"export.parity_rows must be positive, got {echo(self.parity_rows)}")
        for name in ("parity_max_abs_diff", "parity_ne_tolerance"):
            require_range(f"export.{name}", getattr(self, name), low=0.0)


@dataclass
class DiscoverConfig:
    """Contrastive cohort discovery (`discover`, and the discovery stage of `pipeline` and `experiment`)."""

    axes: list[str] = field(default_factory=lambda: ["user_value:quantiles=0.05,0.25,0.5,0.75,0.95"])
    """Axis specs: name:quantiles=q1,q2,... or name:categorical."""
    split: str = "valid"
    """Split the baseline is scored on."""
    metric: DisparityMetric = "js"
    """Disparity metric that ranks cohort pairs."""
    min_rows: int = 1000
    """Minimum rows in each cohort of the chosen pair."""
    min_positives: int = 50
    """Minimum positives in each cohort of the chosen pair."""
    rare_share: float = 0.01
    """Categorical values under this share of rows merge into 'other'."""
    batch_size: int = 4096
    """Rows per batch when scoring the baseline."""

    def __post_init__(self) -> None:
        require_finite(self, "discover")
        if not self.axes:
            raise ConfigError("discover.axes needs at least one axis spec (name:quantiles=... or name:categorical)")
        for name in ("min_rows", "min_positives"):
            if getattr(self, name) < 0:
                raise ConfigError(f"discover.{name} must be >= 0, got {echo(getattr(self, name))}")
        if self.batch_size <= 0:
            raise ConfigError(f"discover.batch_size must be positive, got {echo(self.batch_size)}")
        require_range("discover.rare_share", self.rare_share, low=0.0, high=1.0, high_open=True)


@dataclass
class PipelineConfig:
    """The end-to-end workflow (`c2al-rec pipeline`, `c2al-rec experiment`)."""

    nproc_per_node: int = 2
    """Local ranks for each training stage."""
    concurrent_runs: int = 1
    """`experiment`: training runs at once, each in its own process with cores / (runs x ranks) threads."""
    eval_split: str = "test"
    """Split of the final evaluation and of the scored predictions."""
    init_c2al_from_baseline: bool = False
    """Start C2AL from the trained baseline's weights (aux heads fresh) instead of from scratch."""
    resamples: int = 1000
    """Bootstrap resamples of the NE_diff intervals."""
    lambdas: list[float] = field(default_factory=list)
    """Deprecated, moved to select.candidates (which adds 0, the baseline); a non-empty list is moved there."""
    controls: bool = True
    """`experiment`: also run the random-cohort and no-planted-effect controls."""
    compare_gradsim: bool = False
    """`experiment`: also run C2AL with gradient-similarity gating of the aux loss (Du et al.) per seed."""

    def __post_init__(self) -> None:
        require_finite(self, "pipeline")
        if self.nproc_per_node < 1:
            raise ConfigError(f"pipeline.nproc_per_node must be >= 1, got {echo(self.nproc_per_node)}")
        if self.concurrent_runs < 1:
            raise ConfigError(f"pipeline.concurrent_runs must be >= 1, got {echo(self.concurrent_runs)}")
        if self.resamples < 1:
            raise ConfigError(f"pipeline.resamples must be >= 1, got {echo(self.resamples)}")
        if self.eval_split == SELECTION_SPLIT:
            raise ConfigError(
                f"pipeline.eval_split must not be '{SELECTION_SPLIT}': that split chooses the exported model "
                "(select), so the final report must come from another split (e.g. test)"
            )
        for i, lam in enumerate(self.lambdas):
            require_range(f"pipeline.lambdas[{i}]", lam, low=0.0)
