"""Tier 1: the parallel / orthogonal split of the aux gradient (eq. 10-12) against direct algebra."""

import torch

from c2al_rec.analysis.gradients import decompose, gradient_alignment, group_parameters


def test_decompose_reconstructs_and_is_orthogonal() -> None:
    g = torch.Generator().manual_seed(0)
    p = [torch.randn(5, 3, generator=g), torch.randn(4, generator=g)]
    a = [torch.randn(5, 3, generator=g), torch.randn(4, generator=g)]
    d = decompose(p, a)
    pv = torch.cat([x.flatten() for x in p]).double()
    av = torch.cat([x.flatten() for x in a]).double()
    par = (av @ pv) / (pv @ pv) * pv
    assert abs(d["norm_parallel"] - float(par.norm())) < 1e-9
    assert abs(d["norm_orthogonal"] - float((av - par).norm())) < 1e-9
    assert abs(d["norm_parallel"] ** 2 + d["norm_orthogonal"] ** 2 - d["norm_aux"] ** 2) < 1e-9
    assert abs(d["cosine"] - float(torch.nn.functional.cosine_similarity(pv, av, dim=0))) < 1e-9


def test_aligned_and_opposed_gradients() -> None:
    p = [torch.tensor([1.0, 2.0])]
    assert decompose(p, [torch.tensor([2.0, 4.0])])["norm_orthogonal"] < 1e-12
    opposed = decompose(p, [torch.tensor([-1.0, -2.0])])
    assert abs(opposed["cosine"] + 1) < 1e-12 and abs(opposed["parallel_coef"] + 1) < 1e-12


def test_gradient_alignment_on_a_model_leaves_grads_untouched() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.randn(32, 4)
    out = model(x)
    lp = out[:, 0].pow(2).mean()
    la = out[:, 1].sin().mean()
    params = dict(model.named_parameters())
    res = gradient_alignment(lp, la, params)
    assert set(res) == {"all", "0", "2"} and all(p.grad is None for p in params.values())
    direct = torch.autograd.grad(lp, list(params.values()), retain_graph=True)
    assert abs(res["all"]["norm_primary"] - float(torch.cat([g.flatten() for g in direct]).norm())) < 1e-6
    assert group_parameters([("over_arch.layers.0.fm.w", None), ("over_arch.norm.w", None)]) == {
        "over_arch.layers.0": ["over_arch.layers.0.fm.w"],
        "over_arch.norm": ["over_arch.norm.w"],
    }
