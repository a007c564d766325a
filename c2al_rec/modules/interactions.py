"""DHEN interaction modules: each maps tokens X [B, n, d] to [B, n_out, d] (``num_out_tokens``).

Each class registers under its DHEN module type name (``@register_interaction("fm")``) in
:data:`INTERACTIONS`; the names and each type's settings (``[model.<type>]``) are declared in
``c2al_rec.config.model``, and ``from_config`` builds the module from them.

- :class:`FMInteraction` (``fm``): FM compressed attention (Wukong's FMB), G = X X^T Y via the custom op.
- :class:`LinearCompression` (``linear``): a learned linear map over the token axis (Wukong's LCB).
- :class:`CrossInteraction` (``cross``): one DCN-v2 cross layer on flatten(X).
- :class:`SelfAttention` (``attention``): a post-norm transformer encoder layer over the tokens.
- :class:`DotInteraction` (``dot``): DLRM pairwise dot products, projected back to tokens.
"""

from typing import Any, Callable, Dict, Optional, Sequence, TypeVar

import torch
from torch import Tensor, nn

from c2al_rec.config.model import AttentionConfig, CrossConfig, DotConfig, FMConfig, LinearConfig
from c2al_rec.ops.fm_interaction import KERNELS, fm_interaction_reference

from .mlp import TokenLinear, mlp

INTERACTIONS: Dict[str, Any] = {}
"""DHEN module type name -> its class; each class has ``from_config(num_tokens, dim, settings, device)``."""

_Cls = TypeVar("_Cls")


def register_interaction(name: str) -> Callable[[_Cls], _Cls]:
    """Class decorator: register a DHEN interaction module under ``name`` (a ``[model.<name>]`` table)."""

    def register(cls: _Cls) -> _Cls:
        if name in INTERACTIONS:
            raise ValueError(f"DHEN module type '{name}' is registered twice")
        INTERACTIONS[name] = cls
        return cls

    return register


@register_interaction("fm")
class FMInteraction(nn.Module):
    """FM compressed attention: T = X^T Y [B, d, k], G = X T [B, n, k], then
    flatten(G) -> LayerNorm -> MLP -> [B, n_out, d].

    Y is attentive by default, Y_b = reshape(MLP_att(flatten(W_c X_b))) [B, n, k] with W_c
    compressing n tokens to ``compressed_tokens``; ``attention="static"`` learns one [n, k] Y.

    Args:
        num_tokens: n.
        dim: d.
        rank: k, columns of Y.
        compressed_tokens: tokens after W_c (attentive Y only).
        out_tokens: n_out.
        hidden: hidden sizes of the MLP after the LayerNorm.
        attention: ``"attentive"`` or ``"static"``.
        kernel: FM op kernel (``auto``, ``reference``, ``cpu``, ``triton``).
        device: parameter device.

    Example::

        fm = FMInteraction(num_tokens=9, dim=16, rank=4, compressed_tokens=4, out_tokens=8, hidden=[64])
        out = fm(torch.randn(32, 9, 16))   # [32, 8, 16]
    """

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        rank: int,
        compressed_tokens: int,
        out_tokens: int,
        hidden: Sequence[int],
        attention: str = "attentive",
        kernel: str = "auto",
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        if attention not in ("attentive", "static"):
            raise ValueError(f"model.fm.attention: expected 'attentive' or 'static', got {attention!r}")
        self.num_tokens, self.dim, self.rank = num_tokens, dim, rank
        self.num_out_tokens = out_tokens
        self.attentive = attention == "attentive"
        if kernel not in KERNELS:
            raise ValueError(f"model.fm.kernel: unknown '{kernel}' (expected one of {KERNELS})")
        self.kernel = kernel
        if self.attentive:
            self.compress = TokenLinear(num_tokens, compressed_tokens, device=device)
            self.attention_mlp = mlp(compressed_tokens * dim, [num_tokens * rank], num_tokens * rank, device=device)
        else:
            self.static_y = nn.Parameter(torch.empty(num_tokens, rank, device=device))
        self.norm = nn.LayerNorm(num_tokens * rank, device=device)
        self.out_mlp = mlp(num_tokens * rank, hidden, out_tokens * dim, device=device)
        self.use_reference = False
        """Plain-PyTorch math instead of the custom op (export: TorchScript without the op)."""
        self.record = False
        """Keep the last Y (detached) in ``last_attention`` for diagnostics."""
        self.last_attention: Optional[Tensor] = None
        self.reset_parameters()

    @classmethod
    def from_config(
        cls, num_tokens: int, dim: int, settings: FMConfig, device: Optional[torch.device] = None
    ) -> "FMInteraction":
        s = settings
        return cls(num_tokens, dim, s.rank, s.compressed_tokens, s.out_tokens, s.mlp, s.attention, s.kernel, device)

    def reset_parameters(self) -> None:
        """Initialise the static Y (the only parameter not owned by a Linear / LayerNorm)."""
        if not self.attentive and self.static_y.device.type != "meta":
            nn.init.normal_(self.static_y, std=self.num_tokens**-0.5)

    def attention(self, x: Tensor) -> Tensor:
        """Y for tokens X [B, n, d]: [B, n, k] (attentive) or [n, k] (static)."""
        if self.attentive:
            return self.attention_mlp(self.compress(x).flatten(1)).view(-1, self.num_tokens, self.rank)
        return self.static_y

    def forward(self, x: Tensor) -> Tensor:
        """X [B, n, d] -> [B, n_out, d]."""
        # Under autocast Y (a Linear's output) is bf16 while X (a LayerNorm's) stays fp32: the op's
        # autocast kernel casts both (its precision policy), so nothing here branches on dtype.
        y = self.attention(x)
        if self.record:
            self.last_attention = y.detach()
        if self.use_reference:
            g = fm_interaction_reference(x, y.to(x.dtype))  # [B, n, k]; export-safe: no custom op in the graph
        else:
            # The op itself, not the checking Python wrapper: shapes hold by construction, and a
            # shape check would not fx-trace (TrainPipelineSparseDist traces the training model).
            g = torch.ops.c2al.fm_interaction(x, y, self.kernel)
        return self.out_mlp(self.norm(g.flatten(1))).view(-1, self.num_out_tokens, self.dim)


@register_interaction("linear")
class LinearCompression(nn.Module):
    """Wukong's linear compression block: [B, n, d] -> [B, n_out, d] by a learned [n_out, n] map.

    Example::

        LinearCompression(9, 4)(torch.randn(2, 9, 16)).shape   # [2, 4, 16]
    """

    def __init__(self, num_tokens: int, out_tokens: int, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.num_out_tokens = out_tokens
        self.proj = TokenLinear(num_tokens, out_tokens, device=device)

    @classmethod
    def from_config(
        cls, num_tokens: int, dim: int, settings: LinearConfig, device: Optional[torch.device] = None
    ) -> "LinearCompression":
        return cls(num_tokens, settings.out_tokens, device=device)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


@register_interaction("cross")
class CrossInteraction(nn.Module):
    """One DCN-v2 cross layer on x0 = flatten(X): x0 * (W x0 + b) + x0, back to [B, n, d].

    Example::

        CrossInteraction(9, 16)(torch.randn(2, 9, 16)).shape   # [2, 9, 16]
    """

    def __init__(self, num_tokens: int, dim: int, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.num_out_tokens, self.dim = num_tokens, dim
        self.linear = nn.Linear(num_tokens * dim, num_tokens * dim, device=device)

    @classmethod
    def from_config(
        cls, num_tokens: int, dim: int, settings: CrossConfig, device: Optional[torch.device] = None
    ) -> "CrossInteraction":
        return cls(num_tokens, dim, device=device)

    def forward(self, x: Tensor) -> Tensor:
        x0 = x.flatten(1)
        return (x0 * self.linear(x0) + x0).view(-1, self.num_out_tokens, self.dim)


@register_interaction("attention")
class SelfAttention(nn.Module):
    """A post-norm transformer encoder layer over tokens: [B, n, d] -> [B, n, d].

    Same math as ``nn.TransformerEncoderLayer`` (ReLU FFN of width 2d, no dropout), written with
    Linear layers because ``nn.MultiheadAttention`` keeps its own parameters and has no public
    ``reset_parameters``, so DMP's meta-device materialisation would leave them uninitialised.

    Example::

        SelfAttention(16, heads=2)(torch.randn(2, 9, 16)).shape   # [2, 9, 16]
    """

    def __init__(self, num_tokens: int, dim: int, heads: int, device: Optional[torch.device] = None) -> None:
        super().__init__()
        if heads <= 0 or dim % heads:
            raise ValueError(f"model.attention.heads = {heads} must divide model.embedding_dim = {dim}")
        self.num_out_tokens, self.dim, self.heads = num_tokens, dim, heads
        self.qkv = nn.Linear(dim, 3 * dim, device=device)
        self.out = nn.Linear(dim, dim, device=device)
        self.norm1 = nn.LayerNorm(dim, device=device)
        self.ffn = mlp(dim, [2 * dim], dim, device=device)
        self.norm2 = nn.LayerNorm(dim, device=device)

    @classmethod
    def from_config(
        cls, num_tokens: int, dim: int, settings: AttentionConfig, device: Optional[torch.device] = None
    ) -> "SelfAttention":
        return cls(num_tokens, dim, settings.heads, device=device)

    def forward(self, x: Tensor) -> Tensor:
        hd = self.dim // self.heads
        q, k, v = self.qkv(x).view(-1, self.num_out_tokens, 3, self.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        att = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * hd**-0.5, dim=-1)  # [B, h, n, n]
        ctx = torch.matmul(att, v).transpose(1, 2).reshape(-1, self.num_out_tokens, self.dim)
        x = self.norm1(x + self.out(ctx))
        return self.norm2(x + self.ffn(x))


@register_interaction("dot")
class DotInteraction(nn.Module):
    """DLRM dot interaction: the n(n-1)/2 pairwise dot products of tokens, projected by a Linear
    to ``out_tokens`` tokens: [B, n, d] -> [B, n_out, d].

    Example::

        DotInteraction(9, 16, 4)(torch.randn(2, 9, 16)).shape   # [2, 4, 16]
    """

    def __init__(self, num_tokens: int, dim: int, out_tokens: int, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.num_tokens, self.dim, self.num_out_tokens = num_tokens, dim, out_tokens
        pairs = max(1, num_tokens * (num_tokens - 1) // 2)
        self.proj = nn.Linear(pairs, out_tokens * dim, device=device)

    @classmethod
    def from_config(
        cls, num_tokens: int, dim: int, settings: DotConfig, device: Optional[torch.device] = None
    ) -> "DotInteraction":
        return cls(num_tokens, dim, settings.out_tokens, device=device)

    def forward(self, x: Tensor) -> Tensor:
        n = self.num_tokens
        z = torch.matmul(x, x.transpose(1, 2)).flatten(1)  # [B, n*n]
        if n > 1:
            rows, cols = torch.triu_indices(n, n, 1, device=x.device).unbind(0)
            z = z.index_select(1, rows * n + cols)
        return self.proj(z).view(-1, self.num_out_tokens, self.dim)
