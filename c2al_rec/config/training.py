"""Config sections of a training run: C2AL cohorts, optimisation, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .checks import require_finite, require_range
from .errors import ConfigError, echo


@dataclass
class CohortsConfig:
    """C2AL auxiliary heads: which cohorts, and how much their losses weigh."""

    enabled: bool = False
    """Train the two cohort-contrastive auxiliary heads (False: the baseline)."""
    spec: str = ""
    """Cohort spec JSON (written by `discover` or by hand; quantile form is resolved on train)."""
    lambda_head: float = 0.1
    """Weight of the head-cohort auxiliary loss."""
    lambda_tail: float = 0.1
    """Weight of the tail-cohort auxiliary loss."""
    weighting: Literal["constant", "gradsim"] = "constant"
    """Aux loss weighting: constant lambdas, or gradient-similarity gating (Du et al. 2020)."""
    random_control: bool = False
    """Control: aux labels from random cohorts of the same sizes instead of the spec's cohorts."""

    def __post_init__(self) -> None:
        require_finite(self, "cohorts")
        if self.enabled and not self.spec:
            raise ConfigError("cohorts.enabled = true needs cohorts.spec (a cohort spec JSON)")
        for name in ("lambda_head", "lambda_tail"):
            require_range(f"cohorts.{name}", getattr(self, name), low=0.0)


@dataclass
class TrainConfig:
    """Optimisation, schedule, logging and evaluation cadence."""

    seed: int = 0
    """Seed of parameters and data order."""
    epochs: int = 1
    """Passes over the train split (max_steps, when > 0, stops earlier)."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: run all epochs)."""
    sparse_optimizer: Literal["rowwise_adagrad", "adagrad", "sgd", "adam"] = "rowwise_adagrad"
    """Fused in-backward optimizer of the embedding tables (adam needs a GPU)."""
    sparse_lr: float = 0.05
    """Learning rate of the embedding tables."""
    dense_optimizer: Literal["adam", "adamw", "adagrad", "sgd"] = "adam"
    """Optimizer of the dense parameters."""
    dense_lr: float = 1e-3
    """Peak learning rate of the dense parameters."""
    weight_decay: float = 0.0
    """Dense weight decay."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up steps."""
    decay: Literal["none", "linear", "cosine"] = "none"
    """Learning-rate decay after warm-up, to zero at the last step."""
    grad_clip: float = 0.0
    """Clip the dense gradients' global norm to this (0: no clipping)."""
    log_every: int = 50
    """Log metrics and samples/s every N steps."""
    eval_every: int = 0
    """Validate every N steps (0: only at the end)."""
    eval_batches: int = 0
    """Batches per validation (0: the whole valid split)."""
    bf16: bool = False
    """bf16 autocast of the dense arch (CUDA; on CPU it needs native bf16, e.g. avx512_bf16)."""
    compile_dense: Literal["auto", "on", "off"] = "auto"
    """torch.compile everything after the embedding lookup (dense arch, DHEN, heads); auto: on CUDA only."""
    metrics_every: int = 1
    """Update the training metrics on every Nth step only (1: every step); validation counts every batch."""
    diagnostics_every: int = 0
    """Record gradient alignment (primary vs aux) and FM attention statistics every N steps (0: off)."""
    num_threads: int = 0
    """torch intra-op threads per process (0: cores / local world size)."""
    track: Literal["none", "mlflow"] = "none"
    """Also log params, metrics and metrics.json to an experiment tracker (mlflow: pip install '.[mlflow]')."""
    mlflow_uri: str = ""
    """MLflow tracking URI with train.track = "mlflow" (e.g. file:/path/mlruns; empty: MLflow's default)."""
    mlflow_experiment: str = "c2al-rec"
    """MLflow experiment name the run is logged under."""

    def __post_init__(self) -> None:
        require_finite(self, "train")
        for name in (
            "epochs",
            "max_steps",
            "warmup_steps",
            "log_every",
            "eval_every",
            "eval_batches",
            "diagnostics_every",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {echo(getattr(self, name))}")
        if self.metrics_every < 1:
            raise ConfigError(f"train.metrics_every must be >= 1, got {echo(self.metrics_every)}")
        for name in ("sparse_lr", "dense_lr"):
            require_range(f"train.{name}", getattr(self, name), low=0.0, low_open=True)
        for name in ("weight_decay", "grad_clip"):
            require_range(f"train.{name}", getattr(self, name), low=0.0)


@dataclass
class CheckpointConfig:
    """Distributed checkpoints in the run directory."""

    every_steps: int = 0
    """Save every N steps (0: only at the end)."""
    keep: int = 2
    """Newest checkpoints kept (the best one is kept too)."""
    resume: str = "never"
    """'auto': continue from the newest complete checkpoint; 'never'; or a checkpoint path."""
    init_from: str = ""
    """Start from another run's weights (a run directory or step_<N>); aux heads start fresh."""
    force: bool = False
    """Resume even when the data fingerprint differs from the checkpoint's."""

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise ConfigError(f"checkpoint.keep must be >= 1, got {echo(self.keep)}")
