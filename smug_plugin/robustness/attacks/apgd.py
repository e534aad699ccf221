"""Auto-PGD (APGD; Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020) on the reconstruction error: PGD without a step size to tune.

The step starts at 2 eps and is halved per slice at checkpoints (after 22 % of the steps, then at intervals that
shrink by 3 % of the steps down to 6 %) when the objective rose in at most 75 % of the steps since the last
checkpoint, or when neither the step was halved nor the best objective improved at the last one; a halved slice
restarts from its best point. Steps carry momentum 0.75. Restarts begin from new random points of the ball and
keep, per slice, the best. The schedule is that of the authors' reference implementation (AutoAttack's
``APGDAttack``); the gradient pieces (EOT average, ball, projection, objective) are PGD's.
"""

from dataclasses import dataclass

import torch

from smug_plugin.models.unrolled import AttackGradient
from smug_plugin.robustness.activity import ACTIVITY
from smug_plugin.robustness.attacks.ball import ascent_direction, per_slice_scale, project, random_in_ball
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
from smug_plugin.robustness.attacks.objective import AttackLoss
from smug_plugin.robustness.attacks.pgd import AscentResult, GradientHealth, estimate_gradient
from smug_plugin.robustness.attacks.problem import Lift, Objective, problem_of

MOMENTUM = 0.75  # weight of the new step; 1 - MOMENTUM is the weight of the previous one
RHO = 0.75  # halve the step when the objective rose in at most this fraction of the steps since the checkpoint
FIRST_CHECKPOINT, CHECKPOINT_DECREASE, MIN_CHECKPOINT = 0.22, 0.03, 0.06  # fractions of the steps
INITIAL_STEP = 2.0  # the step starts at 2 eps


@dataclass(frozen=True)
class APGDSettings(AttackSettings):
    """Settings of APGD.

    Parameters
    ----------
    budget : Budget
        Radius and norm of the ball (l_inf per real/imaginary entry, or l2).
    domain : AttackDomain
        Perturb the acquired k-space entries, or the image A^H y (lifted to k-space).
    steps : int
        Steps per restart (each one forward and backward pass per draw).
    restarts : int
        Runs from independent random starts; each slice keeps its best.
    target : AttackTarget
        Push away from the ground truth, or from the model's own clean reconstruction.
    loss : AttackLoss
        ``mse`` (the evaluation's objective) or ``ssim`` (1 - SSIM).
    eot_samples : int
        Noise draws averaged per gradient of a randomized model (EOT-APGD); deterministic models use one.
    gradient : AttackGradient
        ``full`` or ``published`` (as PGD's).
    """

    budget: Budget
    domain: AttackDomain = AttackDomain.KSPACE
    steps: int = 10
    restarts: int = 1
    target: AttackTarget = AttackTarget.GROUND_TRUTH
    loss: AttackLoss = AttackLoss.MSE
    eot_samples: int = 1
    gradient: AttackGradient = AttackGradient.FULL

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, bound in (("steps", 1), ("restarts", 1), ("eot_samples", 1)):
            if getattr(self, name) < bound:
                raise ValueError(f"{name} >= {bound} required, got {getattr(self, name)!r}.")

    def describe(self) -> str:
        draws = f"EOT over {self.eot_samples} draws/step" if self.eot_samples > 1 else "one noise draw per step"
        restarts = f" x {self.restarts} restarts" if self.restarts > 1 else ""
        gradient = ", published gradient" if self.gradient == AttackGradient.PUBLISHED else ""
        return (
            f"apgd {self.domain.value} {self.budget.describe()}, {self.steps} steps{restarts} (step from 2 eps, "
            f"halved at checkpoints, momentum {MOMENTUM}), loss={self.loss.value} to {self.target.value}, "
            f"{draws}{gradient}"
        )


def checkpoint_periods(steps: int) -> list[int]:
    """Steps between successive checkpoints: 22 % of the steps, then 3 % fewer each time, at least 6 %."""
    period = max(int(FIRST_CHECKPOINT * steps), 1)
    decrease, minimum = max(int(CHECKPOINT_DECREASE * steps), 1), max(int(MIN_CHECKPOINT * steps), 1)
    periods = []
    while sum(periods) < steps:
        periods.append(period)
        period = max(period - decrease, minimum)
    return periods


def adaptive_gradient_ascent(
    objective: Objective,
    variable_shape: torch.Size,
    support: torch.Tensor,
    eps: torch.Tensor,
    norm: NormType,
    generator: torch.Generator,
    *,
    steps: int,
    draws_per_step: int = 1,
    first_draw: int = 0,
    lift: Lift | None = None,
    health: GradientHealth | None = None,
) -> AscentResult:
    """One APGD run from a random point of the ball, over a batch of slices at once.

    Parameters
    ----------
    objective, variable_shape, support, eps, norm, generator, lift, health
        As in `pgd.projected_gradient_ascent`.
    steps : int
        Steps; the last iterate is scored without a backward pass.
    draws_per_step : int
        Noise draws averaged per evaluation (EOT).
    first_draw : int
        Index of the first noise draw (restarts continue the numbering).

    Returns
    -------
    AscentResult
        The best point per slice, its objective and the objective of every iterate (the start first).
    """
    lift = lift if lift is not None else (lambda v: v)
    norm = NormType(norm)
    draws = iter(range(first_draw, first_draw + (steps + 1) * draws_per_step))

    def evaluate(delta: torch.Tensor, with_gradient: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
        batch_draws = [next(draws) for _ in range(draws_per_step)]
        if with_gradient:
            return estimate_gradient(objective, lift, delta, batch_draws, health)
        with torch.no_grad():
            return None, torch.stack([objective(lift(delta), d) for d in batch_draws]).mean(0)

    x = random_in_ball(variable_shape, eps, norm, support, generator)
    grad, value = evaluate(x, steps > 0)
    history = [value]
    best, best_value, best_grad = x, value, grad
    step = per_slice_scale(INITIAL_STEP * eps, x).to(x.device)
    previous = x
    periods = iter(checkpoint_periods(steps))
    period, since_checkpoint = next(periods, steps), 0
    rises = torch.zeros_like(value)
    halved_at_checkpoint = torch.zeros_like(value, dtype=torch.bool)
    best_at_checkpoint = best_value.clone()
    for i in range(steps):
        ACTIVITY.attack_step(i + 1, steps)
        weight = 1.0 if i == 0 else MOMENTUM
        z = project(x + step * ascent_direction(grad, norm), eps, norm, support)
        candidate = project(x + weight * (z - x) + (1 - weight) * (x - previous), eps, norm, support).detach()
        last = i == steps - 1
        new_grad, new_value = evaluate(candidate, not last)
        history.append(new_value)
        rises += (new_value > value).to(rises.dtype)
        better = new_value > best_value
        best = torch.where(per_slice_scale(better, best), candidate, best)
        best_value = torch.maximum(best_value, new_value)
        if new_grad is not None:
            best_grad = torch.where(per_slice_scale(better, best_grad), new_grad, best_grad)
        previous, x, value, grad = x, candidate, new_value, new_grad
        since_checkpoint += 1
        if since_checkpoint == period and not last:
            oscillating = rises <= RHO * period
            stalled = ~halved_at_checkpoint & (best_value <= best_at_checkpoint)
            halve = oscillating | stalled
            step = torch.where(per_slice_scale(halve, step), step / 2, step)
            restart = per_slice_scale(halve, x)
            x, grad = torch.where(restart, best, x), torch.where(restart, best_grad, grad)
            value = torch.where(halve, best_value, value)
            halved_at_checkpoint, best_at_checkpoint = halve, best_value.clone()
            rises.zero_()
            period, since_checkpoint = next(periods, steps), 0
    return AscentResult(kspace_delta=lift(best).detach(), objective=best_value, history=history)


@register_attack
class APGD(Attack):
    """APGD maximising the loss of the model's reconstruction to the target, with restarts and EOT.

    Restart r starts from the r-th random point drawn from ``seed``; its noise draws continue the numbering of the
    previous restart (draw ``i`` uses noise seed ``seed + 1 + i``).
    """

    kind = "apgd"
    Settings = APGDSettings
    white_box = True
    family = AttackFamily.GRADIENT

    def __call__(self, model: AttackedModel, batch: dict, targets: Targets, seed: int) -> AttackOutcome:
        settings = self.settings
        problem = problem_of(settings, model, batch, targets, seed)
        health = GradientHealth(problem.perturbed.support)
        best: AscentResult | None = None
        history: list[torch.Tensor] = []
        for restart in range(settings.restarts):
            run = adaptive_gradient_ascent(
                problem.objective,
                problem.perturbed.signal.shape,
                problem.perturbed.support,
                problem.eps,
                settings.budget.norm,
                problem.generator,
                steps=settings.steps,
                draws_per_step=problem.draws,
                first_draw=restart * (settings.steps + 1) * problem.draws,
                lift=problem.perturbed.lift,
                health=health,
            )
            history += run.history
            if best is not None:
                better = per_slice_scale(run.objective > best.objective, run.kspace_delta)
                run.kspace_delta = torch.where(better, run.kspace_delta, best.kspace_delta)
                run.objective = torch.maximum(run.objective, best.objective)
            best = run
        return AttackOutcome(
            best.kspace_delta, problem.eps.tolist(), best.objective.tolist(), history, diagnostics=health.diagnostics()
        )
