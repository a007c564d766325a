"""The FM interaction op ``c2al::fm_interaction``: G = X X^T Y computed as T = X^T Y, G = X T.

One op name, several kernels, chosen per call by device and eligibility:

- ``reference``: plain PyTorch (two matmuls in fp32 or wider); defines correctness and is the
  fallback. :func:`fm_interaction_reference` is this math as a differentiable function (export
  uses it, because a TorchScript file calling a Python-registered op loads only where the op is
  registered).
- ``cpu``: the blocked loop of :mod:`c2al_rec.ops.fm_cpu` (T stays in cache, never saved).
- ``triton``: the fused batch-tiled kernels of :mod:`c2al_rec.ops.fm_triton` (CUDA; also run under
  ``TRITON_INTERPRET=1`` on CPU tensors, which is how they are tested without a GPU).

Precision policy (one place: the op's autocast kernel below, so modules never branch on dtype):

- Under autocast (``torch.is_autocast_enabled(device)``, CPU or CUDA) X and Y are cast to the
  autocast dtype (``torch.get_autocast_dtype(device)``, normally bf16) whatever dtype they arrive
  in: X is typically a LayerNorm output, which autocast keeps fp32. The kernels then use bf16
  operands with fp32 accumulation (Triton: tensor-core dots, T rounded to bf16 between the dots as
  autocast's eager bmm rounds it; CPU kernel and reference: fp32 math on the bf16 values). G is
  returned in the autocast dtype, like a matmul under autocast; gradients flow back to X and Y in
  their own dtypes through the casts. fp64 inputs are never cast.
- fp32 outside autocast: tf32 tensor-core dots on CUDA only where torch allows tf32 matmuls
  (``torch.backends.cuda.matmul.allow_tf32`` or ``torch.get_float32_matmul_precision() != "highest"``);
  exact fp32 otherwise (the default, and always on CPU).
- bf16/fp16 inputs outside autocast: bf16/fp16 operands, fp32 accumulation, G in the input dtype.

Autograd is registered by hand: only X and Y are saved; the backward op recomputes T, then
dT = X^T dG, dX = dG T^T + Y dT^T, dY = X dT (summed over the batch for a static Y), under the
same policy (the saved X and Y already carry the autocast dtype). The CPU kernel forms the same dX
as (Y dG^T + dG Y^T) X where that is no more work, and then needs no T.

Example::

    x = torch.randn(32, 9, 16, requires_grad=True)   # [B, n, d]
    y = torch.randn(32, 9, 4, requires_grad=True)    # [B, n, k]
    g = fm_interaction(x, y)                         # [B, n, k]
    g.sum().backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fm_interaction(x, y).dtype                   # torch.bfloat16
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from .fm_cpu import fm_backward_cpu, fm_forward_cpu

KERNELS = ("auto", "reference", "cpu", "triton")
_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_warned: set[str] = set()
# Autocast dispatch keys the op registers a kernel for (the precision policy, see the module doc).
_AUTOCAST_KEYS = {"cpu": "AutocastCPU", "cuda": "AutocastCUDA"}


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
    if x.dtype not in _SUPPORTED_DTYPES or y.dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"fm_interaction: X and Y need float dtypes of {_SUPPORTED_DTYPES}, got {x.dtype}, {y.dtype}")
    if x.dtype != y.dtype and not _autocasting(x):
        raise ValueError(f"fm_interaction: X and Y need one float dtype outside autocast, got {x.dtype}, {y.dtype}")
    if x.device != y.device:
        raise ValueError(f"fm_interaction: X on {x.device} but Y on {y.device}")


def _autocasting(x: Tensor) -> bool:
    return x.device.type in _AUTOCAST_KEYS and torch.is_autocast_enabled(x.device.type)


def _triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def select_kernel(x: Tensor, y: Tensor, kernel: str = "auto") -> str:
    """The kernel that will run for these inputs: 'reference', 'cpu' or 'triton'.

    ``auto`` picks triton on CUDA and cpu on CPU. A requested or automatic kernel that cannot run
    these inputs (device, dtype, size limits, triton missing) falls back to reference with one
    warning per reason. ``triton`` on CPU tensors runs only under ``TRITON_INTERPRET=1``.
    """
    if kernel not in KERNELS:
        raise ValueError(f"model.fm.kernel: unknown '{kernel}' (expected one of {KERNELS})")
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


def _same_dtype(x: Tensor, y: Tensor) -> None:
    # Autocast gives both one dtype before the op runs (see _autocast_kernel); outside autocast
    # mixed dtypes are a caller error.
    if x.dtype != y.dtype:
        raise ValueError(
            f"c2al::fm_interaction: X is {x.dtype} but Y is {y.dtype}; cast them alike or run under autocast"
        )


# The kernel argument is named fm_kernel, not kernel: inductor's fallback for an opaque op passes
# defaulted arguments by name, and ``kernel`` collides with its own first parameter.
@torch.library.custom_op("c2al::fm_interaction", mutates_args=())
def _fm_interaction_op(x: Tensor, y: Tensor, fm_kernel: str = "auto") -> Tensor:
    _same_dtype(x, y)
    chosen = select_kernel(x, y, fm_kernel)
    if chosen == "cpu":
        return fm_forward_cpu(x, y)
    if chosen == "triton":
        from . import fm_triton

        return fm_triton.fm_forward_triton(x, y)
    return fm_interaction_reference(x, y)


@_fm_interaction_op.register_fake
def _(x: Tensor, y: Tensor, fm_kernel: str = "auto") -> Tensor:
    _same_dtype(x, y)
    return x.new_empty(x.shape[0], x.shape[1], y.shape[-1])


@torch.library.custom_op("c2al::fm_interaction_backward", mutates_args=())
def _fm_interaction_backward_op(grad: Tensor, x: Tensor, y: Tensor, fm_kernel: str = "auto") -> tuple[Tensor, Tensor]:
    chosen = select_kernel(x, y, fm_kernel)
    grad = grad.to(x.dtype)
    if chosen == "cpu":
        return fm_backward_cpu(grad, x, y)
    if chosen == "triton":
        from . import fm_triton

        return fm_triton.fm_backward_triton(grad, x, y)
    return _reference_backward(grad, x, y)


@_fm_interaction_backward_op.register_fake
def _(grad: Tensor, x: Tensor, y: Tensor, fm_kernel: str = "auto") -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(y)


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001 (torch.library signature)
    x, y, fm_kernel = inputs
    ctx.save_for_backward(x, y)  # T is recomputed in backward: it is never saved
    ctx.fm_kernel = fm_kernel


def _backward(ctx, grad: Tensor) -> tuple[Optional[Tensor], Optional[Tensor], None]:  # noqa: ANN001
    x, y = ctx.saved_tensors
    dx, dy = _fm_interaction_backward_op(grad, x, y, ctx.fm_kernel)
    return dx, dy, None


_fm_interaction_op.register_autograd(_backward, setup_context=_setup_context)


# Model FLOPs for torch.utils.flop_counter.FlopCounterMode (which counts an opaque op as 0 otherwise):
# what it counts for the reference math under autograd, whichever kernel runs (the backward's
# recomputation of T is not model work and is not counted).
@register_flop_formula(torch.ops.c2al.fm_interaction)
def _fm_flops(x_shape, y_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001, ANN002, ANN003
    """X [B, n, d], Y [B, n, k] or [n, k]: T = X^T Y and G = X T, two matmuls of 2 B n d k FLOPs each."""
    b, n, d = x_shape
    return 4 * b * n * d * y_shape[-1]


@register_flop_formula(torch.ops.c2al.fm_interaction_backward)
def _fm_backward_flops(grad_shape, x_shape, y_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001, ANN002, ANN003
    """dG [B, n, k], X [B, n, d], Y [B, n, k] or [n, k]: dT = X^T dG, dX = dG T^T + Y dT^T, dY = X dT,
    four matmuls of 2 B n d k FLOPs each."""
    b, n, d = x_shape
    return 8 * b * n * d * y_shape[-1]


def _autocast_cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    # As autocast's own casts: floating tensors except fp64.
    return t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t


def _autocast_kernel(device_type: str):  # noqa: ANN202
    """The op's kernel at the Autocast<device> dispatch key: cast X and Y to the current autocast
    dtype, then run the op with that key excluded (as ``torch.library.register_autocast`` does, but
    reading the dtype per call instead of fixing one at registration)."""
    key = getattr(torch._C.DispatchKey, _AUTOCAST_KEYS[device_type])

    def kernel(_keyset, x: Tensor, y: Tensor, fm_kernel: str = "auto") -> Tensor:  # noqa: ANN001
        dtype = torch.get_autocast_dtype(device_type)
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            return torch.ops.c2al.fm_interaction(_autocast_cast(x, dtype), _autocast_cast(y, dtype), fm_kernel)

    return kernel


_lib = torch.library.Library("c2al", "FRAGMENT")
for _device_type, _key in _AUTOCAST_KEYS.items():
    _lib.impl("fm_interaction", _autocast_kernel(_device_type), _key, with_keyset=True)


def fm_interaction(x: Tensor, y: Tensor, kernel: str = "auto") -> Tensor:
    """G = X X^T Y through the custom op ``c2al::fm_interaction`` (differentiable).

    Args:
        x: X [B, n, d], fp32/bf16/fp16/fp64, any strides.
        y: Y [B, n, k] (attentive) or [n, k] (static), same device as ``x`` and, outside autocast,
            the same dtype.
        kernel: ``auto`` (by device), ``reference``, ``cpu`` or ``triton`` (see :func:`select_kernel`).

    Returns:
        G [B, n, k] in ``x.dtype``, or in the autocast dtype under autocast (see the module's
        precision policy); bf16/fp16 accumulate in fp32.

    Raises:
        ValueError: shapes, dtypes or devices of X and Y disagree, or an unknown kernel.
    """
    check_inputs(x, y)
    if kernel not in KERNELS:
        raise ValueError(f"model.fm.kernel: unknown '{kernel}' (expected one of {KERNELS})")
    return torch.ops.c2al.fm_interaction(x, y, kernel)
