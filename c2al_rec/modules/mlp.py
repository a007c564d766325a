"""A plain ReLU MLP built from Linear layers (meta-device safe: Linear has reset_parameters)."""

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
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


def mlps_on_shared_input(x: torch.Tensor, mlps: Sequence[nn.Sequential]) -> List[torch.Tensor]:
    """Run several :func:`mlp` s on the same input, their first layers as one GEMM.

    Same function and parameters as ``[m(x) for m in mlps]``: the first Linear weights are
    concatenated per call and the product is split back. One GEMM reads ``x`` once in forward and
    gives one ``x`` gradient in backward; separate layers each re-read ``x`` (and backward adds
    their ``x`` gradients), which on CPU cost the C2AL aux heads more than their FLOPs
    (``benchmarks.train_throughput``).

    Args:
        x: [B, in_features], shared input.
        mlps: MLPs built by :func:`mlp` (each starts with an ``nn.Linear`` on ``in_features``).

    Returns:
        One output per MLP, ``[B, out_i]``.

    Example::

        primary, aux = mlps_on_shared_input(h, [primary_head, aux_head])
    """
    if len(mlps) == 1:
        return [mlps[0](x)]
    firsts = [m[0] for m in mlps]
    weight = torch.cat([f.weight for f in firsts])
    bias = torch.cat([f.bias for f in firsts])
    # split, not slices: its backward is one cat, where each slice's backward fills a zero tensor
    # of the whole product and autograd adds them up
    parts = torch.split(F.linear(x, weight, bias), [f.out_features for f in firsts], dim=1)
    outs = []
    for i, m in enumerate(mlps):  # indexed, not iterated: fx cannot iterate a traced split
        y = parts[i]
        for layer in list(m)[1:]:  # the registered layers themselves (a sliced Sequential is not a submodule)
            y = layer(y)
        outs.append(y)
    return outs


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
