"""Fused Triton kernels of the FM interaction (CUDA; also run by ``TRITON_INTERPRET=1`` on CPU).

Batch tiling: a program takes ``BB`` samples at once as [BB, n, d] tiles and multiplies them with
batched (3D) ``tl.dot``, so small per-sample tiles (n, k of 16-32) still give the tensor cores
enough work per instruction; ``BB = 1`` uses plain 2D dots (large tiles). The embedding axis d is
walked in chunks of ``BD`` columns, which bounds registers for any d and lets ``num_stages``
pipeline the next X chunk's load under the current chunk's dots:

- forward, per chunk c: T_c = X_c^T Y [BB, BD, k] (on chip), G += X_c T_c; G stored once.
- backward, per chunk c: T_c = X_c^T Y, dT_c = X_c^T dG, dX_c = dG T_c^T + Y dT_c^T (stored),
  dY += X_c dT_c. A static Y's dY is also summed over the program's samples in registers: each of
  a fixed number of programs strides over the batch and writes one [n, k] fp32 partial, so the
  batch reduction needs no [B, n, k] buffer.

T and dT never reach global memory. ``BB``, ``BD``, warps and stages are autotuned per (n, d, k)
on CUDA; the interpreter runs a single small config (tests stay fast and still cover several
chunks and a partial batch tile).

Precision (the op's policy, see :mod:`c2al_rec.ops.fm_interaction`): bf16/fp16 inputs use
bf16/fp16 tensor-core dots with fp32 accumulation, T rounded to the input dtype between the two
dots as autocast's eager bmm rounds it; fp32 inputs use tf32 dots where torch allows tf32 for
matmuls, exact ``ieee`` dots otherwise. Under the interpreter bf16 ``tl.dot`` returns wrong values
(triton 3.9), so there the operands are widened to fp32 (``DOT_F32``) after the same rounding.
Only language features present in both triton 3.6 and 3.9 are used.
"""

from __future__ import annotations

import os
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
MAX_BLOCK_K = 64
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Register budgets (elements) of one program: the X chunk [BB, BN, BD] and each [BB, BN, BK] tile.
_MAX_X_TILE = 16384
_MAX_NK_TILE = 8192
# Programs of the static-Y backward (each writes one [n, k] fp32 partial of dY).
_STATIC_PROGRAMS_PER_SM = 4
_INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


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
    if x.dtype != y.dtype:
        return f"X is {x.dtype} but Y is {y.dtype}"
    n, k = x.shape[1], y.shape[-1]
    if _block(n) > MAX_BLOCK_N or _block(k) > MAX_BLOCK_K:
        return f"shape n={n}, k={k} over the on-chip limits (n<={MAX_BLOCK_N}, k<={MAX_BLOCK_K})"
    return None


def _configs(interpreting: bool) -> list:
    if interpreting:
        # One config: no benchmarking; BD=16 walks several d chunks, BB=2 leaves a partial tile for odd B.
        return [triton.Config({"BB": 2, "BD": 16}, num_warps=4, num_stages=1)]
    return [
        triton.Config({"BB": bb, "BD": bd}, num_warps=w, num_stages=s)
        for bb in (1, 2, 4, 8, 16, 32)
        for bd in (32, 64, 128)
        for w in (4, 8)
        for s in (2, 3)
    ]


def _prune(configs: list, named_args: dict, **kwargs) -> list:  # noqa: ANN003 (triton's hook signature)
    """At most ~12 configs per (n, d, k): each compile costs about a second.

    Tiles must fit the register budget; BD is 64 or the whole (padded) d; BB is 1 (2D dots, wgmma
    on Hopper for large tiles), the largest batch tile that fits, and half of it; 4 or 8 warps;
    3 stages when there are several d chunks to pipeline, else 2.
    """
    bn, bk = kwargs["BN"], kwargs["BK"]
    bd_full = max(32, _block(named_args["d"]))
    bds = {min(64, bd_full), bd_full}

    def fits(bb: int, bd: int) -> bool:
        return bb * bn * bd <= _MAX_X_TILE and bb * bn * bk <= _MAX_NK_TILE

    largest = max([c.kwargs["BB"] for c in configs if fits(c.kwargs["BB"], min(bds))] or [1])
    bbs = {1, largest, max(1, largest // 2)}
    kept = [
        c
        for c in configs
        if c.kwargs["BB"] in bbs
        and c.kwargs["BD"] in bds
        and fits(c.kwargs["BB"], c.kwargs["BD"])
        and c.num_stages == (3 if c.kwargs["BD"] < bd_full else 2)
    ]
    return kept or configs[:1]


if HAVE_TRITON:
    # cache_results: the tuned config is kept on disk (triton's cache), so the test, fm_kernel and
    # dhen_step processes of one GPU check tune each (n, d, k) once.
    _AUTOTUNE = dict(
        configs=_configs(_INTERPRETING),
        key=["n", "d", "k", "STATIC"],
        prune_configs_by={"early_config_prune": _prune},
        cache_results=True,
    )

    @triton.jit
    def _bdot(a, b, acc, BB: tl.constexpr, PRECISION: tl.constexpr):
        """acc + a @ b per sample: a [BB, M, K], b [BB, K, N], acc [BB, M, N] fp32."""
        if BB == 1:
            a2 = tl.reshape(a, (a.shape[1], a.shape[2]))
            b2 = tl.reshape(b, (b.shape[1], b.shape[2]))
            c2 = tl.reshape(acc, (acc.shape[1], acc.shape[2]))
            c2 = tl.dot(a2, b2, c2, input_precision=PRECISION)
            return tl.reshape(c2, (1, acc.shape[1], acc.shape[2]))
        else:
            return tl.dot(a, b, acc, input_precision=PRECISION)

    @triton.jit
    def _operand(v, DOT_F32: tl.constexpr):
        # Interpreter only: widen bf16/fp16 operands (its low-precision tl.dot is wrong).
        if DOT_F32:
            return v.to(tl.float32)
        else:
            return v

    @triton.autotune(**_AUTOTUNE)
    @triton.jit
    def _fm_fwd_kernel(
        X, Y, G,
        B, n, d, k,
        sxb, sxn, sxd,
        syb, syn, syk,
        sgb, sgn, sgk,
        STATIC: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
        PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
        BB: tl.constexpr, BD: tl.constexpr,
    ):  # fmt: skip
        rb = tl.arange(0, BB).to(tl.int64)  # int64 offsets: B * n * d may pass 2^31
        rn = tl.arange(0, BN)
        rd = tl.arange(0, BD)
        rk = tl.arange(0, BK)
        num_groups = tl.cdiv(B, BB)
        for grp in range(tl.program_id(0), num_groups, tl.num_programs(0)):
            sb = grp * BB + rb  # [BB] sample indices
            mnk = (sb[:, None, None] < B) & (rn[None, :, None] < n) & (rk[None, None, :] < k)
            y = tl.load(
                Y + sb[:, None, None] * syb + rn[None, :, None] * syn + rk[None, None, :] * syk, mask=mnk, other=0.0
            )
            y = _operand(y, DOT_F32)
            acc = tl.zeros((BB, BN, BK), dtype=tl.float32)
            for d0 in range(0, d, BD):
                cd = d0 + rd
                mnd = (sb[:, None, None] < B) & (rn[None, :, None] < n) & (cd[None, None, :] < d)
                x = tl.load(
                    X + sb[:, None, None] * sxb + rn[None, :, None] * sxn + cd[None, None, :] * sxd, mask=mnd, other=0.0
                )
                x = _operand(x, DOT_F32)
                t = _bdot(tl.permute(x, (0, 2, 1)), y, tl.zeros((BB, BD, BK), dtype=tl.float32), BB, PRECISION)
                # T rounded to the input dtype, as the second autocast bmm would see it (no-op for fp32)
                t = t.to(X.dtype.element_ty).to(x.dtype)
                acc = _bdot(x, t, acc, BB, PRECISION)
            g_ptr = G + sb[:, None, None] * sgb + rn[None, :, None] * sgn + rk[None, None, :] * sgk
            tl.store(g_ptr, acc.to(G.dtype.element_ty), mask=mnk)

    @triton.autotune(**_AUTOTUNE)
    @triton.jit
    def _fm_bwd_kernel(
        X, Y, DG, DX, DY,
        B, n, d, k,
        sxb, sxn, sxd,
        syb, syn, syk,
        sgb, sgn, sgk,
        STATIC: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
        PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
        BB: tl.constexpr, BD: tl.constexpr,
    ):  # fmt: skip
        # DX is written contiguous [B, n, d]; DY contiguous [B, n, k] (attentive) or, for a static
        # Y, one fp32 [n, k] partial per program, [num_programs, n, k].
        pid = tl.program_id(0)
        rb = tl.arange(0, BB).to(tl.int64)  # int64 offsets: B * n * d may pass 2^31
        rn = tl.arange(0, BN)
        rd = tl.arange(0, BD)
        rk = tl.arange(0, BK)
        dy_static = tl.zeros((BN, BK), dtype=tl.float32)
        num_groups = tl.cdiv(B, BB)
        for grp in range(pid, num_groups, tl.num_programs(0)):
            sb = grp * BB + rb
            mnk = (sb[:, None, None] < B) & (rn[None, :, None] < n) & (rk[None, None, :] < k)
            y = tl.load(
                Y + sb[:, None, None] * syb + rn[None, :, None] * syn + rk[None, None, :] * syk, mask=mnk, other=0.0
            )
            dg = tl.load(
                DG + sb[:, None, None] * sgb + rn[None, :, None] * sgn + rk[None, None, :] * sgk, mask=mnk, other=0.0
            )
            y = _operand(y, DOT_F32)
            dg = _operand(dg, DOT_F32)
            dy = tl.zeros((BB, BN, BK), dtype=tl.float32)
            for d0 in range(0, d, BD):
                cd = d0 + rd
                mnd = (sb[:, None, None] < B) & (rn[None, :, None] < n) & (cd[None, None, :] < d)
                x = tl.load(
                    X + sb[:, None, None] * sxb + rn[None, :, None] * sxn + cd[None, None, :] * sxd, mask=mnd, other=0.0
                )
                x = _operand(x, DOT_F32)
                xt = tl.permute(x, (0, 2, 1))
                zeros_dk = tl.zeros((BB, BD, BK), dtype=tl.float32)
                t = _bdot(xt, y, zeros_dk, BB, PRECISION).to(X.dtype.element_ty).to(x.dtype)
                dt = _bdot(xt, dg, zeros_dk, BB, PRECISION).to(X.dtype.element_ty).to(x.dtype)
                dx = _bdot(dg, tl.permute(t, (0, 2, 1)), tl.zeros((BB, BN, BD), dtype=tl.float32), BB, PRECISION)
                dx = _bdot(y, tl.permute(dt, (0, 2, 1)), dx, BB, PRECISION)
                dx_ptr = DX + sb[:, None, None] * (n * d) + rn[None, :, None] * d + cd[None, None, :]
                tl.store(dx_ptr, dx.to(DX.dtype.element_ty), mask=mnd)
                dy = _bdot(x, dt, dy, BB, PRECISION)
            if STATIC:
                dy_static += tl.sum(dy, axis=0)  # rows past B loaded zeros: they add nothing
            else:
                dy_ptr = DY + sb[:, None, None] * (n * k) + rn[None, :, None] * k + rk[None, None, :]
                tl.store(dy_ptr, dy.to(DY.dtype.element_ty), mask=mnk)
        if STATIC:
            mk = (rn[:, None] < n) & (rk[None, :] < k)
            tl.store(DY + pid * (n * k) + rn[:, None] * k + rk[None, :], dy_static, mask=mk)


def dot_precision(dtype: torch.dtype, device_type: str) -> str:
    """``input_precision`` of the kernels' dots: tf32 for fp32 on CUDA only where torch allows tf32
    matmuls (``torch.backends.cuda.matmul.allow_tf32``, or a float32 matmul precision other than
    "highest"), else exact "ieee"; bf16/fp16 operands ignore it (tensor cores, fp32 accumulation)."""
    if dtype == torch.float32 and device_type == "cuda":
        if torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest":
            return "tf32"
    return "ieee"


def _y_strides(y: Tensor) -> tuple[int, int, int]:
    if y.dim() == 2:
        return 0, y.stride(0), y.stride(1)
    return y.stride(0), y.stride(1), y.stride(2)


def _meta(x: Tensor, y: Tensor) -> dict:
    return dict(
        STATIC=y.dim() == 2,
        BN=_block(x.shape[1]),
        BK=_block(y.shape[-1]),
        PRECISION=dot_precision(x.dtype, x.device.type),
        DOT_F32=_INTERPRETING and x.dtype != torch.float32,
    )


def _static_programs(x: Tensor) -> int:
    if x.device.type == "cuda":
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        return max(1, min(x.shape[0], _STATIC_PROGRAMS_PER_SM * sms))
    return max(1, min(x.shape[0], 4))


def fm_forward_triton(x: Tensor, y: Tensor) -> Tensor:
    """G [B, n, k] = X (X^T Y) by the fused forward kernel.

    Args:
        x: X [B, n, d], any strides.
        y: Y [B, n, k] or [n, k] (static), same dtype as ``x``.

    Returns:
        G [B, n, k] in ``x.dtype``.
    """
    b, n, d = x.shape
    k = y.shape[-1]
    g = torch.empty(b, n, k, dtype=x.dtype, device=x.device)
    if b == 0:
        return g
    meta = _meta(x, y)
    if meta["STATIC"]:
        # A fixed program count: each program strides over the batch (Y is loaded once per tile).
        progs = _static_programs(x)
        grid = lambda _: (progs,)  # noqa: E731
    else:
        grid = lambda m: (triton.cdiv(b, m["BB"]),)  # noqa: E731
    _fm_fwd_kernel[grid](x, y, g, b, n, d, k, *x.stride(), *_y_strides(y), *g.stride(), **meta)
    return g


def fm_backward_triton(grad: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(dX [B, n, d], dY like Y) by the fused backward kernel; a static Y's dY is summed over B.

    Args:
        grad: dG [B, n, k], same dtype as ``x``.
        x: X [B, n, d].
        y: Y [B, n, k] or [n, k].
    """
    b, n, d = x.shape
    k = y.shape[-1]
    dx = torch.empty(b, n, d, dtype=x.dtype, device=x.device)
    meta = _meta(x, y)
    if meta["STATIC"]:
        progs = _static_programs(x) if b > 0 else 1
        dy = torch.zeros(progs, n, k, dtype=torch.float32, device=x.device)  # one fp32 partial per program
        grid = lambda _: (progs,)  # noqa: E731
    else:
        dy = torch.empty(b, n, k, dtype=y.dtype, device=x.device)
        grid = lambda m: (triton.cdiv(b, m["BB"]),)  # noqa: E731
    if b > 0:
        _fm_bwd_kernel[grid](x, y, grad, dx, dy, b, n, d, k, *x.stride(), *_y_strides(y), *grad.stride(), **meta)
    if meta["STATIC"]:
        return dx, dy.sum(0).to(y.dtype)
    return dx, dy
