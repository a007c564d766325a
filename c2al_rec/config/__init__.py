"""Typed configuration tree: dataclasses per section, TOML files, ``--section.field=value`` overrides.

Every field carries a one-line docstring (the string literal right below it); the CLI shows
those docstrings in ``--help``. Loading is strict: an unknown key or a value of the wrong type
is a ``ConfigError`` naming the key and the file (or the command-line flag) it came from.

Files: one per group of sections (``data``, ``model``, ``training``, ``workflow``), the root
``tree``, and the machinery apart: ``loading`` (TOML, overrides, dump) and ``help`` (field docs).

Example::

    cfg = load_config("launch/configs/smoke.toml", ["--train.max_steps=20", "--model.embedding_dim=8"])
    cfg.train.max_steps  # 20
"""

from .data import DataConfig, SyntheticConfig
from .errors import ConfigError
from .help import config_help, field_docs, iter_fields
from .loading import config_to_dict, dump_toml, load_config, load_config_dict, parse_override
from .model import ModelConfig
from .select import SELECTION_RULE, SELECTION_SPLIT, SelectConfig
from .training import CheckpointConfig, CohortsConfig, TrainConfig
from .tree import Config
from .workflow import DiscoverConfig, ExportConfig, PipelineConfig

__all__ = [
    "CheckpointConfig",
    "CohortsConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DiscoverConfig",
    "ExportConfig",
    "ModelConfig",
    "PipelineConfig",
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
