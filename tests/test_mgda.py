"""MGDA min-norm solver on constructed gradients, and the one-backward combiner."""

from __future__ import annotations

import pytest
import torch

from pyspk.balance.fixed import fixed_combine
from pyspk.balance.mgda import alpha_from_inner_products, inner_products, mgda_combine, min_norm_alpha


def _grid_alpha(g1: torch.Tensor, g2: torch.Tensor, steps: int = 10001) -> float:
    """Brute force: the α on a fine grid of [0, 1] with the smallest ‖α g1 + (1-α) g2‖."""
    alphas = torch.linspace(0, 1, steps, dtype=torch.float64)
    norms = ((alphas[:, None] * g1.double()[None] + (1 - alphas[:, None]) * g2.double()[None]) ** 2).sum(1)
    return float(alphas[norms.argmin()])


def test_equal_gradients_give_half():
    g = torch.tensor([0.3, -1.2, 2.0])
    assert min_norm_alpha(g, g.clone()) == 0.5
    assert min_norm_alpha(torch.zeros(5), torch.zeros(5)) == 0.5


def test_opposite_gradients():
    g = torch.tensor([1.0, 2.0, -0.5])
    assert min_norm_alpha(g, -g) == pytest.approx(0.5)
    # unequal norms, g2 = -3 g1: α = 3/4 puts the combination at the origin
    assert min_norm_alpha(g, -3 * g) == pytest.approx(0.75)


def test_orthogonal_gradients_of_unequal_norms():
    g1 = torch.tensor([3.0, 0.0, 0.0])
    g2 = torch.tensor([0.0, 1.0, 0.0])
    # α = |g2|² / (|g1|² + |g2|²)
    assert min_norm_alpha(g1, g2) == pytest.approx(1.0 / 10.0)
    assert min_norm_alpha(g2, g1) == pytest.approx(9.0 / 10.0)


def test_one_zero_gradient():
    g = torch.tensor([0.5, -0.5, 1.0])
    assert min_norm_alpha(torch.zeros(3), g) == 1.0  # all weight on the zero gradient
    assert min_norm_alpha(g, torch.zeros(3)) == 0.0


def test_clipping_when_one_gradient_dominates():
    g1 = torch.tensor([1.0, 0.0])
    g2 = torch.tensor([2.0, 0.1])  # the min-norm point of the segment is g1 itself
    assert min_norm_alpha(g1, g2) == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_min_norm_property_against_grid_search(seed):
    g = torch.Generator().manual_seed(seed)
    g1 = torch.randn(4, 7, generator=g)
    g2 = torch.randn(4, 7, generator=g) * (0.2 + seed)  # any shape: flattened
    if seed % 2:
        g2 = g2 + 2 * g1  # gradients that agree: α is clipped at an end
    assert min_norm_alpha(g1, g2) == pytest.approx(_grid_alpha(g1.flatten(), g2.flatten()), abs=2e-4)


def test_non_finite_gradient_raises():
    with pytest.raises(FloatingPointError):
        min_norm_alpha(torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="size"):
        min_norm_alpha(torch.ones(3), torch.ones(4))


LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def _toy_problem(seed=0, deep=False):
    """(encoder, head, losses): ``losses()`` runs the batch through both and returns (Z, L_cls,
    L_con). ``deep``: a two-layer encoder, whose parameter gradients are not linear in Z's."""
    torch.manual_seed(seed)
    if deep:
        encoder = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4))
    else:
        encoder = torch.nn.Linear(6, 4)
    head = torch.nn.Linear(4, 3, bias=not deep)
    x = torch.randn(8, 6)
    labels = LABELS

    def losses():
        z = encoder(x)
        loss_cls = torch.nn.functional.cross_entropy(head(z), labels)
        loss_con = (z.pow(2).sum(1) - 1).pow(2).mean()
        return z, loss_cls, loss_con

    return encoder, head, losses


def test_mgda_combine_gradient_is_alpha_weighted_sum():
    encoder, head, losses = _toy_problem()
    z, loss_cls, loss_con = losses()
    g1, g2 = (torch.autograd.grad(loss, z, retain_graph=True)[0] for loss in (loss_cls, loss_con))
    total, alpha = mgda_combine(loss_cls, loss_con, z)
    assert isinstance(alpha, float) and 0.0 < alpha < 1.0
    assert alpha == pytest.approx(_grid_alpha(g1.flatten(), g2.flatten()), abs=2e-4)
    assert total.item() == pytest.approx(alpha * loss_cls.item() + (1 - alpha) * loss_con.item(), rel=1e-6)
    total.backward()
    got = [p.grad.clone() for p in encoder.parameters()]

    # reference: each loss's encoder gradient on a fresh graph, weighted by α
    encoder.zero_grad()
    _, loss_cls, loss_con = losses()
    refs_cls = torch.autograd.grad(loss_cls, list(encoder.parameters()), retain_graph=True)
    refs_con = torch.autograd.grad(loss_con, list(encoder.parameters()))
    for g, a, b in zip(got, refs_cls, refs_con):
        assert torch.allclose(g, alpha * a + (1 - alpha) * b, atol=1e-6)
    # the head gets the combined loss's gradient: α ∂L_cls/∂W (L_con does not touch it)
    _, loss_cls, _ = losses()
    head_ref = torch.autograd.grad(loss_cls, head.weight)[0]
    assert torch.allclose(head.weight.grad, alpha * head_ref, atol=1e-6)


def test_mgda_combine_with_loss_independent_of_shared():
    z = torch.randn(3, 2, requires_grad=True)
    w = torch.randn(2, requires_grad=True)
    total, alpha = mgda_combine(z.pow(2).sum(), w.pow(2).sum(), z)
    assert alpha == 0.0  # g2 = 0 wrt z: all weight on the loss that does not move z
    with pytest.raises(ValueError, match="require grad"):
        mgda_combine(z.sum(), z.sum(), z.detach())


def test_fixed_combine():
    a, b = torch.tensor(2.0), torch.tensor(3.0)
    assert fixed_combine(a, b, 0.5).item() == 3.5
    with pytest.raises(ValueError):
        fixed_combine(a, b, -1.0)


def test_all_reduce_hook_sums_products_over_ranks():
    # Two "ranks" holding halves of the batch: summing the inner products over ranks
    # must give the α of the whole batch.
    torch.manual_seed(3)
    g1, g2 = torch.randn(8, 5), torch.randn(8, 5)
    want = min_norm_alpha(g1, g2)
    other = inner_products(g1[4:], g2[4:])
    z = torch.randn(4, 5, requires_grad=True)
    loss_cls = (z * g1[:4]).sum()  # gradient w.r.t. z is g1's first half
    loss_con = (z * g2[:4]).sum()
    _, alpha = mgda_combine(loss_cls, loss_con, z, all_reduce=lambda t: t + other)
    assert alpha == pytest.approx(want, rel=1e-9)
    g11, g12, g22 = inner_products(g1, g2).tolist()
    assert alpha_from_inner_products(g11, g12, g22) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("normalize", ["l2", "loss", "authors"])
def test_mgda_variants_by_hand(normalize):
    _, _, losses = _toy_problem()
    z, loss_cls, loss_con = losses()
    g1, g2 = (torch.autograd.grad(loss, z, retain_graph=True)[0].flatten().double() for loss in (loss_cls, loss_con))
    if normalize == "l2":
        c1, c2 = 1 / g1.norm().item(), 1 / g2.norm().item()
    elif normalize == "loss":
        c1, c2 = 1 / loss_cls.item(), 1 / loss_con.item()
    else:
        c1 = c2 = 1.0
    a, b = c1 * g1, c2 * g2
    if normalize == "authors":  # MTL.py: divided by the norm of the difference, not its square
        want = min(1.0, max(0.0, ((b - a) @ b).item() / (a - b).norm().item()))
    else:
        want = _grid_alpha(a, b)
    total, alpha = mgda_combine(loss_cls, loss_con, z, normalize=normalize, combine="scaled")
    assert alpha == pytest.approx(want, abs=2e-4)
    assert total.item() == pytest.approx(alpha * c1 * loss_cls.item() + (1 - alpha) * c2 * loss_con.item(), rel=1e-6)
    with pytest.raises(ValueError, match="normalize"):
        mgda_combine(loss_cls, loss_con, z, normalize="unit")


@pytest.mark.parametrize("normalize", ["none", "l2", "loss"])
def test_mgda_raw_combine_keeps_the_losses_unscaled(normalize):
    _, _, losses = _toy_problem()
    z, loss_cls, loss_con = losses()
    _, alpha_scaled = mgda_combine(loss_cls, loss_con, z, normalize=normalize, combine="scaled")
    total, alpha = mgda_combine(loss_cls, loss_con, z, normalize=normalize)  # raw is the default
    assert alpha == alpha_scaled  # the normalisation still picks alpha
    assert total.item() == pytest.approx(alpha * loss_cls.item() + (1 - alpha) * loss_con.item(), rel=1e-6)
    g1, g2 = (torch.autograd.grad(loss, z, retain_graph=True)[0] for loss in (loss_cls, loss_con))
    (g,) = torch.autograd.grad(total, z, retain_graph=True)
    assert torch.allclose(g, alpha * g1 + (1 - alpha) * g2, atol=1e-6)
    if normalize == "l2":  # two unit vectors: their min-norm point is the middle
        assert alpha == pytest.approx(0.5, abs=1e-9)
    with pytest.raises(ValueError, match="combine"):
        mgda_combine(loss_cls, loss_con, z, combine="sum")


def test_authors_denominator_is_not_scale_invariant():
    g11, g12, g22 = 4.0, 0.5, 1.0
    assert alpha_from_inner_products(g11, g12, g22) == alpha_from_inner_products(4 * g11, 4 * g12, 4 * g22)
    a1 = alpha_from_inner_products(g11, g12, g22, denominator="norm")
    a4 = alpha_from_inner_products(4 * g11, 4 * g12, 4 * g22, denominator="norm")
    assert a1 == pytest.approx((g22 - g12) / (g11 - 2 * g12 + g22) ** 0.5)
    assert a4 == pytest.approx(2 * a1)
