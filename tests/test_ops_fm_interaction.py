"""Tier 1 (CPU numerics) and tier 3 (CUDA numerics, skipped without a GPU) of c2al::fm_interaction.

The Triton kernels run here through ``TRITON_INTERPRET=1`` (tests/conftest.py sets it before
triton is imported), on small shapes, in fp32 (the interpreter's bf16 ``tl.dot`` is wrong, so its
bf16 runs widen the operands). On a GPU machine without the project's venv, run the CUDA tier with
``PYTHONPATH=. TRITON_INTERPRET=0 python3 -m pytest --noconftest tests/test_ops_fm_interaction.py``
(nothing here needs torchrec).
"""

import contextlib
import importlib
import os
import warnings

import pytest
import torch

from c2al_rec.ops import fm_cpu, fm_interaction, fm_interaction_reference, fm_triton, select_kernel

# The package re-exports the function under the module's name; fetch the module itself.
fm_mod = importlib.import_module("c2al_rec.ops.fm_interaction")

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1" and fm_triton.HAVE_TRITON
needs_interpreter = pytest.mark.skipif(not INTERPRET, reason="triton interpreter (TRITON_INTERPRET=1) not available")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")

# (B, n, d, k): odd sizes, B = 1, non-powers of two.
SHAPES = [(1, 1, 1, 1), (1, 5, 7, 3), (4, 9, 16, 4), (3, 17, 33, 5)]
# For the batch-tiled Triton kernels: B not a multiple of the batch tile, d not a multiple of the
# d chunk, n and k not powers of two, several d chunks.
TILED_SHAPES = [(5, 9, 40, 4), (7, 20, 33, 17), (3, 33, 64, 32)]


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


def test_cpu_backward_path_rule():
    # S X (no T recomputed) where its n^2 (2k + d) multiply-adds are at most the 3 n d k of the
    # T path: the benchmark shape ties and takes S X; many tokens against small d, k do not.
    assert fm_cpu._use_symmetric(32, 64, 16)
    assert fm_cpu._use_symmetric(8, 16, 4)
    assert not fm_cpu._use_symmetric(33, 64, 16)
    assert not fm_cpu._use_symmetric(17, 33, 5)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("static", [False, True])
def test_cpu_backward_paths_match_float64(symmetric, static, monkeypatch):
    # Both dX formulas (S X with S = Y dG^T + dG Y^T, and dG T^T + Y dT^T with T recomputed),
    # over several chunks with a short last one, non-contiguous fp32 and bf16 (fp32 buffers).
    monkeypatch.setattr(fm_cpu, "_use_symmetric", lambda n, d, k: symmetric)
    monkeypatch.setattr(fm_cpu, "_TARGET_CHUNK_BYTES", 3 * 9 * 16 * 4)
    for shape in [(10, 9, 16, 4), (1, 1, 1, 1), (3, 17, 33, 5)]:
        _check("cpu", shape, static, torch.float32, noncontig=shape[0] == 10)
    _check("cpu", (10, 9, 16, 4), static, torch.bfloat16, atol=3e-2, rtol=3e-2)
    x, y, _ = _inputs(2, 4, 5, 3, static, torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: fm_interaction(a, b, "cpu"), (x.requires_grad_(), y.requires_grad_()))


@pytest.mark.parametrize("static", [False, True])
def test_cpu_symmetric_backward_under_compile_fullgraph(static):
    # (8, 16, 4) takes the S X backward; the op stays one opaque node with no graph break.
    x, y, dg = (t.float() for t in _inputs(6, 8, 16, 4, static, torch.float64))
    assert fm_cpu._use_symmetric(8, 16, 4)

    def step(a, b):
        return (fm_interaction(a, b, "cpu") * dg).sum()

    torch._dynamo.reset()
    explained = torch._dynamo.explain(step)(x, y)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(x.requires_grad_(), y.requires_grad_()), (x, y))
    want = torch.autograd.grad(step(x, y), (x, y))
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5 * r.abs().max().item())


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


@contextlib.contextmanager
def _triton_config(bb, bd):
    """Run the autotuned Triton kernels with one config (BB samples per program, d chunks of BD)."""
    import triton

    kernels = (fm_triton._fm_fwd_kernel, fm_triton._fm_bwd_kernel)
    saved = [(k.configs, dict(k.cache)) for k in kernels]
    for k in kernels:
        k.configs = [triton.Config({"BB": bb, "BD": bd}, num_warps=4, num_stages=1)]
        k.cache.clear()
    try:
        yield
    finally:
        for k, (configs, cache) in zip(kernels, saved):
            k.configs = configs
            k.cache.clear()
            k.cache.update(cache)


@needs_interpreter
@pytest.mark.parametrize("bb,bd", [(1, 16), (2, 16), (4, 32)])
@pytest.mark.parametrize("shape", TILED_SHAPES)
@pytest.mark.parametrize("static", [False, True])
def test_triton_batch_tiles_interpreted_match_float64(bb, bd, shape, static):
    # BB = 1 takes the 2D-dot path, BB > 1 the batched 3D dots; fp32 only (interpreter).
    with _triton_config(bb, bd):
        _check("triton", shape, static, torch.float32, noncontig=bb == 2, atol=2e-5, rtol=2e-5)


@needs_interpreter
def test_triton_static_backward_needs_no_batch_sized_dy_buffer():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Shapes(TorchDispatchMode):
        """Shapes of the buffers allocated (factory ops; the interpreter's host copies are not)."""

        def __init__(self):
            super().__init__()
            self.shapes = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if any(name in func.__name__ for name in ("empty", "zeros", "full", "ones")):
                self.shapes.add(tuple(out.shape))
            return out

    b, n, d, k = 12, 9, 24, 5
    x, y, dg = (t.float() for t in _inputs(b, n, d, k, True, torch.float64))
    with Shapes() as mode:
        dx, dy = fm_triton.fm_backward_triton(dg, x, y)
    assert dy.shape == (n, k) and (b, n, k) not in mode.shapes, mode.shapes
    _, dx64, dy64 = _f64_grads(x.double(), y.double(), dg.double())
    torch.testing.assert_close(dy.double(), dy64, atol=1e-4 * dy64.abs().max().item(), rtol=1e-4)


@pytest.mark.skipif(not fm_triton.HAVE_TRITON, reason="triton is not installed")
@pytest.mark.parametrize("n,d,k", [(64, 128, 32), (32, 128, 32), (9, 16, 4), (128, 256, 64), (33, 48, 7)])
def test_autotune_prune_keeps_few_configs_that_fit(n, d, k):
    import triton

    space = [
        triton.Config({"BB": bb, "BD": bd}, num_warps=w, num_stages=st)
        for bb in (1, 2, 4, 8, 16, 32)
        for bd in (32, 64, 128)
        for w in (4, 8)
        for st in (2, 3)
    ]
    bn, bk = fm_triton._block(n), fm_triton._block(k)
    kept = fm_triton._prune(space, {"d": d}, BN=bn, BK=bk)
    assert 1 <= len(kept) <= 12
    for c in kept:
        assert c.kwargs["BB"] * bn * c.kwargs["BD"] <= fm_triton._MAX_X_TILE
        assert c.kwargs["BB"] * bn * bk <= fm_triton._MAX_NK_TILE
    assert any(c.kwargs["BB"] == 1 for c in kept)  # the 2D-dot path is always a candidate


# --- precision policy: autocast -> bf16 operands + fp32 accumulation; tf32 only where allowed ---


def _policy_kernels():
    return ["reference", "cpu"] + (["triton"] if INTERPRET else [])


@pytest.mark.parametrize("kernel", _policy_kernels())
@pytest.mark.parametrize("static", [False, True])
def test_autocast_computes_with_bf16_operands_and_fp32_accumulation(kernel, static):
    x, y, dg = _inputs(6, 9, 40, 5, static, torch.float64)
    # fp32 X as a LayerNorm output under autocast arrives; Y as a Linear output (bf16) would
    xf, yf = x.float().requires_grad_(), y.to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = fm_interaction(xf, yf, kernel)
    assert g.dtype == torch.bfloat16
    g.backward(dg.to(torch.bfloat16))
    assert xf.grad.dtype == torch.float32 and yf.grad.dtype == torch.bfloat16 and yf.grad.shape == yf.shape
    # float64 math on the bf16-rounded operands is what bf16 operands + fp32 accumulation compute
    rnd = lambda t: t.to(torch.bfloat16).double()  # noqa: E731
    g64, dx64, dy64 = _f64_grads(rnd(x), rnd(y), rnd(dg))
    if kernel == "triton":
        # T is rounded to bf16 between the dots (as autocast's eager bmm): a few bf16 ulps
        torch.testing.assert_close(g.double(), g64, atol=2e-2 * g64.abs().max().item(), rtol=2e-2)
    else:
        # G rounded once from an fp32-accumulated value: within half a bf16 ulp (2^-9) elementwise
        assert ((g.double() - g64).abs() <= 2**-8 * g64.abs() + 1e-5 * g64.abs().max()).all()
    for got, want in [(xf.grad, dx64), (yf.grad, dy64)]:
        torch.testing.assert_close(got.double(), want, atol=2e-2 * want.abs().max().item(), rtol=2e-2)


@pytest.mark.parametrize("kernel", _policy_kernels())
def test_fp32_outside_autocast_is_exact_fp32(kernel):
    x, y, dg = _inputs(5, 9, 40, 5, False, torch.float64)
    g64 = _f64_grads(x, y, dg)[0]
    g = fm_interaction(x.float(), y.float(), kernel)
    assert g.dtype == torch.float32
    assert (g.double() - g64).abs().max() <= 1e-5 * g64.abs().max()


def test_autocast_leaves_float64_alone():
    x, y, _ = _inputs(3, 4, 5, 2, False, torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = fm_interaction(x, y, "cpu")
    assert g.dtype == torch.float64
    torch.testing.assert_close(g, _f64_grads(x, y, torch.zeros(3, 4, 2, dtype=torch.float64))[0])


def test_mixed_dtypes_outside_autocast_raise():
    x, y = torch.randn(2, 3, 4), torch.randn(2, 3, 2, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="one float dtype outside autocast"):
        fm_interaction(x, y)
    with pytest.raises(ValueError, match="cast them alike or run under autocast"):
        torch.ops.c2al.fm_interaction(x, y, "cpu")


def test_tf32_only_where_torch_allows_it():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert fm_triton.dot_precision(torch.float32, "cuda") == "ieee"
        torch.set_float32_matmul_precision("high")
        assert fm_triton.dot_precision(torch.float32, "cuda") == "tf32"
        assert fm_triton.dot_precision(torch.float32, "cpu") == "ieee"  # exact fp32 on CPU always
        torch.set_float32_matmul_precision("highest")
        torch.backends.cuda.matmul.allow_tf32 = True
        assert fm_triton.dot_precision(torch.float32, "cuda") == "tf32"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.set_float32_matmul_precision(before)


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


@pytest.mark.parametrize("static", [False, True])
def test_flop_counter_counts_the_op_as_the_reference_math(static):
    from torch.utils.flop_counter import FlopCounterMode

    def count(fn) -> int:
        x = torch.randn(6, 5, 4, requires_grad=True)
        y = torch.randn(*(() if static else (6,)), 5, 3, requires_grad=True)
        with FlopCounterMode(display=False) as counter:
            fn(x, y).sum().backward()
        return counter.get_total_flops()

    b, n, d, k = 6, 5, 4, 3
    assert count(fm_interaction) == count(fm_interaction_reference) == 12 * b * n * d * k


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
    with pytest.raises(ValueError, match="model.fm.kernel"):
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


# (B, n, d, k) on CUDA: odd sizes, the issue's shape, small tiles that batch-tile many samples.
CUDA_SHAPES = [(64, 33, 48, 7), (1000, 64, 128, 32), (513, 27, 64, 16)]


def _cuda_check(dtype, shape, static, tol=None):
    x, y, dg = _inputs(*shape, static, torch.float64)
    g64, dx64, dy64 = _f64_grads(x, y, dg)
    xl, yl = x.to("cuda", dtype).requires_grad_(), y.to("cuda", dtype).requires_grad_()
    assert select_kernel(xl, yl) == "triton"
    g = fm_interaction(xl, yl)
    g.backward(dg.to("cuda", dtype))
    tol = tol or (1e-4 if dtype == torch.float32 else 3e-2)
    for got, want in [(g, g64), (xl.grad, dx64), (yl.grad, dy64)]:
        torch.testing.assert_close(got.double().cpu(), want, atol=tol * (want.abs().max().item() + 1), rtol=tol)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", CUDA_SHAPES)
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("bb,bd", [(1, 64), (4, 32)])
def test_triton_cuda_matches_float64(dtype, shape, static, bb, bd):
    # Fixed configs (2D dots at BB=1, batched 3D dots at BB=4) rather than autotuning each case:
    # every config of the family is exercised and each compiles once. bf16 here runs the real
    # tensor-core dots, which the interpreter cannot.
    with _triton_config(bb, bd):
        _cuda_check(dtype, shape, static)


@pytest.mark.skipif(
    INTERPRET or not torch.cuda.is_available(),
    reason="bf16 tl.dot needs a CUDA GPU with TRITON_INTERPRET=0 (the interpreter's bf16 dot is wrong)",
)
@pytest.mark.parametrize("static", [False, True])
def test_triton_cuda_autotuned_bf16_issue_shape(static):
    # The autotuner's own pick for the issue's shape (its result is cached for the benchmarks).
    _cuda_check(torch.bfloat16, (4096, 64, 128, 32), static)


@needs_cuda
@pytest.mark.parametrize("static", [False, True])
def test_triton_cuda_autocast_and_tf32_policy(static):
    x, y, dg = _inputs(300, 64, 128, 32, static, torch.float64)
    g64, dx64, dy64 = _f64_grads(x, y, dg)
    xf, yf = x.float().cuda().requires_grad_(), y.float().cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        g = fm_interaction(xf, yf)
    assert g.dtype == torch.bfloat16
    g.backward(dg.cuda().to(torch.bfloat16))
    assert xf.grad.dtype == torch.float32
    for got, want in [(g, g64), (xf.grad, dx64), (yf.grad, dy64)]:
        torch.testing.assert_close(got.double().cpu(), want, atol=3e-2 * want.abs().max().item(), rtol=3e-2)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")  # tf32 allowed: ~1e-3 relative
        g = fm_interaction(x.float().cuda(), y.float().cuda())
        torch.testing.assert_close(g.double().cpu(), g64, atol=1e-2 * g64.abs().max().item(), rtol=1e-2)
    finally:
        torch.set_float32_matmul_precision(before)
