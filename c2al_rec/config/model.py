"""Config section of the model: sparse arch, DHEN over-arch, heads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .errors import ConfigError, echo


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
    aux_projection: int = 0
    """Width of a linear projection of h that both aux heads read (0: each reads h itself)."""

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
                raise ConfigError(f"model.{name} must be positive, got {echo(getattr(self, name))}")
        for name in ("dense_arch", "fm_mlp", "repr_mlp", "primary_head", "aux_head"):
            sizes = getattr(self, name)
            if any(size <= 0 for size in sizes):
                raise ConfigError(f"model.{name}: hidden sizes must be positive, got {echo(sizes)}")
        if self.aux_projection < 0:
            raise ConfigError(
                f"model.aux_projection must be >= 0 (0: aux heads read h), got {echo(self.aux_projection)}"
            )
        if not self.dhen_layers or any(not layer for layer in self.dhen_layers):
            raise ConfigError("model.dhen_layers needs at least one layer, each with at least one module")
