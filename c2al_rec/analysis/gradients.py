"""Gradient diagnostics of the C2AL mechanism (the paper's eq. 10-12).

On the shared dense parameters theta (the DHEN over-arch and dense arch), split the auxiliary
gradient G_aux into the part parallel to the primary gradient G_primary and the orthogonal rest:

    G_par = (<G_aux, G_p> / |G_p|^2) G_p,     G_orth = G_aux - G_par

The parallel part reinforces (or fights, when negative) the primary task; the orthogonal part is
what acts as a functional regulariser. Reported per parameter group and in total.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch


def decompose(g_primary: Sequence[torch.Tensor], g_aux: Sequence[torch.Tensor]) -> dict[str, float]:
    """Cosine, norms, and the parallel / orthogonal split of ``g_aux`` against ``g_primary`` (float64)."""
    p = torch.cat([g.reshape(-1).double() for g in g_primary])
    a = torch.cat([g.reshape(-1).double() for g in g_aux])
    pp = float(p @ p)
    pa = float(p @ a)
    coef = pa / pp if pp > 0 else 0.0
    orth = a - coef * p
    norm_p, norm_a = pp**0.5, float(a.norm())
    return {
        "cosine": pa / (norm_p * norm_a) if norm_p > 0 and norm_a > 0 else 0.0,
        "norm_primary": norm_p,
        "norm_aux": norm_a,
        "parallel_coef": coef,
        "norm_parallel": abs(coef) * norm_p,
        "norm_orthogonal": float(orth.norm()),
    }


def group_parameters(named: Iterable[tuple[str, torch.nn.Parameter]], depth: int = 2) -> dict[str, list[str]]:
    """Parameter names grouped by module path, cut to ``depth`` components plus a layer index."""
    groups: dict[str, list[str]] = {}
    for name, _ in named:
        module = name.split(".")[:-1] or [name]
        key = module[:depth]
        if len(module) > depth and module[depth].isdigit():  # keep the layer index: over_arch.layers.0
            key = module[: depth + 1]
        groups.setdefault(".".join(key), []).append(name)
    return groups


def gradient_alignment(
    loss_primary: torch.Tensor, loss_aux: torch.Tensor, params: dict[str, torch.nn.Parameter]
) -> dict[str, dict[str, float]]:
    """``decompose`` per parameter group and over all ``params`` (``torch.autograd.grad``, no .grad side effects).

    The caller must have computed the losses from embeddings detached from the sparse tables:
    an extra backward through sharded tables would run the fused in-backward optimizer.
    """
    names = list(params)
    tensors = [params[n] for n in names]
    gp = torch.autograd.grad(loss_primary, tensors, retain_graph=True, allow_unused=True)
    ga = torch.autograd.grad(loss_aux, tensors, retain_graph=True, allow_unused=True)
    zero = lambda g, t: torch.zeros_like(t) if g is None else g  # noqa: E731
    gp = [zero(g, t) for g, t in zip(gp, tensors)]
    ga = [zero(g, t) for g, t in zip(ga, tensors)]
    index = {n: i for i, n in enumerate(names)}
    out = {"all": decompose(gp, ga)}
    for group, members in group_parameters(params.items()).items():
        out[group] = decompose([gp[index[m]] for m in members], [ga[index[m]] for m in members])
    return out
