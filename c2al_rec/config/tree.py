"""The root of the config tree: one field per section."""

from __future__ import annotations

from dataclasses import dataclass, field

from .data import DataConfig
from .model import ModelConfig
from .select import SelectConfig
from .training import CheckpointConfig, CohortsConfig, TrainConfig
from .workflow import DiscoverConfig, ExportConfig, PipelineConfig


@dataclass
class Config:
    """The whole run configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    """Data source and batching."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model architecture."""
    cohorts: CohortsConfig = field(default_factory=CohortsConfig)
    """C2AL cohorts and aux loss weights."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation and cadence."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpointing and resume."""
    export: ExportConfig = field(default_factory=ExportConfig)
    """Export and parity gate."""
    discover: DiscoverConfig = field(default_factory=DiscoverConfig)
    """Cohort discovery of the pipeline."""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    """End-to-end workflow settings."""
    select: SelectConfig = field(default_factory=SelectConfig)
    """Which candidate model is exported, chosen on the valid split."""

    def __post_init__(self) -> None:
        if self.pipeline.lambdas:  # an old config: one list of lambdas now lives in select.candidates
            moved = sorted({0.0, *self.pipeline.lambdas})  # load_config says so, once
            self.select = SelectConfig(**{**self.select.__dict__, "candidates": moved})
            self.pipeline.lambdas = []
