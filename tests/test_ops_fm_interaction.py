"""Tier 1 (CPU numerics) and tier 3 (CUDA numerics, skipped without a GPU) of c2al::fm_interaction.

The Triton kernels run here through ``TRITON_INTERPRET=1`` (tests/conftest.py sets it before
triton is imported), on small shapes.
"""

import importlib
import os
import warnings

import pytest
import torch

from c2al_rec.ops import fm_interaction, fm_interaction_reference, fm_triton, select_kernel

# The package re-exports the function under the module's name; fetch the module itself.
fm_mod = importlib.import_module("c2al_rec.ops.fm_interaction")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1" and fm_triton.HAVE_TRITON
needs_interpreter = pytest.mark.skipif(not INTERPRET, reason="triton interpreter (TRITON_INTERPRET=1) not available")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")

# (B, n, d, k): odd sizes, B = 1, non-powers of two.
SHAPES = [(1, 1, 1, 1), (1, 5, 7, 3), (4, 9, 16, 4), (3, 17, 33, 5)]


def _inputs(b, n, d, k, static, dtype, seed=0, noncontig=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    y = torch.randn(*((n, k) if static else (b, n, k)), generator=g, dtype=torch.float64)
    dg = torch.randn(b, n, k, generator=g, dtype=torch.float64)
    if noncontig:  # same values, transposed storage
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
        y = y.transpose(-1, -2).contiguous().transpose(-1, -2)
    return x, y, dg


def _f64_grads(x, y, dg):
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = torch.bmm(xr, torch.matmul(xr.transpose(1, 2), yr))
    out.backward(dg)
    return out.detach(), xr.grad, yr.grad


def _check(kernel, shape, static, dtype, noncontig=False, atol=1e-4, rtol=1e-4):
    x, y, dg = _inputs(*shape, static, dtype, seed=hash((shape, static)) % 1000, noncontig=noncontig)
    g64, dx64, dy64 = _f64_grads(x, y, dg)
    xl = x.to(dtype).requires_grad_()
    yl = y.to(dtype).requires_grad_()
    if noncontig:
        assert not xl.is_contiguous()
    assert select_kernel(xl, yl, kernel) == kernel
    g = fm_interaction(xl, yl, kernel)
    assert g.dtype == dtype and g.shape == g64.shape
    g.backward(dg.to(dtype))
    scale = lambda t: t.abs().max().item() + 1  # noqa: E731
    torch.testing.assert_close(g.double(), g64, atol=atol * scale(g64), rtol=rtol)
    torch.testing.assert_close(xl.grad.double(), dx64, atol=atol * scale(dx64), rtol=rtol)
    torch.testing.assert_close(yl.grad.double(), dy64, atol=atol * scale(dy64), rtol=rtol)
    assert yl.grad.shape == yl.shape


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("static", [False, True])
def test_cpu_kernel_matches_float64(shape, static):
    _check("cpu", shape, static, torch.float32)


@pytest.mark.parametrize("static", [False, True])
def test_cpu_kernel_bf16_noncontiguous_and_chunked(static, monkeypatch):
    # A tiny chunk forces several chunks, including a short last one.
    monkeypatch.setattr("c2al_rec.ops.fm_cpu._TARGET_CHUNK_BYTES", 3 * 9 * 16 * 4)
    _check("cpu", (10, 9, 16, 4), static, torch.float32, noncontig=True)
    _check("cpu", (10, 9, 16, 4), static, torch.bfloat16, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("static", [False, True])
def test_gradcheck_float64(static):
    x, y, _ = _inputs(2, 4, 5, 3, static, torch.float64)
    x.requires_grad_()
    y.requires_grad_()
    for kernel in ["reference", "cpu"] + (["triton"] if INTERPRET else []):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert torch.autograd.gradcheck(lambda a, b, kk=kernel: fm_interaction(a, b, kk), (x, y))


@needs_interpreter
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("static", [False, True])
def test_triton_kernels_interpreted_match_float64(shape, static):
    _check("triton", shape, static, torch.float32, noncontig=shape[0] == 3)


@needs_interpreter
def test_triton_kernels_interpreted_bf16():
    _check("triton", (2, 9, 16, 4), False, torch.bfloat16, atol=3e-2, rtol=3e-2)


def test_opcheck_schema_fake_and_autograd():
    x, y, _ = _inputs(3, 5, 6, 2, False, torch.float32)
    x, y = x.float().requires_grad_(), y.float().requires_grad_()
    torch.library.opcheck(torch.ops.c2al.fm_interaction.default, (x, y, "cpu"))
    ys = torch.randn(5, 2, requires_grad=True)
    torch.library.opcheck(torch.ops.c2al.fm_interaction.default, (x, ys, "cpu"))


def test_saves_only_x_and_y_for_backward():
    x = torch.randn(8, 6, 10, requires_grad=True)
    y = torch.randn(8, 6, 3, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fm_interaction(x, y, "cpu")
    assert sorted(saved) == sorted([(8, 6, 10), (8, 6, 3)])  # no T [8, 10, 3]


def test_fake_tensor_shapes_and_meta():
    x = torch.empty(4, 7, 5, device="meta")
    y = torch.empty(7, 3, device="meta")
    assert fm_interaction(x, y).shape == (4, 7, 3)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match=r"X must be \[B, n, d\]"):
        fm_interaction(torch.randn(3, 4), torch.randn(3, 2))
    with pytest.raises(ValueError, match="does not match X shape"):
        fm_interaction(torch.randn(2, 3, 4), torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match="one float dtype"):
        fm_interaction(torch.randn(2, 3, 4), torch.randn(2, 3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="model.fm_kernel"):
        fm_interaction(torch.randn(2, 3, 4), torch.randn(2, 3, 2), "fast")


def test_fallback_warns_once_and_matches_reference(monkeypatch):
    monkeypatch.setattr(fm_mod, "_warned", set())
    monkeypatch.setattr(fm_triton, "MAX_BLOCK_K", 16)
    x, y = torch.randn(2, 3, 4), torch.randn(2, 3, 40)  # k = 40 pads to 64 > 16
    with pytest.warns(UserWarning, match="falls back to the reference kernel"):
        g = fm_interaction(x, y, "triton")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fm_interaction(x, y, "triton")  # second time: no warning
    torch.testing.assert_close(g, fm_interaction_reference(x, y))


def test_trains_inside_a_model():
    torch.manual_seed(0)
    n, d, k = 6, 8, 4
    x = torch.randn(64, n, d)
    target = (fm_interaction_reference(x, torch.randn(n, k)).sum((1, 2)) > 0).float()
    proj = torch.nn.Linear(d, d)
    y_param = torch.nn.Parameter(torch.randn(n, k) * 0.1)
    head = torch.nn.Linear(n * k, 1)
    opt = torch.optim.Adam([*proj.parameters(), y_param, *head.parameters()], lr=0.02)
    losses = []
    for _ in range(40):
        g = fm_interaction(proj(x), y_param, "cpu")
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(g.flatten(1)).squeeze(-1), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_cuda_matches_float64(dtype):
    x, y, dg = _inputs(64, 33, 48, 7, False, dtype)
    g64, dx64, dy64 = _f64_grads(x, y, dg)
    xl, yl = x.to("cuda", dtype).requires_grad_(), y.to("cuda", dtype).requires_grad_()
    assert select_kernel(xl, yl) == "triton"
    g = fm_interaction(xl, yl)
    g.backward(dg.to("cuda", dtype))
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for got, want in [(g, g64), (xl.grad, dx64), (yl.grad, dy64)]:
        torch.testing.assert_close(got.double().cpu(), want, atol=tol * (want.abs().max().item() + 1), rtol=tol)
