"""CPU kernels of the FM interaction: a blocked loop over the batch that keeps T in cache.

Eager autograd of ``G = X (X^T Y)`` runs two ``bmm`` over the whole batch, writes the full
``T [B, d, k]`` to memory, saves it for backward, and in backward runs four more ``bmm`` plus an
add. These kernels walk the batch in chunks small enough that a chunk's operands and products stay
in the core's cache, and never materialise T for the whole batch (nothing but X and Y is saved).
The backward computes dX = S X with S = Y dG^T + dG Y^T ([n, n], built by one ``bmm`` and one
in-place ``baddbmm``), which needs no T at all, where that costs no more multiply-adds than
recomputing T and forming dG T^T + Y dT^T (see ``_use_symmetric``).

Shapes: X [B, n, d], Y [B, n, k] (attentive) or [n, k] (static), G [B, n, k].
"""

from __future__ import annotations

import torch
from torch import Tensor

# Bytes of fp32 X per chunk and per torch thread: 128 samples of [32, 64] at 1 thread, 256 at 2.
# A chunk's operands stay in cache. Measured on the idle 2-core VM (fwd+bwd vs eager at (4096, 32,
# 64, 16)): 0.5-1 MiB per thread 1.63-1.79x at 1 thread and 1.50-1.54x at 2; 4 MiB 1.50 / 1.26;
# 8 MiB 1.23 / 1.24. Under heavy load (other processes on the cores) every chunk's multi-threaded
# bmm waits for a descheduled thread, and larger chunks (fewer calls) held up better there;
# scaling the chunk with the threads keeps each thread's share the same.
_TARGET_CHUNK_BYTES = 1024 * 1024


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """bf16/fp16 accumulate (and compute on CPU) in fp32; fp32/fp64 stay as they are."""
    return torch.promote_types(dtype, torch.float32)


def _chunk(x: Tensor) -> int:
    per_sample = x.shape[1] * x.shape[2] * 4
    target = _TARGET_CHUNK_BYTES * max(1, torch.get_num_threads())
    return max(1, min(x.shape[0], target // max(1, per_sample)))


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


def _use_symmetric(n: int, d: int, k: int) -> bool:
    """Whether dX is computed as S X with S = Y dG^T + dG Y^T ([n, n]) rather than as
    dG T^T + Y dT^T with T recomputed.

    Per sample the first costs n^2 (2k + d) multiply-adds (two K = k GEMMs into S, one K = n
    GEMM into dX) and needs no T; the second 3 n d k (T, then two K = k GEMMs into dX). At the
    CPU benchmark shape (n, d, k) = (32, 64, 16) the counts tie, and S X measured ~25% faster for
    the dX part at 1 thread: its big GEMM has K = n and contiguous, untransposed operands, where
    MKL's small batched GEMMs run faster than the K = k ones with a transposed operand. Ties go
    to S X; beyond them its n^2 cost grows and T is recomputed instead."""
    return n * (2 * k + d) <= 3 * d * k


def fm_backward_cpu(grad: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of G = X (X^T Y), chunked over the batch; nothing but X and Y is saved.

    dT = X^T dG, dY = X dT (summed over the batch for a static Y), and
    dX = dG T^T + Y dT^T = (dG Y^T + Y dG^T) X = S X, since T^T = Y^T X and dT^T = dG^T X.
    Where ``_use_symmetric`` holds (the usual FM shapes: few tokens n against d and k) dX is
    computed as S X with S [n, n]: T is never recomputed, and the dX GEMM has contiguous,
    untransposed operands. Otherwise T is recomputed per chunk and
    dX = dG T^T + Y dT^T with one ``baddbmm``.

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
    dev = x.device
    dx = torch.empty(b, n, d, dtype=x.dtype, device=dev)
    static = y.dim() == 2
    dy = torch.zeros(n, k, dtype=acc, device=dev) if static else torch.empty(b, n, k, dtype=y.dtype, device=dev)
    symmetric = _use_symmetric(n, d, k)
    chunk = _chunk(x)
    dt_buf = torch.empty(chunk, d, k, dtype=acc, device=dev)
    if symmetric:
        s_buf = torch.empty(chunk, n, n, dtype=acc, device=dev)
    else:
        t_buf = torch.empty(chunk, d, k, dtype=acc, device=dev)
    same = acc == x.dtype
    dx_buf = None if same else torch.empty(chunk, n, d, dtype=acc, device=dev)
    dy_buf = None if (same and not static) else torch.empty(chunk, n, k, dtype=acc, device=dev)
    for s in range(0, b, chunk):
        e = min(b, s + chunk)
        c = e - s
        xc = x[s:e].to(acc)
        gc = grad[s:e].to(acc)
        xt = xc.transpose(1, 2)
        dt = torch.bmm(xt, gc, out=dt_buf[:c])
        dyc = dy[s:e] if dy_buf is None else dy_buf[:c]
        torch.bmm(xc, dt, out=dyc)
        if static:
            dy += dyc.sum(0)
        elif dy_buf is not None:
            dy[s:e].copy_(dyc)
        dxc = dx[s:e] if dx_buf is None else dx_buf[:c]
        yc = _y_chunk(y, s, e, acc)
        if symmetric:
            # S = Y dG^T + dG Y^T: the second GEMM accumulates in place (cheaper than adding a
            # transposed copy of the first); then dX = S X with both operands contiguous.
            sym = torch.bmm(yc, gc.transpose(1, 2), out=s_buf[:c])
            sym.baddbmm_(gc, yc.transpose(1, 2))
            torch.bmm(sym, xc, out=dxc)
        else:
            t = torch.bmm(xt, yc, out=t_buf[:c])
            torch.bmm(gc, t.transpose(1, 2), out=dxc)
            dxc.baddbmm_(yc, dt.transpose(1, 2))
        if dx_buf is not None:
            dx[s:e].copy_(dxc)
    return dx, dy.to(y.dtype)
