"""A sparse l0 impulse attack on the raw k-space ("herringbone", after the artifact a few k-space spikes make; the
third attack of CycMit-MRI, Saberi et al.).

At most ``entries`` acquired complex k-space entries (coil, row, column) per slice change, each by at most eps in
its real and in its imaginary part: the ball {d : ||d||_0 <= k on the acquired entries, ||d||_inf <= eps}. The
support is chosen where the objective's gradient at the measured k-space is largest (complex magnitude), then PGD
ascends the objective on those entries only. The paper's exact k and amplitude are not stated in what this plugin
follows; the defaults are documented choices: k = 10 entries per slice, eps = 0.5 x max |Re, Im| of the measured
k-space (`relative_max`, a spike as large as half the k-space peak), 10 steps of eps / 3, MSE to the ground truth.
"""

from dataclasses import dataclass

import torch

from smug_plugin.robustness.attacks.ball import per_slice
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
from smug_plugin.robustness.attacks.budgets import Budget, BudgetConvention, NormType
from smug_plugin.robustness.attacks.domain import AttackDomain
from smug_plugin.robustness.attacks.pgd import GradientHealth, estimate_gradient, projected_gradient_ascent
from smug_plugin.robustness.attacks.problem import problem_of

DEFAULT_BUDGET = Budget(0.5, BudgetConvention.RELATIVE_MAX, NormType.LINF)


@dataclass(frozen=True)
class HerringboneSettings(AttackSettings):
    """Settings of the sparse impulse attack.

    Parameters
    ----------
    budget : Budget
        l_inf amplitude per real/imaginary part of each changed entry (l_inf only).
    entries : int
        k, the most acquired complex k-space entries (coil, row, column) changed per slice.
    steps : int
        PGD steps on the chosen entries.
    step_fraction : float
        Step as a fraction of eps.
    target : AttackTarget
        Push away from the ground truth or from the clean reconstruction.
    """

    budget: Budget = DEFAULT_BUDGET
    entries: int = 10
    steps: int = 10
    step_fraction: float = 1.0 / 3.0
    target: AttackTarget = AttackTarget.GROUND_TRUTH

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.budget.norm != NormType.LINF:
            raise ValueError("the herringbone attack bounds each entry's amplitude: its budget's norm must be linf.")
        for name, value, least in (("entries", self.entries, 1), ("steps", self.steps, 0)):
            if value < least:
                raise ValueError(f"{name} >= {least} required, got {value!r}.")
        if self.step_fraction <= 0:
            raise ValueError(f"step_fraction > 0 (a fraction of eps) required, got {self.step_fraction!r}.")

    def model_passes(self) -> float:
        return float(3 * (self.steps + 1) + 1)

    def describe(self) -> str:
        return (
            f"herringbone (sparse l0 impulses) k-space: at most {self.entries} acquired complex entries per slice, "
            f"each {self.budget.describe()}; support by the largest gradient, {self.steps} steps of "
            f"{self.step_fraction:.3g} eps, loss=MSE to {self.target.value}"
        )


def top_entries(score: torch.Tensor, support: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` entries (of the complex entries, the trailing real/imaginary axis dropped) with the largest
    ``score`` inside ``support``, per slice, as a mask shaped as ``score`` with the trailing axis of size 1."""
    magnitude = score.norm(dim=-1, keepdim=True)
    allowed = support.expand_as(magnitude)
    ranked = per_slice(torch.where(allowed, magnitude, torch.full_like(magnitude, -1.0)))
    k = min(k, ranked.shape[1])
    chosen = torch.zeros_like(ranked, dtype=torch.bool)
    chosen.scatter_(1, ranked.topk(k, dim=1).indices, True)
    return (chosen & per_slice(allowed)).view_as(magnitude)


@register_attack
class Herringbone(Attack):
    """Sparse impulses on at most k acquired k-space entries, chosen by the gradient, then ascended by PGD."""

    kind = "herringbone"
    Settings = HerringboneSettings
    white_box = True
    family = AttackFamily.GRADIENT

    def __call__(self, model: AttackedModel, batch: dict, targets: Targets, seed: int) -> AttackOutcome:
        settings = self.settings
        problem = problem_of(settings, model, batch, targets, seed, domain=AttackDomain.KSPACE)
        signal, acquired = problem.perturbed.signal, problem.perturbed.support
        # The gradient at a tiny random point: at exactly zero, a magnitude output can have no gradient.
        start = (
            1e-3
            * problem.eps.view(-1, *[1] * (signal.ndim - 1))
            * torch.randn(signal.shape, generator=problem.generator, device=signal.device)
        )
        gradient, _ = estimate_gradient(problem.objective, lambda v: v, start * acquired, [0])
        support = top_entries(gradient, acquired, settings.entries)
        health = GradientHealth(support)
        result = projected_gradient_ascent(
            problem.objective,
            signal.shape,
            support,
            problem.eps,
            NormType.LINF,
            problem.generator,
            steps=settings.steps,
            step_fraction=settings.step_fraction,
            random_start=False,
            draws_per_step=problem.draws,
            health=health,
        )
        diagnostics = {**health.diagnostics(), "changed_entries": per_slice(support).sum(dim=1).tolist()}
        return AttackOutcome(
            result.kspace_delta,
            problem.eps.tolist(),
            result.objective.tolist(),
            result.history,
            diagnostics=diagnostics,
        )
