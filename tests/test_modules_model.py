"""Tier 1: the unsharded model modules (shapes, meta build, export tracing, heads, training)."""

import pytest
import torch
import torchrec
from torch import nn

from c2al_rec.config import DHEN_MODULE_TYPES, AttentionConfig, DotConfig, FMConfig, LinearConfig, ModelConfig
from c2al_rec.modules import C2ALModel, tables_from_features
from c2al_rec.modules.dhen import DHENLayer
from c2al_rec.modules.interactions import (
    CrossInteraction,
    DotInteraction,
    FMInteraction,
    LinearCompression,
    SelfAttention,
)
from tests import modules_helpers as mh

# every registered DHEN module type in one layer: a new type is covered by the tests below without an edit
ALL_MODULES = [list(DHEN_MODULE_TYPES), ["fm", "linear"]]


def small_cfg(fm: dict = {}, attention_heads: int = 2, **kw) -> ModelConfig:  # noqa: B006 (read only)
    base = dict(embedding_dim=8, dense_arch=[16], primary_head=[8], aux_head=[4])
    base.update(
        fm=FMConfig(**{"rank": 3, "compressed_tokens": 3, "out_tokens": 4, "mlp": [16], **fm}),
        linear=LinearConfig(out_tokens=5),
        dot=DotConfig(out_tokens=2),
        attention=AttentionConfig(heads=attention_heads),
    )
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize(
    "module, out_tokens",
    [
        (FMInteraction(7, 8, rank=3, compressed_tokens=2, out_tokens=5, hidden=[16]), 5),
        (FMInteraction(7, 8, rank=3, compressed_tokens=2, out_tokens=5, hidden=[], attention="static"), 5),
        (LinearCompression(7, 3), 3),
        (CrossInteraction(7, 8), 7),
        (SelfAttention(7, 8, heads=2), 7),
        (DotInteraction(7, 8, out_tokens=4), 4),
    ],
)
def test_interaction_shapes(module, out_tokens):
    for b in (1, 6):
        out = module(torch.randn(b, 7, 8))
        assert out.shape == (b, out_tokens, 8)
        assert module.num_out_tokens == out_tokens


def test_fm_module_math_matches_definition():
    torch.manual_seed(0)
    fm = FMInteraction(5, 4, rank=2, compressed_tokens=3, out_tokens=2, hidden=[6])
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    fm.double()
    y = fm.attention_mlp(fm.compress.proj(x.transpose(1, 2)).transpose(1, 2).flatten(1)).view(3, 5, 2)
    g = torch.einsum("bnd,bmd,bmk->bnk", x, x, y)  # G = X X^T Y
    want = fm.out_mlp(fm.norm(g.flatten(1))).view(3, 2, 4)
    torch.testing.assert_close(fm(x), want)
    fm.use_reference = True
    torch.testing.assert_close(fm(x), want)


def test_dhen_layer_shortcut_and_combine():
    cfg = small_cfg()
    layer = DHENLayer(6, ["fm", "linear"], cfg)
    assert layer.num_out_tokens == 4 + 5 and not isinstance(layer.shortcut, nn.Identity)
    same = DHENLayer(6, ["cross", "attention"], small_cfg(attention_heads=2, combine="sum"))
    assert isinstance(same.shortcut, nn.Identity)
    out = same(torch.randn(2, 6, 8))
    # LayerNorm over d: every token has mean ~0 (affine starts at identity).
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    summed = DHENLayer(6, ["fm", "linear"], small_cfg(combine="sum", fm={"out_tokens": 5}))
    assert summed.num_out_tokens == 5 and summed(torch.randn(2, 6, 8)).shape == (2, 5, 8)
    with pytest.raises(ValueError, match="model.combine = 'sum' needs equal token counts"):
        DHENLayer(6, ["fm", "linear"], small_cfg(combine="sum"))
    with pytest.raises(ValueError, match="model.dhen_layers: unknown module 'mlp'"):
        DHENLayer(6, ["mlp"], cfg)


def test_model_outputs_and_aux_heads():
    dense, kjt, _ = mh.batch(6, seed=1)
    base = C2ALModel(mh.tables(8), mh.DENSE, small_cfg(dhen_layers=ALL_MODULES), aux_heads=False)
    out = base(dense, kjt)
    assert set(out) == {"primary"} and out["primary"].shape == (6,)
    assert not hasattr(base, "aux_heads")
    c2al = C2ALModel(mh.tables(8), mh.DENSE, small_cfg(dhen_layers=ALL_MODULES), aux_heads=True)
    out = c2al(dense, kjt)
    assert set(out) == {"primary", "head", "tail"} and all(v.shape == (6,) for v in out.values())
    primary_only = c2al.without_aux_heads()
    assert set(primary_only(dense, kjt)) == {"primary"}
    torch.testing.assert_close(primary_only(dense, kjt)["primary"], out["primary"])
    # Same parameters, none of the aux heads'; the training model keeps its heads.
    assert {n for n, _ in primary_only.named_parameters()} == {
        n for n, _ in c2al.named_parameters() if not n.startswith("aux_heads.")
    }
    assert hasattr(c2al, "aux_heads")
    shared = c2al.shared_parameters()
    assert shared and all(n.startswith(("dense_arch.", "over_arch.")) for n in shared)
    assert sum(p.numel() for p in shared.values()) == sum(
        p.numel() for m in (c2al.dense_arch, c2al.over_arch) for p in m.parameters()
    )
    # The only sparse parameters are the EBC's, one table per feature.
    sparse = [n for n, _ in c2al.named_parameters() if n.startswith("sparse_arch.")]
    assert len(sparse) == mh.NUM_FEATURES and all(n.startswith("sparse_arch.ebc.") for n in sparse)


def test_tables_from_features_and_bad_tables():
    tables = tables_from_features(mh.features(), 8)
    assert [t.name for t in tables] == [f"t_f{i}" for i in range(mh.NUM_FEATURES)]
    assert tables[-1].pooling == torchrec.PoolingType.MEAN and tables[0].pooling == torchrec.PoolingType.SUM
    with pytest.raises(ValueError, match="differ from model.embedding_dim = 16"):
        C2ALModel(tables, mh.DENSE, ModelConfig(), aux_heads=False)


def test_meta_device_build():
    model = C2ALModel(mh.tables(8), mh.DENSE, small_cfg(dhen_layers=ALL_MODULES), aux_heads=True, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())


def test_attention_recording():
    dense, kjt, _ = mh.batch(5, seed=2)
    model = C2ALModel(mh.tables(8), mh.DENSE, small_cfg(), aux_heads=True)
    model(dense, kjt)
    assert model.fm_attention_weights() == {}  # off by default
    model.record_attention(True)
    model(dense, kjt)
    weights = model.fm_attention_weights()
    # n = 4 sparse + 1 dense tokens in layer 0; 4 FM + 5 linear tokens in layer 1.
    assert [tuple(w.shape) for w in weights.values()] == [(5, 5, 3), (5, 9, 3)]
    assert not any(w.requires_grad for w in weights.values())
    static = C2ALModel(mh.tables(8), mh.DENSE, small_cfg(fm={"attention": "static"}), aux_heads=False)
    static.record_attention(True)
    static(dense, kjt)
    assert [tuple(w.shape) for w in static.fm_attention_weights().values()] == [(5, 3), (9, 3)]
    model.record_attention(False)
    assert model.fm_attention_weights() == {}


def test_fx_trace_and_script_primary_only(tmp_path):
    torch.manual_seed(0)
    model = C2ALModel(mh.tables(8), mh.DENSE, small_cfg(dhen_layers=ALL_MODULES), aux_heads=True)
    serving = model.without_aux_heads()
    serving.use_reference_fm(True)
    traced = torchrec.fx.symbolic_trace(serving)
    scripted = torch.jit.script(traced)
    path = tmp_path / "m.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    model.use_reference_fm(False)
    for b, seed in ((1, 3), (7, 4), (33, 5)):
        dense, kjt, _ = mh.batch(b, seed)
        want = model(dense, kjt)["primary"]
        torch.testing.assert_close(loaded(dense, kjt)["primary"], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["attentive", "static"])
def test_training_reduces_loss(attention):
    torch.manual_seed(0)
    model = C2ALModel(mh.tables(8), mh.DENSE, small_cfg(fm={"attention": attention, "kernel": "cpu"}), aux_heads=True)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    dense, kjt, labels = mh.batch(256, seed=0)
    losses = []
    for _ in range(30):
        out = model(dense, kjt)
        bce = nn.functional.binary_cross_entropy_with_logits
        loss = bce(out["primary"], labels) + 0.1 * (bce(out["head"], labels) + bce(out["tail"], labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_bf16_autocast_forward_backward():
    dense, kjt, labels = mh.batch(8, seed=6)
    model = C2ALModel(mh.tables(8), mh.DENSE, small_cfg(), aux_heads=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(dense, kjt)
    loss = sum(nn.functional.binary_cross_entropy_with_logits(v.float(), labels) for v in out.values())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("over_arch."))


def test_training_form_traces_with_the_custom_op():
    # TrainPipelineSparseDist fx-traces the training model (aux heads, custom op) to find its
    # sparse inputs; the traced graph must compute the same logits.
    model = C2ALModel(mh.tables(8), mh.DENSE, small_cfg(dhen_layers=ALL_MODULES), aux_heads=True)
    traced = torchrec.fx.symbolic_trace(model)
    assert any("fm_interaction" in str(node.target) for node in traced.graph.nodes)
    dense, kjt, _ = mh.batch(9, seed=7)
    want, got = model(dense, kjt), traced(dense, kjt)
    assert set(got) == {"primary", "head", "tail"}
    for name in want:
        torch.testing.assert_close(got[name], want[name])


def test_no_dense_features_means_no_dense_token(tmp_path):
    """All-categorical data: dense is [B, 0], n = number of tables, and the model still traces and scripts."""
    torch.manual_seed(0)
    dense, kjt, _ = mh.batch(6, seed=1)
    empty = dense[:, :0]  # [B, 0]
    model = C2ALModel(mh.tables(8), 0, small_cfg(dhen_layers=ALL_MODULES), aux_heads=True)
    assert model.num_tokens == mh.NUM_FEATURES
    assert not list(model.dense_arch.parameters())
    out = model(empty, kjt)
    assert set(out) == {"primary", "head", "tail"} and all(v.shape == (6,) for v in out.values())
    model.record_attention(True)
    model(empty, kjt)
    assert next(iter(model.fm_attention_weights().values())).shape[1] == mh.NUM_FEATURES
    model.record_attention(False)
    serving = model.without_aux_heads()
    serving.use_reference_fm(True)
    path = tmp_path / "m.pt"
    torch.jit.script(torchrec.fx.symbolic_trace(serving)).save(str(path))
    loaded = torch.jit.load(str(path))
    model.use_reference_fm(False)
    for b, seed in ((1, 3), (7, 4)):
        _, kjt_b, _ = mh.batch(b, seed)
        want = model(torch.zeros(b, 0), kjt_b)["primary"]
        torch.testing.assert_close(loaded(torch.zeros(b, 0), kjt_b)["primary"], want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="dense_in_features >= 0"):
        C2ALModel(mh.tables(8), -1, small_cfg(), aux_heads=False)


@pytest.mark.parametrize("hidden", [[], [3], [5, 4]])
def test_heads_sharing_one_first_gemm_match_separate_heads_float64(hidden):
    from c2al_rec.modules.mlp import mlp, mlps_on_shared_input

    torch.manual_seed(0)
    heads = [mlp(6, h, 1).double() for h in ([7], hidden, hidden)]
    x = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    fused = mlps_on_shared_input(x, heads)
    grads_fused = torch.autograd.grad(sum(z.square().sum() for z in fused), [x, *heads[1].parameters()])
    separate = [m(x) for m in heads]
    grads_separate = torch.autograd.grad(sum(z.square().sum() for z in separate), [x, *heads[1].parameters()])
    for a, b in zip(fused + list(grads_fused), separate + list(grads_separate)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_c2al_heads_read_h_as_separate_heads_would():
    model = C2ALModel(mh.tables(8), mh.DENSE, small_cfg(), aux_heads=True).double()
    x = torch.randn(5, model.num_tokens, 8, dtype=torch.float64)
    out = model.forward_from_tokens(x)
    h = model.over_arch(x)
    torch.testing.assert_close(out["primary"], model.primary_head(h).squeeze(-1))
    for name in ("head", "tail"):
        torch.testing.assert_close(out[name], model.aux_heads[name](h).squeeze(-1))


def test_aux_projection_heads_read_one_shared_projection_float64():
    torch.manual_seed(0)
    model = C2ALModel(mh.tables(8), mh.DENSE, small_cfg(aux_projection=3), aux_heads=True).double()
    projection = model.aux_heads["projection"]
    assert projection[0].in_features == model.over_arch.repr_dim and projection[0].out_features == 3
    x = torch.randn(5, model.num_tokens, 8, dtype=torch.float64, requires_grad=True)
    out = model.forward_from_tokens(x)
    h = model.over_arch(x)
    z = projection(h)  # [B, 3]
    want = {"primary": model.primary_head(h), **{n: model.aux_heads[n](z) for n in ("head", "tail")}}
    for name, w in want.items():
        torch.testing.assert_close(out[name], w.squeeze(-1), rtol=1e-12, atol=1e-12)
    # the aux losses reach the shared representation through the projection
    (grad,) = torch.autograd.grad(out["tail"].sum(), x)
    (want_grad,) = torch.autograd.grad(want["tail"].sum(), x)
    torch.testing.assert_close(grad, want_grad, rtol=1e-12, atol=1e-12)
    assert grad.abs().sum() > 0


def test_serving_form_drops_the_aux_projection():
    model = C2ALModel(mh.tables(8), mh.DENSE, small_cfg(aux_projection=3), aux_heads=True)
    serving = model.without_aux_heads()
    assert not [n for n, _ in serving.named_parameters() if "aux" in n]
    dense, kjt, _ = mh.batch(4, 1)
    assert set(serving(dense, kjt)) == {"primary"}
    torch.testing.assert_close(serving(dense, kjt)["primary"], model(dense, kjt)["primary"])


def test_negative_aux_projection_is_a_config_error():
    from c2al_rec.config.errors import ConfigError

    with pytest.raises(ConfigError, match="model.aux_projection must be >= 0"):
        small_cfg(aux_projection=-1)
