"""A plain ReLU MLP built from Linear layers (meta-device safe: Linear has reset_parameters)."""

from typing import Optional, Sequence

import torch
from torch import nn


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: Optional[int] = None,
    device: Optional[torch.device] = None,
) -> nn.Sequential:
    """Linear -> ReLU per hidden size, then a final Linear to ``out_features`` (no activation).

    Args:
        in_features: input width.
        hidden: hidden sizes (may be empty).
        out_features: width of the last Linear; None ends after the last hidden ReLU (or is the
            identity when ``hidden`` is empty too).
        device: where the parameters live (``meta`` is fine).

    Example::

        head = mlp(64, [32], 1)   # [B, 64] -> [B, 1]
    """
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        if h <= 0:
            raise ValueError(f"MLP hidden sizes must be positive, got {list(hidden)}")
        layers += [nn.Linear(width, h, device=device), nn.ReLU()]
        width = h
    if out_features is not None:
        layers.append(nn.Linear(width, out_features, device=device))
    return nn.Sequential(*layers)


class TokenLinear(nn.Module):
    """A learned linear map over the token axis: [B, n_in, d] -> [B, n_out, d].

    Args:
        in_tokens: n_in.
        out_tokens: n_out.
        device: parameter device.
    """

    def __init__(self, in_tokens: int, out_tokens: int, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.proj = nn.Linear(in_tokens, out_tokens, bias=False, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.transpose(1, 2)).transpose(1, 2)
