"""Typed configuration tree: dataclasses per section, TOML files, ``--section.field=value`` overrides.

Every field carries a one-line docstring (the string literal right below it); the CLI shows
those docstrings in ``--help``. Loading is strict: an unknown key or a value of the wrong type
is a ``ConfigError`` naming the key and the file (or the command-line flag) it came from.

Files: one per group of sections (``data``, ``model``, ``training``, ``workflow``), the root
``tree``, and the machinery apart: ``loading`` (TOML, overrides, dump), ``legacy`` (moved keys still
read, with a deprecation line) and ``help`` (field docs).

The names of the pluggable kinds live here too, so loading validates them and the CLI offers
them without importing the implementations: DHEN module types (the ``[model.<type>]`` tables,
``DHEN_MODULE_TYPES``), disparity metrics (``DISPARITY_METRICS``) and public datasets
(``PUBLIC_DATASETS``). The implementations register under those names in the files that define
them, and tests keep each registry's keys equal to the names here.

Example::

    cfg = load_config("launch/configs/smoke.toml", ["--train.max_steps=20", "--model.embedding_dim=8"])
    cfg.train.max_steps  # 20
"""

from .data import PUBLIC_DATASETS, DataConfig, PublicDatasetEntry, SyntheticConfig
from .errors import ConfigError
from .help import config_help, field_docs, iter_fields
from .loading import config_to_dict, dump_toml, load_config, load_config_dict, parse_override
from .model import DHEN_MODULE_TYPES, AttentionConfig, CrossConfig, DotConfig, FMConfig, LinearConfig, ModelConfig
from .select import SELECTION_RULE, SELECTION_SPLIT, SelectConfig
from .training import CheckpointConfig, CohortsConfig, TrainConfig
from .tree import Config
from .workflow import DISPARITY_METRICS, DiscoverConfig, ExportConfig, PipelineConfig

__all__ = [
    "DHEN_MODULE_TYPES",
    "DISPARITY_METRICS",
    "PUBLIC_DATASETS",
    "AttentionConfig",
    "CheckpointConfig",
    "CohortsConfig",
    "Config",
    "ConfigError",
    "CrossConfig",
    "DataConfig",
    "DiscoverConfig",
    "DotConfig",
    "ExportConfig",
    "FMConfig",
    "LinearConfig",
    "ModelConfig",
    "PipelineConfig",
    "PublicDatasetEntry",
    "SELECTION_RULE",
    "SELECTION_SPLIT",
    "SelectConfig",
    "SyntheticConfig",
    "TrainConfig",
    "config_help",
    "config_to_dict",
    "dump_toml",
    "field_docs",
    "iter_fields",
    "load_config",
    "load_config_dict",
    "parse_override",
]
