"""Unit tests of budgets, the ball, the PGD ascent and matched noise on toy reconstructions (no DIRECT engine)."""

import pytest
import torch

from smug_plugin.robustness.attacks.ball import project
from smug_plugin.robustness.attacks.budgets import Budget, BudgetConvention, NormType
from smug_plugin.robustness.attacks.gaussian import matched_noise
from smug_plugin.robustness.attacks.pgd import estimate_gradient, projected_gradient_ascent

B, C, H, W = 3, 2, 8, 6


def _mask(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cols = torch.rand(W, generator=g) < 0.5
    cols[W // 2] = True
    return cols.view(1, 1, 1, W, 1).expand(B, 1, H, W, 1).clone()


class LinearRecon:
    """Fixed random linear reconstruction f(y) = W vec(y), optionally with additive output noise per draw."""

    def __init__(self, noise: float = 0.0, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(H * W, C * H * W * 2, generator=g) / 20
        self.noise = noise

    def __call__(self, y: torch.Tensor, draw: int = 0) -> torch.Tensor:
        out = (y.reshape(y.shape[0], -1) @ self.weight.T).reshape(y.shape[0], H, W)
        if self.noise:
            out = out + self.noise * torch.randn(out.shape, generator=torch.Generator().manual_seed(1000 + draw))
        return out


def _problem(noise: float = 0.0):
    g = torch.Generator().manual_seed(1)
    mask = _mask()
    y = torch.randn(B, C, H, W, 2, generator=g) * mask
    model = LinearRecon(noise)
    target = model(y) + 0.1 * torch.randn(B, H, W, generator=g)

    def objective(delta: torch.Tensor, draw: int) -> torch.Tensor:
        return ((model(y + delta, draw) - target) ** 2).flatten(1).mean(1)

    return y, mask, objective


@pytest.mark.parametrize("norm", [NormType.LINF, NormType.L2])
def test_pgd_stays_in_ball_and_on_acquired_entries(norm):
    y, mask, objective = _problem()
    eps = torch.tensor([0.05, 0.1, 0.2])
    res = projected_gradient_ascent(objective, y.shape, mask, eps, norm, torch.Generator().manual_seed(0), steps=5)
    delta = res.kspace_delta
    assert torch.all(delta[~mask.expand_as(delta)] == 0)
    assert delta.abs().sum() > 0
    if norm == NormType.LINF:
        assert torch.all(delta.flatten(1).abs().amax(1) <= eps + 1e-7)
        # Sign steps reach the faces of the box.
        assert torch.allclose(delta.flatten(1).abs().amax(1), eps)
    else:
        assert torch.all(delta.flatten(1).norm(dim=1) <= eps * (1 + 1e-5))


def test_projection_is_idempotent_and_clips():
    mask = _mask()
    d = torch.randn(B, C, H, W, 2) * 3
    eps = torch.full((B,), 0.5)
    for norm in NormType:
        p = project(d, eps, norm, mask)
        assert torch.allclose(project(p, eps, norm, mask), p)
        assert torch.all(p[~mask.expand_as(p)] == 0)


def test_pgd_hurts_more_than_matched_gaussian_noise():
    y, mask, objective = _problem()
    eps = torch.full((B,), 0.05)
    res = projected_gradient_ascent(objective, y.shape, mask, eps, NormType.LINF, torch.Generator().manual_seed(0))
    noise = matched_noise(y.shape, eps, NormType.LINF, mask, torch.Generator().manual_seed(0))
    # The noise has the energy of the ball's vertex, at least that of the attack.
    vertex = 0.05 * mask.expand_as(y).flatten(1).sum(1).sqrt()
    assert torch.allclose(noise.flatten(1).norm(dim=1), vertex, rtol=1e-4)
    assert torch.all(res.kspace_delta.flatten(1).norm(dim=1) <= vertex * (1 + 1e-5))
    clean = objective(torch.zeros_like(y), 0)
    assert torch.all(objective(res.kspace_delta, 0) - clean > 2 * (objective(noise, 0) - clean).abs())


def test_more_steps_never_weaker_on_deterministic_model():
    y, mask, objective = _problem()
    eps = torch.full((B,), 0.05)
    previous = None
    for steps in (1, 3, 5, 10):
        generator = torch.Generator().manual_seed(7)
        res = projected_gradient_ascent(objective, y.shape, mask, eps, NormType.LINF, generator, steps=steps)
        # The reported objective is the one of the returned perturbation.
        assert torch.allclose(objective(res.kspace_delta, 0), res.objective, rtol=1e-5)
        if previous is not None:
            assert torch.all(res.objective >= previous - 1e-6)
        previous = res.objective


def test_same_seed_same_attack():
    y, mask, objective = _problem()
    eps = torch.full((B,), 0.05)
    a = projected_gradient_ascent(
        objective, y.shape, mask, eps, NormType.LINF, torch.Generator().manual_seed(3), steps=3
    )
    b = projected_gradient_ascent(
        objective, y.shape, mask, eps, NormType.LINF, torch.Generator().manual_seed(3), steps=3
    )
    assert torch.equal(a.kspace_delta, b.kspace_delta)


def test_eot_gradient_has_lower_variance_than_single_draw():
    y, mask, objective = _problem(noise=1.0)
    delta = torch.zeros_like(y)

    def spread(draws_per_estimate: int) -> float:
        grads = [
            estimate_gradient(objective, lambda v: v, delta, list(range(i * 100, i * 100 + draws_per_estimate)))[0]
            for i in range(12)
        ]
        return torch.stack(grads).var(dim=0).sum().item()

    assert spread(8) < 0.5 * spread(1)


def test_budget_conventions():
    mask = _mask()
    y = torch.randn(B, C, H, W, 2) * mask
    linf = Budget(0.5, BudgetConvention.RELATIVE_MAX).resolve(y, mask)
    assert torch.allclose(linf, 0.5 * y.flatten(1).abs().amax(1))
    l2 = Budget(0.1, "relative_l2", "l2").resolve(y, mask)
    assert torch.allclose(l2, 0.1 * y.flatten(1).norm(dim=1))
    assert torch.all(Budget(0.02).resolve(y, mask) == 0.02)
    assert "relative l2" in Budget(0.1, "relative_l2", "l2").describe()


@pytest.mark.parametrize(
    "kwargs", [{"value": -0.1}, {"value": float("nan")}, {"value": 0.1, "convention": "relative_l2", "norm": "linf"}]
)
def test_bad_budget_is_rejected(kwargs):
    with pytest.raises(ValueError):
        Budget(**kwargs)


def test_unknown_budget_convention_is_rejected():
    with pytest.raises(ValueError):
        Budget(0.1, "percent")


def test_image_domain_lift_is_linear_and_masked():
    from direct.data.transforms import fft2, ifft2

    from smug_plugin.operators import MultiCoilOperator
    from smug_plugin.robustness.attacks.domain import AttackDomain, perturbed_signal

    mask = _mask()
    sens = torch.randn(B, C, H, W, 2)
    y = torch.randn(B, C, H, W, 2) * mask

    class Model:
        def operator(self, batch):
            return MultiCoilOperator(fft2, ifft2, sens, batch["sampling_mask"])

    perturbed = perturbed_signal(AttackDomain.IMAGE, Model(), {"masked_kspace": y, "sampling_mask": mask})
    lift = perturbed.lift
    a, b = torch.randn(B, H, W, 2), torch.randn(B, H, W, 2)
    assert torch.allclose(lift(a + 2 * b), lift(a) + 2 * lift(b), atol=1e-5)
    assert torch.all(lift(a)[~mask.expand(B, C, H, W, 2)] == 0)
    # <A x, y> = <x, A^H y>: the signal the budget is measured on is the adjoint of the lift applied to y.
    lhs = (lift(a) * y).sum()
    rhs = (a * perturbed.signal).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-4)
