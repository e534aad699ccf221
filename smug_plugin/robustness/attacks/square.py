"""A gradient-free attack with the budget of the gradient attacks: random search in the style of the Square Attack
(Andriushchenko et al., ECCV 2020), on the acquired k-space entries or the image.

It queries the model's output only, so it is blind to whatever hides a model's gradient (gradient masking). It
starts from vertical stripes (each column of each coil and real/imaginary part at +eps or -eps) and then, once per
query, redraws a square window: centred on a random acquired entry, of side sqrt(p H W) with p decaying from
``p_init`` on the Square Attack's schedule, every coil and real/imaginary part at one random sign times eps. A
proposal is kept for the slices whose objective it raises. For l2 balls the window gets Gaussian values with the
energy it had and the whole perturbation is rescaled onto the sphere of radius eps (a simpler update than the
Square Attack's own l2 one).
"""

from dataclasses import dataclass

import torch

from smug_plugin.robustness.attacks.ball import per_slice, per_slice_scale, project
from smug_plugin.robustness.attacks.base import (
    Attack,
    AttackedModel,
    AttackFamily,
    AttackOutcome,
    AttackSettings,
    AttackTarget,
    Targets,
    register_attack,
)
from smug_plugin.robustness.attacks.budgets import Budget, NormType
from smug_plugin.robustness.attacks.domain import AttackDomain
from smug_plugin.robustness.attacks.gaussian import matched_noise
from smug_plugin.robustness.attacks.objective import AttackLoss
from smug_plugin.robustness.attacks.problem import AttackProblem, problem_of

# The Square Attack halves p after these fractions of 10000 queries (rescaled to the query budget).
HALVING_QUERIES = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


@dataclass(frozen=True)
class SquareSettings(AttackSettings):
    """Settings of the random-search attack.

    Parameters
    ----------
    budget : Budget
        Radius and norm of the ball, as for the gradient attacks.
    domain : AttackDomain
        Perturb the acquired k-space entries, or the image A^H y (lifted to k-space).
    queries : int
        Model evaluations per slice (the first scores the starting stripes).
    p_init : float
        Initial fraction of the H x W grid a window covers.
    target : AttackTarget
        Push away from the ground truth, or from the model's own clean reconstruction.
    loss : AttackLoss
        ``mse`` or ``ssim``.
    eot_samples : int
        Noise draws averaged per query of a randomized model.
    """

    budget: Budget
    domain: AttackDomain = AttackDomain.KSPACE
    queries: int = 100
    p_init: float = 0.05
    target: AttackTarget = AttackTarget.GROUND_TRUTH
    loss: AttackLoss = AttackLoss.MSE
    eot_samples: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("queries", "eot_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} >= 1 required, got {getattr(self, name)!r}.")
        if not 0 < self.p_init <= 1:
            raise ValueError(f"p_init in (0, 1] (a fraction of the image grid) required, got {self.p_init!r}.")

    def describe(self) -> str:
        draws = f", EOT over {self.eot_samples} draws/query" if self.eot_samples > 1 else ""
        return (
            f"square (gradient-free random search) {self.domain.value} {self.budget.describe()}, {self.queries} "
            f"queries, windows from {self.p_init:g} of the grid, loss={self.loss.value} to {self.target.value}{draws}"
        )


def window_fraction(p_init: float, query: int, queries: int) -> float:
    """The Square Attack's schedule of the window area, its query count rescaled to ``queries``."""
    rescaled = int(query / queries * 10000)
    return p_init / 2 ** sum(rescaled > q for q in HALVING_QUERIES)


def _spatial(support: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Which (H, W) positions of each slice hold an entry that may change, (batch, H, W)."""
    spatial = support.expand(shape).bool().any(-1)  # (batch, ..., H, W)
    return spatial.reshape(shape[0], -1, shape[-3], shape[-2]).any(1)


def _window(positions: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
    """A square of ``side`` per slice around a random allowed position, (batch, H, W) bool."""
    batch, height, width = positions.shape
    centre = torch.multinomial(positions.flatten(1).float(), 1, generator=generator).squeeze(1)
    top = (centre // width - side // 2).clamp(0, max(height - side, 0))
    left = (centre % width - side // 2).clamp(0, max(width - side, 0))
    rows = torch.arange(height, device=positions.device)
    cols = torch.arange(width, device=positions.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return in_rows[:, :, None] & in_cols[:, None, :]


def _as_variable(window: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (batch, H, W) map shaped to broadcast over the variable (batch, ..., H, W, 2)."""
    return window.view(window.shape[0], *([1] * (like.ndim - 4)), *window.shape[1:], 1)


def _signs(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=device).float() * 2 - 1


def random_search(problem: AttackProblem, norm: NormType, queries: int, p_init: float) -> tuple[torch.Tensor, list]:
    """The Square-style search; returns the best variable per slice and the best objective after every query."""
    shape, eps, generator = problem.perturbed.signal.shape, problem.eps, problem.generator
    support = problem.perturbed.support.expand(shape).to(torch.float32)
    device = support.device
    norm = NormType(norm)
    # Whatever is constant over H x W: the coils and the real/imaginary parts (the colour channels of an image).
    channels = (shape[0], *shape[1:-3], 1, 1, shape[-1])
    if norm == NormType.LINF:
        stripes = (*shape[:-3], 1, shape[-2], shape[-1])
        delta = _signs(stripes, generator, device) * per_slice_scale(eps, support) * support
    else:
        delta = matched_noise(shape, eps, norm, support, generator)

    def score(variable: torch.Tensor, query: int) -> torch.Tensor:
        draws = range(query * problem.draws, (query + 1) * problem.draws)
        with torch.no_grad():
            return torch.stack([problem.objective(problem.perturbed.lift(variable), d) for d in draws]).mean(0)

    best = score(delta, 0)
    trace = [best]
    positions = _spatial(support, shape)
    height, width = shape[-3], shape[-2]
    for query in range(1, queries):
        side = max(1, min(height, width, round((window_fraction(p_init, query, queries) * height * width) ** 0.5)))
        window = _as_variable(_window(positions, side, generator), delta)
        if norm == NormType.LINF:
            values = _signs(channels, generator, device) * per_slice_scale(eps, delta)
            proposal = torch.where(window, values, delta) * support
        else:
            inside = per_slice(delta * window).norm(dim=1)
            noise = torch.randn(shape, generator=generator, device=device) * window * support
            noise = noise * per_slice_scale(inside / per_slice(noise).norm(dim=1).clamp_min(1e-30), noise)
            proposal = torch.where(window, noise, delta)
            proposal = proposal * per_slice_scale(eps / per_slice(proposal).norm(dim=1).clamp_min(1e-30), proposal)
        proposal = project(proposal, eps, norm, support)
        value = score(proposal, query)
        better = value > best
        delta = torch.where(per_slice_scale(better, delta), proposal, delta)
        best = torch.maximum(best, value)
        trace.append(best)
    return delta, trace


@register_attack
class Square(Attack):
    """Gradient-free random search within the budget; its random draws come from ``seed`` and query ``q`` of a
    randomized model uses noise seeds ``seed + 1 + q * eot_samples + i``."""

    kind = "square"
    Settings = SquareSettings
    family = AttackFamily.GRADIENT_FREE

    def __call__(self, model: AttackedModel, batch: dict, targets: Targets, seed: int) -> AttackOutcome:
        settings = self.settings
        problem = problem_of(settings, model, batch, targets, seed)
        delta, trace = random_search(problem, settings.budget.norm, settings.queries, settings.p_init)
        return AttackOutcome(problem.perturbed.lift(delta).detach(), problem.eps.tolist(), trace[-1].tolist(), trace)
