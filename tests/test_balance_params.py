"""Balancers at the parameter level (pyspk/balance/gradients.py) and Nash-MTL (pyspk/balance/nash.py),
checked by hand against gradients computed directly."""

from __future__ import annotations

import math

import pytest
import torch
from test_mgda import LABELS, _toy_problem

from pyspk.balance import BALANCERS
from pyspk.balance.gradients import ParamGroups, TaskGradients
from pyspk.balance.mgda import Mgda, MgdaSettings, min_norm_alpha
from pyspk.balance.nash import NashMtl, NashMtlSettings, nash_weights


def _problem(seed=0):
    encoder, head, losses = _toy_problem(seed, deep=True)
    return encoder, head, LABELS, losses


def _direct(encoder, head, losses):
    """Each loss's gradient w.r.t. the encoder's parameters (flat) and the head's weight."""
    enc = list(encoder.parameters())
    _, l1, l2 = losses()
    g1 = torch.autograd.grad(l1, enc + [head.weight], retain_graph=True, allow_unused=True)
    g2 = torch.autograd.grad(l2, enc + [head.weight], allow_unused=True)
    flat = lambda gs: torch.cat([g.reshape(-1) for g in gs[:-1]])  # noqa: E731
    return flat(g1), flat(g2), g1[-1], g2[-1]


def _run(balancer, encoder, head, labels, losses):
    z, l1, l2 = losses()
    params = ParamGroups(list(encoder.parameters()), list(head.parameters()))
    total, alpha, logged = balancer(
        l1, l2, z, lambda x: torch.nn.functional.cross_entropy(head(x), labels), None, params=params
    )
    encoder.zero_grad(), head.zero_grad()
    total.backward()
    got = torch.cat([p.grad.reshape(-1) for p in encoder.parameters()])
    return got, head.weight.grad.clone(), alpha, logged, (l1.item(), l2.item())


@pytest.mark.parametrize("seed", range(3))
def test_mgda_on_parameters_is_the_min_norm_point_of_the_encoder_gradients(seed):
    encoder, head, labels, losses = _problem(seed)
    g1, g2, h1, h2 = _direct(encoder, head, losses)
    want = min_norm_alpha(g1, g2)
    mgda = Mgda(MgdaSettings(level="parameters", normalize="none"))
    got, head_grad, alpha, logged, (l1, l2) = _run(mgda, encoder, head, labels, losses)
    assert alpha == pytest.approx(want, abs=1e-9)
    # min-norm: no other point of the segment is shorter
    norms = [((a * g1 + (1 - a) * g2).norm()).item() for a in torch.linspace(0, 1, 201).tolist()]
    assert (alpha * g1 + (1 - alpha) * g2).norm().item() <= min(norms) + 1e-6
    # the step's encoder gradient is the combination, computed without a third backward
    assert torch.allclose(got, alpha * g1 + (1 - alpha) * g2, atol=1e-6)
    # head_grad full: the head's weight follows all of its own loss (L_con does not touch it)
    assert h2 is None and torch.allclose(head_grad, h1, atol=1e-7)
    assert logged == pytest.approx(alpha * l1 + (1 - alpha) * l2, rel=1e-6)


def test_mgda_parameter_level_differs_from_the_embedding_level():
    encoder, head, labels, losses = _problem(1)
    z, l1, l2 = losses()
    e1, e2 = (torch.autograd.grad(loss, z, retain_graph=True)[0] for loss in (l1, l2))
    g1, g2, _, _ = _direct(encoder, head, losses)
    assert abs(min_norm_alpha(e1, e2) - min_norm_alpha(g1, g2)) > 1e-3  # two different problems


def test_mgda_head_grad_alpha_on_parameters():
    encoder, head, labels, losses = _problem(2)
    _, _, h1, _ = _direct(encoder, head, losses)
    mgda = Mgda(MgdaSettings(level="parameters", normalize="none", head_grad="alpha"))
    _, head_grad, alpha, _, _ = _run(mgda, encoder, head, labels, losses)
    assert torch.allclose(head_grad, alpha * h1, atol=1e-7)


def test_nash_weights_by_hand():
    # g1 = (3, 0), g2 = (0, 1): orthogonal, so alpha_t = 1 / n_t = (1/3, 1)
    a1, a2 = nash_weights(9.0, 0.0, 1.0)
    assert (a1, a2) == pytest.approx((1 / 3, 1.0))
    # they solve (G^T G alpha)_t = 1 / alpha_t
    assert (9.0 * a1 + 0.0 * a2) == pytest.approx(1 / a1) and (0.0 * a1 + 1.0 * a2) == pytest.approx(1 / a2)
    # g1 = (1, 0), g2 = (1, 1): c = 1/sqrt(2)
    c = 1 / math.sqrt(2)
    a1, a2 = nash_weights(1.0, 1.0, 2.0)
    assert a1 == pytest.approx(1 / math.sqrt(1 + c)) and a2 == pytest.approx(1 / (math.sqrt(2) * math.sqrt(1 + c)))
    # exactly opposed gradients: no solution, 1 + c floored
    a1, a2 = nash_weights(1.0, -1.0, 1.0, min_one_plus_cos=0.01)
    assert (a1, a2) == pytest.approx((10.0, 10.0))
    with pytest.raises(FloatingPointError):
        nash_weights(float("nan"), 0.0, 1.0)


@pytest.mark.parametrize("seed", range(4))
def test_nash_weights_solve_the_bargaining_equations(seed):
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(2, 30, generator=g, dtype=torch.float64) * torch.tensor([[0.1 + seed], [2.0]], dtype=torch.float64)
    gram = G @ G.T
    a = torch.tensor(nash_weights(gram[0, 0].item(), gram[0, 1].item(), gram[1, 1].item()), dtype=torch.float64)
    assert torch.allclose(gram @ a, 1 / a, rtol=1e-9)
    d = a @ G
    assert d.norm().item() == pytest.approx(math.sqrt(2))  # the bisector of the unit gradients, norm sqrt(2)
    # IMTL-G: the update's projections on the two unit gradients are equal
    u = G / G.norm(dim=1, keepdim=True)
    proj = u @ d
    assert proj[0].item() == pytest.approx(proj[1].item())


@pytest.mark.parametrize("scale", ["nash", "unit_sum"])
def test_nash_mtl_step_on_parameters(scale):
    encoder, head, labels, losses = _problem(3)
    g1, g2, h1, _ = _direct(encoder, head, losses)
    w1, w2 = nash_weights((g1 @ g1).item(), (g1 @ g2).item(), (g2 @ g2).item())
    share = w1 / (w1 + w2)
    if scale == "unit_sum":
        w1, w2 = share, 1 - share
    bal = NashMtl(NashMtlSettings(scale=scale))
    got, head_grad, alpha, _, _ = _run(bal, encoder, head, labels, losses)
    assert alpha == pytest.approx(share, rel=1e-6)
    assert torch.allclose(got, w1 * g1 + w2 * g2, atol=1e-6)
    assert torch.allclose(head_grad, h1, atol=1e-7)


def test_nash_mtl_on_embeddings():
    encoder, head, labels, losses = _problem(4)
    z, l1, l2 = losses()
    e1, e2 = (torch.autograd.grad(loss, z, retain_graph=True)[0].flatten() for loss in (l1, l2))
    w1, w2 = nash_weights((e1 @ e1).item(), (e1 @ e2).item(), (e2 @ e2).item())
    bal = NashMtl(NashMtlSettings(level="embeddings", head_grad="alpha"))
    total, alpha, _ = bal(l1, l2, z, None, None)
    assert total.item() == pytest.approx(w1 * l1.item() + w2 * l2.item(), rel=1e-6)
    assert alpha == pytest.approx(w1 / (w1 + w2))


def test_loss_scale_gives_the_same_step():
    encoder, head, labels, losses = _problem(5)
    params = ParamGroups(list(encoder.parameters()), list(head.parameters()))
    _, l1, l2 = losses()
    a = TaskGradients.at_parameters(l1, l2, params)
    _, l1, l2 = losses()
    b = TaskGradients.at_parameters(l1, l2, params, loss_scale=1024.0)
    assert torch.allclose(a.g1, b.g1, rtol=1e-5) and torch.allclose(a.g2, b.g2, rtol=1e-5)


def test_all_reduce_sums_the_gradients_not_the_products():
    # two "ranks" holding halves of the batch: the global gradient is the mean of the ranks'
    encoder, head, labels, losses = _problem(6)
    g1, g2, _, _ = _direct(encoder, head, losses)
    params = ParamGroups(list(encoder.parameters()), [])
    _, l1, l2 = losses()
    # this rank's gradients are (g1, g2) and the other's (g1, -g2): the mean is (g1, 0)
    other = torch.cat([g1, -g2]).float()
    grads = TaskGradients.at_parameters(l1, l2, params, all_reduce=lambda t: t + other, world_size=2)
    assert torch.allclose(grads.g1, g1, atol=1e-6) and torch.allclose(grads.g2, torch.zeros_like(g2), atol=1e-6)


def test_registered_and_configurable():
    assert "nash_mtl" in BALANCERS and "mgda" in BALANCERS
    from pyspk.train.config import config_from_dict, validate_config

    base = {
        "encoder": {"name": "tdnn"},
        "head": {"name": "aam"},
        "pair_loss": {"name": "am_supcon"},
    }
    cfg = config_from_dict({**base, "balance": {"name": "nash_mtl", "scale": "unit_sum"}})
    assert cfg.balance.level == "parameters" and cfg.balance.scale == "unit_sum"
    cfg = config_from_dict({**base, "balance": {"name": "mgda", "level": "parameters"}})
    assert cfg.balance.level == "parameters"
    with pytest.raises(ValueError, match="level"):
        config_from_dict({**base, "balance": {"name": "mgda", "level": "weights"}})
    with pytest.raises(ValueError, match="min_one_plus_cos"):
        validate_config(config_from_dict({**base, "balance": {"name": "nash_mtl", "min_one_plus_cos": 0.0}}))
