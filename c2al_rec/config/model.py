"""Config section of the model: sparse arch, DHEN over-arch, heads; one table per DHEN module type.

The DHEN module types are the ``[model.<type>]`` tables of :class:`ModelConfig` (fields made with
:func:`dhen_module`): their names are :data:`DHEN_MODULE_TYPES`, which validates
``model.dhen_layers`` at load, and ``c2al_rec.modules.interactions`` registers one implementation
under each name (a test keeps the two equal). Adding a module type: a settings dataclass and a
``dhen_module`` field here, an ``@register_interaction`` class there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .errors import ConfigError, echo


def _require_positive(section: str, obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{section}.{name} must be positive, got {echo(getattr(obj, name))}")


def _require_positive_sizes(section: str, obj: Any, *names: str) -> None:
    for name in names:
        sizes = getattr(obj, name)
        if any(size <= 0 for size in sizes):
            raise ConfigError(f"{section}.{name}: hidden sizes must be positive, got {echo(sizes)}")


@dataclass
class FMConfig:
    """FM compressed attention (Wukong's FMB): G = X X^T Y, flatten -> LayerNorm -> MLP -> tokens."""

    rank: int = 8
    """k: columns of the FM attention Y ([B, n, k])."""
    attention: Literal["attentive", "static"] = "attentive"
    """FM attention Y: per-sample MLP of the compressed tokens, or one learned [n, k] matrix."""
    compressed_tokens: int = 8
    """Tokens after W_c compresses the token axis, input of the attention MLP."""
    out_tokens: int = 8
    """Tokens the FM module emits."""
    mlp: list[int] = field(default_factory=lambda: [128])
    """Hidden sizes of the MLP after flatten(G)."""
    kernel: Literal["auto", "reference", "cpu", "triton"] = "auto"
    """FM op kernel: auto dispatches by device; reference forces plain PyTorch math."""

    def __post_init__(self) -> None:
        _require_positive("model.fm", self, "rank", "compressed_tokens", "out_tokens")
        _require_positive_sizes("model.fm", self, "mlp")


@dataclass
class LinearConfig:
    """Linear compression over the token axis (Wukong's LCB)."""

    out_tokens: int = 8
    """Tokens the linear-compression module emits."""

    def __post_init__(self) -> None:
        _require_positive("model.linear", self, "out_tokens")


@dataclass
class CrossConfig:
    """One DCN-v2 cross layer on flatten(X) (no settings)."""


@dataclass
class AttentionConfig:
    """Self-attention over the tokens (a post-norm transformer encoder layer)."""

    heads: int = 2
    """Heads of the self-attention module (must divide model.embedding_dim)."""

    def __post_init__(self) -> None:
        _require_positive("model.attention", self, "heads")


@dataclass
class DotConfig:
    """DLRM dot interaction: pairwise token dot products projected back to tokens."""

    out_tokens: int = 8
    """Tokens the DLRM dot-interaction module emits."""

    def __post_init__(self) -> None:
        _require_positive("model.dot", self, "out_tokens")


def dhen_module(settings: type) -> Any:
    """A ``ModelConfig`` field that declares a DHEN module type: its name is the field's, its
    ``[model.<name>]`` table holds ``settings``."""
    return field(default_factory=settings, metadata={"dhen_module": True})


@dataclass
class ModelConfig:
    """Sparse arch, DHEN over-arch and heads."""

    embedding_dim: int = 16
    """Embedding dim d shared by every table and by the dense token."""
    dense_arch: list[int] = field(default_factory=lambda: [64])
    """Hidden sizes of the dense MLP that maps dense features to one d-dim token."""
    dhen_layers: list[list[DHENModuleType]] = field(default_factory=lambda: [["fm", "linear"], ["fm", "linear"]])
    """Interaction modules per DHEN layer (each a [model.<type>] table below)."""
    combine: Literal["concat", "sum"] = "concat"
    """How a DHEN layer combines its modules' outputs: concat over tokens, or sum."""
    repr_mlp: list[int] = field(default_factory=list)
    """Optional MLP on flatten(final X) giving h (empty: h is the flattened tokens)."""
    primary_head: list[int] = field(default_factory=lambda: [64])
    """Hidden sizes of the primary head MLP (-> one logit)."""
    aux_head: list[int] = field(default_factory=lambda: [32])
    """Hidden sizes of each C2AL auxiliary head MLP (-> one logit)."""
    aux_projection: int = 0
    """Width of a linear projection of h that both aux heads read (0: each reads h itself)."""
    fm: FMConfig = dhen_module(FMConfig)
    """DHEN module 'fm': FM compressed attention."""
    linear: LinearConfig = dhen_module(LinearConfig)
    """DHEN module 'linear': linear compression over the token axis."""
    cross: CrossConfig = dhen_module(CrossConfig)
    """DHEN module 'cross': a DCN-v2 cross layer."""
    attention: AttentionConfig = dhen_module(AttentionConfig)
    """DHEN module 'attention': self-attention over the tokens."""
    dot: DotConfig = dhen_module(DotConfig)
    """DHEN module 'dot': DLRM dot interaction."""

    # Flat keys of the config before the per-module tables: still read, with a deprecation line each.
    LEGACY_KEYS: ClassVar[dict[str, tuple[str, str]]] = {
        "fm_rank": ("fm", "rank"),
        "fm_attention": ("fm", "attention"),
        "fm_compressed_tokens": ("fm", "compressed_tokens"),
        "fm_out_tokens": ("fm", "out_tokens"),
        "fm_mlp": ("fm", "mlp"),
        "fm_kernel": ("fm", "kernel"),
        "linear_out_tokens": ("linear", "out_tokens"),
        "attention_heads": ("attention", "heads"),
        "dot_out_tokens": ("dot", "out_tokens"),
    }

    def __post_init__(self) -> None:
        _require_positive("model", self, "embedding_dim")
        _require_positive_sizes("model", self, "dense_arch", "repr_mlp", "primary_head", "aux_head")
        if self.aux_projection < 0:
            raise ConfigError(
                f"model.aux_projection must be >= 0 (0: aux heads read h), got {echo(self.aux_projection)}"
            )
        if not self.dhen_layers or any(not layer for layer in self.dhen_layers):
            raise ConfigError("model.dhen_layers needs at least one layer, each with at least one module")
        for i, layer in enumerate(self.dhen_layers):
            for j, name in enumerate(layer):
                if name not in DHEN_MODULE_TYPES:
                    raise ConfigError(
                        f"model.dhen_layers[{i}][{j}]: unknown module '{name}' (expected one of {DHEN_MODULE_TYPES})"
                    )
        used = {name for layer in self.dhen_layers for name in layer}
        if "attention" in used and self.embedding_dim % self.attention.heads:
            raise ConfigError(
                f"model.attention.heads = {self.attention.heads} must divide model.embedding_dim = {self.embedding_dim}"
            )


DHEN_MODULE_TYPES: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(ModelConfig) if f.metadata.get("dhen_module")
)
"""Names of the DHEN module types, in declaration order (the ``[model.<type>]`` tables)."""
DHENModuleType = Literal[DHEN_MODULE_TYPES]  # type: ignore[valid-type]  # config loading checks names against it
