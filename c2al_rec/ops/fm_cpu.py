"""CPU kernels of the FM interaction: a blocked loop over the batch that keeps T in cache.

Eager autograd of ``G = X (X^T Y)`` runs two ``bmm`` over the whole batch, writes the full
``T [B, d, k]`` to memory, saves it for backward, and in backward runs four more ``bmm`` plus an
add. These kernels walk the batch in chunks small enough that a chunk's X, Y, T (and dG, dT) stay
in the core's cache, never materialise T for the whole batch, and fuse the two terms of dX with
``baddbmm``. The backward recomputes T from the saved X and Y (nothing else is saved).

Shapes: X [B, n, d], Y [B, n, k] (attentive) or [n, k] (static), G [B, n, k].
"""

from __future__ import annotations

import torch
from torch import Tensor

# Bytes of fp32 X per chunk: 512 samples of [32, 64]. On an idle 2-core machine 128-512 samples
# were best (4096, i.e. no chunking, was ~1.4x slower in fwd+bwd); when other processes compete
# for the cores every multi-threaded bmm waits for a descheduled thread, so the cost grows with
# the number of chunks: 512 keeps that count low at little cost when idle.
_TARGET_CHUNK_BYTES = 4 * 1024 * 1024


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """bf16/fp16 accumulate (and compute on CPU) in fp32; fp32/fp64 stay as they are."""
    return torch.promote_types(dtype, torch.float32)


def _chunk(x: Tensor) -> int:
    per_sample = x.shape[1] * x.shape[2] * 4
    return max(1, min(x.shape[0], _TARGET_CHUNK_BYTES // max(1, per_sample)))


def _y_chunk(y: Tensor, s: int, e: int, acc: torch.dtype) -> Tensor:
    if y.dim() == 2:
        return y.to(acc).unsqueeze(0).expand(e - s, -1, -1)
    return y[s:e].to(acc)


def fm_forward_cpu(x: Tensor, y: Tensor) -> Tensor:
    """G = X (X^T Y), chunked over the batch.

    Args:
        x: [B, n, d] float tensor (any strides).
        y: [B, n, k] or [n, k], same dtype as ``x``.

    Returns:
        G [B, n, k] in ``x.dtype`` (bf16 inputs are computed in fp32 and rounded once).
    """
    b, n, d = x.shape
    k = y.shape[-1]
    acc = _acc_dtype(x.dtype)
    out = torch.empty(b, n, k, dtype=x.dtype, device=x.device)
    chunk = _chunk(x)
    t_buf = torch.empty(chunk, d, k, dtype=acc, device=x.device)
    g_buf = out if acc == x.dtype else torch.empty(chunk, n, k, dtype=acc, device=x.device)
    for s in range(0, b, chunk):
        e = min(b, s + chunk)
        xc = x[s:e].to(acc)
        yc = _y_chunk(y, s, e, acc)
        t = t_buf[: e - s]
        torch.bmm(xc.transpose(1, 2), yc, out=t)
        if g_buf is out:
            torch.bmm(xc, t, out=out[s:e])
        else:
            g = g_buf[: e - s]
            torch.bmm(xc, t, out=g)
            out[s:e].copy_(g)
    return out


def fm_backward_cpu(grad: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of G = X (X^T Y) with T recomputed per chunk.

    dT = X^T dG, dX = dG T^T + Y dT^T, dY = X dT (summed over the batch for a static Y).

    Args:
        grad: dG [B, n, k].
        x: [B, n, d].
        y: [B, n, k] or [n, k].

    Returns:
        (dX [B, n, d], dY shaped like ``y``), in the inputs' dtypes.
    """
    b, n, d = x.shape
    k = y.shape[-1]
    acc = _acc_dtype(x.dtype)
    dx = torch.empty(b, n, d, dtype=x.dtype, device=x.device)
    static = y.dim() == 2
    dy = (
        torch.zeros(n, k, dtype=acc, device=x.device)
        if static
        else torch.empty(b, n, k, dtype=y.dtype, device=x.device)
    )
    chunk = _chunk(x)
    t_buf = torch.empty(chunk, d, k, dtype=acc, device=x.device)
    dt_buf = torch.empty(chunk, d, k, dtype=acc, device=x.device)
    same = acc == x.dtype
    dx_buf = None if same else torch.empty(chunk, n, d, dtype=acc, device=x.device)
    dy_buf = None if (same and not static) else torch.empty(chunk, n, k, dtype=acc, device=x.device)
    for s in range(0, b, chunk):
        e = min(b, s + chunk)
        c = e - s
        xc = x[s:e].to(acc)
        yc = _y_chunk(y, s, e, acc)
        gc = grad[s:e].to(acc)
        xt = xc.transpose(1, 2)
        t = torch.bmm(xt, yc, out=t_buf[:c])
        dt = torch.bmm(xt, gc, out=dt_buf[:c])
        dxc = dx[s:e] if dx_buf is None else dx_buf[:c]
        torch.bmm(gc, t.transpose(1, 2), out=dxc)
        dxc.baddbmm_(yc, dt.transpose(1, 2))
        if dx_buf is not None:
            dx[s:e].copy_(dxc)
        dyc = dy[s:e] if dy_buf is None else dy_buf[:c]
        torch.bmm(xc, dt, out=dyc)
        if static:
            dy += dyc.sum(0)
        elif dy_buf is not None:
            dy[s:e].copy_(dyc)
    return dx, dy.to(y.dtype)
