"""CycMit-MRI's image-domain attack (Saberi et al.): l_inf PGD on the zero-filled image A^H y, ascending the
unsupervised objective ||f(x + d) - f(x)|| / ||f(x)|| (no ground truth: the target is the model's own clean
reconstruction), eps 0.01 x max |A^H y| per slice (`relative_zero_filled`), 10 steps of eps / 5, a uniform random
start in the box scaled by 1 / sqrt(2). The image perturbation reaches the model as its lift A d (`domain`).
"""

import dataclasses
import math
from dataclasses import dataclass

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
from smug_plugin.robustness.attacks.objective import AttackLoss
from smug_plugin.robustness.attacks.pgd import ascend
from smug_plugin.robustness.attacks.problem import problem_of

PAPER_BUDGET = Budget(0.01, BudgetConvention.RELATIVE_ZERO_FILLED, NormType.LINF)


@dataclass(frozen=True)
class UnsupervisedSettings(AttackSettings):
    """Settings of the unsupervised attack (the paper's values by default).

    Parameters
    ----------
    budget : Budget
        The ball (default l_inf 0.01 x max |A^H y| per real/imaginary image entry).
    domain : AttackDomain
        ``image`` (the paper) or ``kspace``.
    steps : int
        Ascent steps (10).
    step_fraction : float
        Step as a fraction of eps (1/5).
    start_scale : float
        The uniform random start in the ball is multiplied by this (1 / sqrt(2)); 0 starts at zero.
    """

    budget: Budget = PAPER_BUDGET
    domain: AttackDomain = AttackDomain.IMAGE
    steps: int = 10
    step_fraction: float = 0.2
    start_scale: float = 1 / math.sqrt(2)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 0:
            raise ValueError(f"steps >= 0 required, got {self.steps!r}.")
        if self.step_fraction <= 0:
            raise ValueError(f"step_fraction > 0 (a fraction of eps) required, got {self.step_fraction!r}.")
        if not 0 <= self.start_scale <= 1:
            raise ValueError(f"start_scale in [0, 1] required, got {self.start_scale!r}.")

    def model_passes(self) -> float:
        return float(3 * self.steps + 1)

    def describe(self) -> str:
        return (
            f"unsupervised pgd {self.domain.value} {self.budget.describe()}, {self.steps} steps of "
            f"{self.step_fraction:.3g} eps, uniform start x {self.start_scale:.3g}, "
            "loss=||f(x+d) - f(x)|| / ||f(x)|| (target: the clean reconstruction, no ground truth)"
        )


@register_attack
class UnsupervisedPGD(Attack):
    """PGD on ||f(x + d) - f(x)|| / ||f(x)||, f(x) the model's own clean reconstruction (computed here when the
    targets carry none)."""

    kind = "unsupervised_pgd"
    Settings = UnsupervisedSettings
    white_box = True
    family = AttackFamily.GRADIENT

    def __call__(self, model: AttackedModel, batch: dict, targets: Targets, seed: int) -> AttackOutcome:
        settings = self.settings
        if targets.clean is None:
            targets = dataclasses.replace(targets, clean=lambda m: m.reconstruct(batch, None, noise_seed=seed))
        problem = problem_of(
            settings, model, batch, targets, seed, target=AttackTarget.CLEAN, loss=AttackLoss.RELATIVE_L2
        )
        return ascend(
            problem,
            settings.budget.norm,
            steps=settings.steps,
            step_fraction=settings.step_fraction,
            random_start=settings.start_scale > 0,
            start_scale=settings.start_scale,
        )
