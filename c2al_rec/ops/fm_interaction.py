"""The FM interaction op ``c2al::fm_interaction``: G = X X^T Y computed as T = X^T Y, G = X T.

One op name, several kernels, chosen per call by device and eligibility:

- ``reference``: plain PyTorch (two matmuls in fp32 or wider); defines correctness and is the
  fallback. :func:`fm_interaction_reference` is this math as a differentiable function (export
  uses it, because a TorchScript file calling a Python-registered op loads only where the op is
  registered).
- ``cpu``: the blocked loop of :mod:`c2al_rec.ops.fm_cpu` (T stays in cache, never saved).
- ``triton``: the fused per-sample kernels of :mod:`c2al_rec.ops.fm_triton` (CUDA; also runs under
  ``TRITON_INTERPRET=1`` on CPU tensors, which is how it is tested without a GPU).

Autograd is registered by hand: only X and Y are saved; the backward op recomputes T, then
dT = X^T dG, dX = dG T^T + Y dT^T, dY = X dT (summed over the batch for a static Y).

Example::

    x = torch.randn(32, 9, 16, requires_grad=True)   # [B, n, d]
    y = torch.randn(32, 9, 4, requires_grad=True)    # [B, n, k]
    g = fm_interaction(x, y)                         # [B, n, k]
    g.sum().backward()
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

import torch
from torch import Tensor

from .fm_cpu import fm_backward_cpu, fm_forward_cpu

KERNELS = ("auto", "reference", "cpu", "triton")
_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_warned: set[str] = set()


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"c2al::fm_interaction falls back to the reference kernel: {reason}", stacklevel=3)


def fm_interaction_reference(x: Tensor, y: Tensor) -> Tensor:
    """Plain-PyTorch G = X (X^T Y), differentiable by autograd; computes in fp32 or wider.

    Args:
        x: X [B, n, d].
        y: Y [B, n, k] (attentive) or [n, k] (static, shared by all samples).

    Returns:
        G [B, n, k] in ``x.dtype``.
    """
    acc = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(acc)
    t = torch.matmul(xf.transpose(1, 2), y.to(acc))  # [B, d, k]
    return torch.matmul(xf, t).to(x.dtype)


def _reference_backward(grad: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    acc = torch.promote_types(x.dtype, torch.float32)
    xf, yf, gf = x.to(acc), y.to(acc), grad.to(acc)
    xt = xf.transpose(1, 2)
    t = torch.matmul(xt, yf)
    dt = torch.matmul(xt, gf)
    dx = torch.matmul(gf, t.transpose(1, 2)) + torch.matmul(yf, dt.transpose(1, 2))
    dy = torch.matmul(xf, dt)
    if y.dim() == 2:
        dy = dy.sum(0)
    return dx.to(x.dtype), dy.to(y.dtype)


def check_inputs(x: Tensor, y: Tensor) -> None:
    """Raise ValueError unless X [B, n, d] and Y [B, n, k] / [n, k] agree in shape, dtype, device."""
    if x.dim() != 3:
        raise ValueError(f"fm_interaction: X must be [B, n, d], got shape {tuple(x.shape)}")
    if y.dim() not in (2, 3):
        raise ValueError(f"fm_interaction: Y must be [B, n, k] or [n, k], got shape {tuple(y.shape)}")
    expected = tuple(x.shape[:2]) if y.dim() == 3 else (x.shape[1],)
    if tuple(y.shape[:-1]) != expected:
        raise ValueError(
            f"fm_interaction: Y shape {tuple(y.shape)} does not match X shape {tuple(x.shape)} "
            f"(expected Y leading dims {expected})"
        )
    if x.dtype != y.dtype or x.dtype not in _SUPPORTED_DTYPES:
        raise ValueError(
            f"fm_interaction: X and Y need one float dtype of {_SUPPORTED_DTYPES}, got {x.dtype}, {y.dtype}"
        )
    if x.device != y.device:
        raise ValueError(f"fm_interaction: X on {x.device} but Y on {y.device}")


def _triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def select_kernel(x: Tensor, y: Tensor, kernel: str = "auto") -> str:
    """The kernel that will run for these inputs: 'reference', 'cpu' or 'triton'.

    ``auto`` picks triton on CUDA and cpu on CPU. A requested or automatic kernel that cannot run
    these inputs (device, dtype, size limits, triton missing) falls back to reference with one
    warning per reason. ``triton`` on CPU tensors runs only under ``TRITON_INTERPRET=1``.
    """
    if kernel not in KERNELS:
        raise ValueError(f"model.fm_kernel: unknown '{kernel}' (expected one of {KERNELS})")
    if kernel == "reference" or x.device.type == "meta":
        return "reference"
    want = kernel
    if kernel == "auto":
        want = "triton" if x.device.type == "cuda" else "cpu" if x.device.type == "cpu" else "reference"
        if want == "reference":
            return want
    if want == "cpu":
        if x.device.type != "cpu":
            _warn_once(f"the cpu kernel needs CPU tensors, got {x.device.type}")
            return "reference"
        return "cpu"
    # triton
    from . import fm_triton

    reason = fm_triton.ineligible_reason(x, y, interpreting=_triton_interpreting())
    if reason is not None:
        _warn_once(f"triton kernel not usable: {reason}")
        return "reference"
    return "triton"


@torch.library.custom_op("c2al::fm_interaction", mutates_args=())
def _fm_interaction_op(x: Tensor, y: Tensor, kernel: str = "auto") -> Tensor:
    chosen = select_kernel(x, y, kernel)
    if chosen == "cpu":
        return fm_forward_cpu(x, y)
    if chosen == "triton":
        from . import fm_triton

        return fm_triton.fm_forward_triton(x, y)
    return fm_interaction_reference(x, y)


@_fm_interaction_op.register_fake
def _(x: Tensor, y: Tensor, kernel: str = "auto") -> Tensor:
    return x.new_empty(x.shape[0], x.shape[1], y.shape[-1])


@torch.library.custom_op("c2al::fm_interaction_backward", mutates_args=())
def _fm_interaction_backward_op(grad: Tensor, x: Tensor, y: Tensor, kernel: str = "auto") -> tuple[Tensor, Tensor]:
    chosen = select_kernel(x, y, kernel)
    grad = grad.to(x.dtype)
    if chosen == "cpu":
        return fm_backward_cpu(grad, x, y)
    if chosen == "triton":
        from . import fm_triton

        return fm_triton.fm_backward_triton(grad, x, y)
    return _reference_backward(grad, x, y)


@_fm_interaction_backward_op.register_fake
def _(grad: Tensor, x: Tensor, y: Tensor, kernel: str = "auto") -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(y)


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001 (torch.library signature)
    x, y, kernel = inputs
    ctx.save_for_backward(x, y)  # T is recomputed in backward: it is never saved
    ctx.kernel = kernel


def _backward(ctx, grad: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None]:  # noqa: ANN001
    x, y = ctx.saved_tensors
    dx, dy = _fm_interaction_backward_op(grad, x, y, ctx.kernel)
    return dx, dy, None


_fm_interaction_op.register_autograd(_backward, setup_context=_setup_context)


def fm_interaction(x: Tensor, y: Tensor, kernel: str = "auto") -> Tensor:
    """G = X X^T Y through the custom op ``c2al::fm_interaction`` (differentiable).

    Args:
        x: X [B, n, d], fp32/bf16/fp16/fp64, any strides.
        y: Y [B, n, k] (attentive) or [n, k] (static), same dtype and device as ``x``.
        kernel: ``auto`` (by device), ``reference``, ``cpu`` or ``triton`` (see :func:`select_kernel`).

    Returns:
        G [B, n, k] in ``x.dtype``; bf16/fp16 accumulate in fp32.

    Raises:
        ValueError: shapes, dtypes or devices of X and Y disagree, or an unknown kernel.
    """
    check_inputs(x, y)
    if kernel not in KERNELS:
        raise ValueError(f"model.fm_kernel: unknown '{kernel}' (expected one of {KERNELS})")
    return torch.ops.c2al.fm_interaction(x, y, kernel)
