"""Fused Triton kernels of the FM interaction (CUDA; also run by ``TRITON_INTERPRET=1`` on CPU).

One program per sample: X_b [n, d] and Y_b [n, k] are loaded once, T_b = X_b^T Y_b [d, k] lives
in registers, G_b = X_b T_b is stored; T never goes to global memory. The backward program
reloads X_b, Y_b, dG_b, recomputes T_b, and forms dT_b = X_b^T dG_b, dX_b = dG_b T_b^T + Y_b dT_b^T
and dY_b = X_b dT_b on chip. Blocks are padded to powers of two (>= 16, what ``tl.dot`` needs)
with masked loads, so any n, d, k within the limits work. Only language features present in both
triton 3.6 and 3.9 are used (``tl.dot`` with ``input_precision``, ``tl.trans``, masks).

Operands are widened to fp32 on chip: fp32 inputs use exact ``input_precision="ieee"`` dots,
bf16/fp16 inputs use tf32 dots (more mantissa than bf16; T stays fp32 between the two dots, so
bf16 accumulates in fp32). Widening also sidesteps triton 3.9's interpreter, whose bf16
``tl.dot`` returns garbage on CPU (seen here), so the interpreted tests run the GPU code path.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

try:  # guarded: triton is optional (no wheel on some hosts)
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the host
    HAVE_TRITON = False

MAX_BLOCK_N = 128
MAX_BLOCK_D = 256
MAX_BLOCK_K = 64
# Register budget of one program: elements of the X tile.
MAX_TILE = 128 * 128
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _block(size: int) -> int:
    return max(16, 1 << (max(1, size) - 1).bit_length())


def ineligible_reason(x: Tensor, y: Tensor, interpreting: bool) -> Optional[str]:
    """Why the Triton kernels cannot run these inputs, or None when they can."""
    if not HAVE_TRITON:
        return "triton is not installed"
    if x.device.type != "cuda" and not (interpreting and x.device.type == "cpu"):
        return f"needs CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got {x.device.type}"
    if x.dtype not in _DTYPES:
        return f"dtype {x.dtype} not in {_DTYPES}"
    b, n, d = x.shape
    k = y.shape[-1]
    bn, bd, bk = _block(n), _block(d), _block(k)
    if bn > MAX_BLOCK_N or bd > MAX_BLOCK_D or bk > MAX_BLOCK_K or bn * bd > MAX_TILE:
        return (
            f"shape n={n}, d={d}, k={k} over the on-chip limits (n<={MAX_BLOCK_N}, d<={MAX_BLOCK_D}, k<={MAX_BLOCK_K})"
        )
    return None


if HAVE_TRITON:

    @triton.jit
    def _fm_fwd_kernel(
        X, Y, G,
        n, d, k,
        sxb, sxn, sxd,
        syb, syn, syk,
        sgb, sgn, sgk,
        BN: tl.constexpr, BD: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        b = tl.program_id(0).to(tl.int64)
        rn = tl.arange(0, BN)
        rd = tl.arange(0, BD)
        rk = tl.arange(0, BK)
        mx = (rn[:, None] < n) & (rd[None, :] < d)
        my = (rn[:, None] < n) & (rk[None, :] < k)
        x = tl.load(X + b * sxb + rn[:, None] * sxn + rd[None, :] * sxd, mask=mx, other=0.0)
        y = tl.load(Y + b * syb + rn[:, None] * syn + rk[None, :] * syk, mask=my, other=0.0)
        # Dots take fp32 operands: exact ("ieee") for fp32 inputs, tf32 tensor cores for bf16/fp16
        # inputs (tf32 keeps more mantissa than bf16, and T stays fp32 between the two dots).
        x = x.to(tl.float32)
        y = y.to(tl.float32)
        t = tl.dot(tl.trans(x), y, input_precision=PRECISION)
        g = tl.dot(x, t, input_precision=PRECISION)
        tl.store(G + b * sgb + rn[:, None] * sgn + rk[None, :] * sgk, g.to(G.dtype.element_ty), mask=my)

    @triton.jit
    def _fm_bwd_kernel(
        X, Y, DG, DX, DY,
        n, d, k,
        sxb, sxn, sxd,
        syb, syn, syk,
        sgb, sgn, sgk,
        BN: tl.constexpr, BD: tl.constexpr, BK: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        b = tl.program_id(0).to(tl.int64)
        rn = tl.arange(0, BN)
        rd = tl.arange(0, BD)
        rk = tl.arange(0, BK)
        mx = (rn[:, None] < n) & (rd[None, :] < d)
        my = (rn[:, None] < n) & (rk[None, :] < k)
        x = tl.load(X + b * sxb + rn[:, None] * sxn + rd[None, :] * sxd, mask=mx, other=0.0)
        y = tl.load(Y + b * syb + rn[:, None] * syn + rk[None, :] * syk, mask=my, other=0.0)
        dg = tl.load(DG + b * sgb + rn[:, None] * sgn + rk[None, :] * sgk, mask=my, other=0.0)
        x = x.to(tl.float32)
        y = y.to(tl.float32)
        dg = dg.to(tl.float32)
        xt = tl.trans(x)
        t = tl.dot(xt, y, input_precision=PRECISION)
        dt = tl.dot(xt, dg, input_precision=PRECISION)
        dx = tl.dot(dg, tl.trans(t), input_precision=PRECISION)
        dx += tl.dot(y, tl.trans(dt), input_precision=PRECISION)
        dy = tl.dot(x, dt, input_precision=PRECISION)
        # dX and dY are written contiguous ([B, n, d] and [B, n, k]).
        tl.store(DX + b * n * d + rn[:, None] * d + rd[None, :], dx.to(DX.dtype.element_ty), mask=mx)
        tl.store(DY + b * n * k + rn[:, None] * k + rk[None, :], dy.to(DY.dtype.element_ty), mask=my)


def _num_warps(n: int, d: int) -> int:
    # Larger X tiles spread over more warps to limit register spills.
    return 8 if _block(n) * _block(d) >= 8192 else 4


def _precision(x: Tensor) -> str:
    return "ieee" if x.dtype == torch.float32 else "tf32"


def _y_strides(y: Tensor) -> tuple[int, int, int]:
    if y.dim() == 2:
        return 0, y.stride(0), y.stride(1)
    return y.stride(0), y.stride(1), y.stride(2)


def fm_forward_triton(x: Tensor, y: Tensor) -> Tensor:
    """G [B, n, k] = X (X^T Y) by the fused forward kernel. X [B, n, d]; Y [B, n, k] or [n, k]."""
    b, n, d = x.shape
    k = y.shape[-1]
    g = torch.empty(b, n, k, dtype=x.dtype, device=x.device)
    if b == 0:
        return g
    _fm_fwd_kernel[(b,)](
        x, y, g, n, d, k,
        *x.stride(), *_y_strides(y), *g.stride(),
        BN=_block(n), BD=_block(d), BK=_block(k), PRECISION=_precision(x), num_warps=_num_warps(n, d),
    )  # fmt: skip
    return g


def fm_backward_triton(grad: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(dX [B, n, d], dY like Y) by the fused backward kernel; a static Y's dY is summed over B."""
    b, n, d = x.shape
    k = y.shape[-1]
    dx = torch.empty(b, n, d, dtype=x.dtype, device=x.device)
    static = y.dim() == 2
    # A static Y gets per-sample dY in fp32, reduced over the batch afterwards.
    dy = torch.empty(b, n, k, dtype=torch.float32 if static else y.dtype, device=x.device)
    if b > 0:
        _fm_bwd_kernel[(b,)](
            x, y, grad, dx, dy, n, d, k,
            *x.stride(), *_y_strides(y), *grad.stride(),
            BN=_block(n), BD=_block(d), BK=_block(k), PRECISION=_precision(x), num_warps=_num_warps(n, d),
        )  # fmt: skip
    if static:
        return dx, dy.sum(0).to(y.dtype)
    return dx, dy
