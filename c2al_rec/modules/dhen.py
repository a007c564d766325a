"""DHEN over-arch (Zhang et al. 2022): layers of interaction-module ensembles over tokens.

X_{l+1} = LayerNorm(Combine_i(Module_i(X_l)) + Shortcut(X_l)); Combine concatenates over the
token axis (or sums); Shortcut is the identity when the token count is unchanged, else a learned
linear map over the token axis.
"""

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from c2al_rec.config import ModelConfig

from .interactions import INTERACTIONS
from .mlp import TokenLinear


def build_interaction(name: str, num_tokens: int, cfg: ModelConfig, device: Optional[torch.device]) -> nn.Module:
    """One interaction module of type ``name`` for [B, num_tokens, cfg.embedding_dim] inputs, built by the
    class registered under ``name`` from its settings table ``cfg.<name>``."""
    if name not in INTERACTIONS:
        raise ValueError(f"model.dhen_layers: unknown module '{name}' (expected one of {tuple(INTERACTIONS)})")
    return INTERACTIONS[name].from_config(num_tokens, cfg.embedding_dim, getattr(cfg, name), device)


class DHENLayer(nn.Module):
    """One DHEN layer: [B, n, d] -> [B, n_out, d].

    Args:
        num_tokens: n.
        modules: interaction module type names (``DHEN_MODULE_TYPES``: ``fm``, ``linear``, ...).
        cfg: model config (dims, each module type's ``[model.<type>]`` settings, ``combine``).
        device: parameter device.

    Example::

        layer = DHENLayer(9, ["fm", "linear"], ModelConfig())
        layer(torch.randn(2, 9, 16)).shape   # [2, 16, 16]: 8 FM + 8 linear tokens
    """

    def __init__(
        self, num_tokens: int, modules: Sequence[str], cfg: ModelConfig, device: Optional[torch.device] = None
    ) -> None:
        super().__init__()
        self.interactions = nn.ModuleList([build_interaction(m, num_tokens, cfg, device) for m in modules])
        outs = [m.num_out_tokens for m in self.interactions]
        if cfg.combine == "concat":
            self.num_out_tokens = sum(outs)
        elif cfg.combine == "sum":
            if len(set(outs)) != 1:
                raise ValueError(
                    f"model.combine = 'sum' needs equal token counts from {list(modules)}, got {outs}"
                    " (set the modules' out_tokens alike, e.g. model.fm.out_tokens and model.linear.out_tokens,"
                    " or use concat)"
                )
            self.num_out_tokens = outs[0]
        else:
            raise ValueError(f"model.combine: expected 'concat' or 'sum', got {cfg.combine!r}")
        self.concat = cfg.combine == "concat"
        self.shortcut = (
            nn.Identity() if self.num_out_tokens == num_tokens else TokenLinear(num_tokens, self.num_out_tokens, device)
        )
        self.norm = nn.LayerNorm(cfg.embedding_dim, device=device)

    def forward(self, x: Tensor) -> Tensor:
        outs = [m(x) for m in self.interactions]
        if self.concat:
            y = torch.cat(outs, dim=1)
        else:
            y = outs[0]
            for o in outs[1:]:
                y = y + o
        return self.norm(y + self.shortcut(x))


class DHEN(nn.Module):
    """L DHEN layers: [B, n, d] -> [B, n_L, d] (``num_out_tokens``), one module list per layer."""

    def __init__(self, num_tokens: int, cfg: ModelConfig, device: Optional[torch.device] = None) -> None:
        super().__init__()
        layers = []
        n = num_tokens
        for modules in cfg.dhen_layers:
            layer = DHENLayer(n, modules, cfg, device)
            layers.append(layer)
            n = layer.num_out_tokens
        self.layers = nn.ModuleList(layers)
        self.num_out_tokens = n

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
