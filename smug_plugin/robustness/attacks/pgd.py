"""Projected gradient descent (PGD): the strongest first-order attack on the reconstruction error.

The attack only needs an ``objective(kspace_delta, draw) -> per-slice loss``. ``draw`` numbers the noise draws so
that randomized (smoothed) models get a distinct noise seed per draw, which is how the adaptive
expectation-over-transformation (EOT) attack averages gradients over the model's randomness.
"""

from dataclasses import dataclass, field
from typing import Any

import torch

from smug_plugin.models.unrolled import AttackGradient
from smug_plugin.robustness.activity import ACTIVITY
from smug_plugin.robustness.attacks.ball import ascent_direction, per_slice, per_slice_scale, project, random_in_ball
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
from smug_plugin.robustness.attacks.problem import AttackProblem, AttackSurrogate, Lift, Objective, problem_of


@dataclass(frozen=True)
class PGDSettings(AttackSettings):
    """Settings of PGD.

    Parameters
    ----------
    budget : Budget
        Radius and norm of the ball (l_inf per real/imaginary entry).
    domain : AttackDomain
        Perturb the acquired k-space entries, or the image A^H y (lifted to k-space).
    steps : int
        Number of ascent steps (0 gives the random start, or zero without one).
    step_fraction : float
        Step size as a fraction of eps (the papers use 1/3).
    random_start : bool
        Start uniformly inside the ball.
    target : AttackTarget
        Push away from the ground truth, or from the model's own clean reconstruction.
    eot_samples : int
        Noise draws averaged per gradient of a randomized model; 1 is the papers' single-draw protocol (one fresh
        draw per step).
    keep_best : bool
        Return, per slice, the iterate with the largest objective (makes more steps never weaker).
    gradient : AttackGradient
        ``full``: the exact gradient of the reconstruction. ``published``: the gradient of the model run under
        ``attack_gradient="published"``, which flows through the first denoiser input x_0 = A^H y only, as the
        published code's CG backward. Forward values, and so the objective, are the same either way. Plugin models
        only: DIRECT-native models have no such setting and are reported n/a.
    surrogate : AttackSurrogate
        ``self`` (white-box) or ``unsmoothed``: computed on the same network with sigma 0 and transferred to the
        smoothed model (the 2023 published test code; models without sigma are attacked themselves).
    """

    budget: Budget
    domain: AttackDomain = AttackDomain.KSPACE
    steps: int = 10
    step_fraction: float = 1.0 / 3.0
    random_start: bool = True
    target: AttackTarget = AttackTarget.GROUND_TRUTH
    eot_samples: int = 1
    keep_best: bool = True
    gradient: AttackGradient = AttackGradient.FULL
    surrogate: AttackSurrogate = AttackSurrogate.SELF

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, value, bound in (("steps", self.steps, 0), ("eot_samples", self.eot_samples, 1)):
            if value < bound:
                raise ValueError(f"{name} >= {bound} required, got {value!r}.")
        if self.step_fraction <= 0:
            raise ValueError(f"step_fraction > 0 (a fraction of eps) required, got {self.step_fraction!r}.")

    def model_passes(self) -> float:
        """A forward and a backward pass per step and draw, and the final iterate scored once per draw."""
        return float(3 * self.steps * self.eot_samples + self.eot_samples)

    def describe(self) -> str:
        draws = f"EOT over {self.eot_samples} draws/step" if self.eot_samples > 1 else "one noise draw per step"
        gradient = ""
        if self.gradient == AttackGradient.PUBLISHED:
            gradient = (
                ", published gradient (through the first denoiser input only, as the published CG backward; "
                "DIRECT-native models n/a)"
            )
        surrogate = ""
        if self.surrogate == AttackSurrogate.UNSMOOTHED:
            surrogate = ", computed on the unsmoothed network (sigma 0) and transferred to the smoothed one"
        return (
            f"pgd {self.domain.value} {self.budget.describe()}, {self.steps} steps of {self.step_fraction:.3g} eps, "
            f"random start={self.random_start}, loss=MSE to {self.target.value}, {draws}{gradient}{surrogate}"
        )


@dataclass
class AscentResult:
    """Outcome of a PGD run: the k-space perturbation, per-slice objective, per-step history."""

    kspace_delta: torch.Tensor
    objective: torch.Tensor
    history: list[torch.Tensor] = field(default_factory=list)


class GradientHealth:
    """What the gradients of an attack looked like, per slice, for the sanity checks.

    Counts the gradient evaluations whose (EOT-averaged) gradient was exactly zero on the entries that may change,
    and those in which a draw's gradient held NaN or infinity (the attack steps on with those entries zeroed). For
    an EOT estimate, the first evaluation also records how far the averaged gradient moves as its draws double:
    ``||g_2n - g_n|| / ||g_2n||`` for n = 1, 2, 4, ..., where g_n averages the first n draws.

    Parameters
    ----------
    support : torch.Tensor
        Entries of the variable that may change (broadcastable to it).
    """

    def __init__(self, support: torch.Tensor):
        self.support = support
        self.evaluations = 0
        self.zero: torch.Tensor | None = None
        self.nonfinite: torch.Tensor | None = None
        self.eot_convergence: list[torch.Tensor] | None = None

    def relative_change(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """||new - old|| / ||new|| per slice, on the support."""
        return per_slice((new - old) * self.support).norm(dim=1) / per_slice(new * self.support).norm(dim=1).clamp_min(
            1e-30
        )

    def record(self, gradient: torch.Tensor, nonfinite: torch.Tensor, convergence: list[torch.Tensor]) -> None:
        zero = (per_slice(gradient * self.support) == 0).all(dim=1)
        self.zero = zero.long() if self.zero is None else self.zero + zero.long()
        self.nonfinite = nonfinite.long() if self.nonfinite is None else self.nonfinite + nonfinite.long()
        self.evaluations += 1
        if self.eot_convergence is None and convergence:
            self.eot_convergence = convergence

    def diagnostics(self) -> dict[str, list]:
        """Per-slice record fields: ``gradient_evaluations``, ``zero_gradient_steps``, ``nonfinite_gradient_steps``
        and, for EOT attacks, ``eot_convergence``."""
        if self.zero is None or self.nonfinite is None:
            return {}
        out: dict[str, list] = {
            "gradient_evaluations": [self.evaluations] * len(self.zero),
            "zero_gradient_steps": self.zero.tolist(),
            "nonfinite_gradient_steps": self.nonfinite.tolist(),
        }
        if self.eot_convergence:
            out["eot_convergence"] = torch.stack(self.eot_convergence, dim=1).tolist()
        return out


def estimate_gradient(
    objective: Objective,
    kspace_delta_of: Lift,
    variable: torch.Tensor,
    draws: list[int],
    health: GradientHealth | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average gradient of the objective over the given noise draws (EOT when len(draws) > 1).

    Parameters
    ----------
    health : GradientHealth, optional
        Records zero and non-finite gradients (and the convergence of the EOT average) per slice.

    Returns
    -------
    (gradient, objective)
        Gradient w.r.t. `variable` and the objective averaged over draws, per slice.
    """
    grad = torch.zeros_like(variable)
    total = torch.zeros(variable.shape[0], dtype=variable.dtype, device=variable.device)
    nonfinite = torch.zeros(variable.shape[0], dtype=torch.bool, device=variable.device)
    convergence, previous = [], None
    for count, draw in enumerate(draws, start=1):
        var = variable.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = objective(kspace_delta_of(var), draw)
            # Slices are independent, so the gradient of the sum is the per-slice gradient.
            (g,) = torch.autograd.grad(loss.sum(), var)
        if health is not None:
            nonfinite |= ~torch.isfinite(per_slice(g)).all(dim=1)
        grad += torch.nan_to_num(g)
        total += loss.detach()
        if health is not None and len(draws) > 1 and count & (count - 1) == 0:  # count is a power of two
            average = grad / count
            if previous is not None:
                convergence.append(health.relative_change(average, previous))
            previous = average
    if health is not None:
        health.record(grad / len(draws), nonfinite, convergence)
    return grad / len(draws), total / len(draws)


def projected_gradient_ascent(
    objective: Objective,
    variable_shape: torch.Size,
    support: torch.Tensor,
    eps: torch.Tensor,
    norm: NormType,
    generator: torch.Generator,
    *,
    steps: int = 10,
    step_fraction: float = 1.0 / 3.0,
    random_start: bool = True,
    keep_best: bool = True,
    draws_per_step: int = 1,
    lift: Lift | None = None,
    health: GradientHealth | None = None,
    start_scale: float = 1.0,
) -> AscentResult:
    """Projected gradient ascent of `objective` over a batch of slices at once.

    Parameters
    ----------
    objective : Objective
        Per-slice loss of the perturbed reconstruction; called with the k-space perturbation and a draw index.
    variable_shape : torch.Size
        Shape of the optimised variable (k-space, or image for the image-domain attack).
    support : torch.Tensor
        Entries of the variable that may change (sampling mask for k-space, ones for the image).
    eps : torch.Tensor
        Radius per slice, shape (batch,).
    norm : NormType
        Ball norm; l_inf steps along the gradient's sign, l2 along the normalised gradient.
    generator : torch.Generator
        Source of the random start (seeded by the caller for reproducibility).
    steps, step_fraction, random_start, keep_best : int, float, bool, bool
        As in `PGDSettings`.
    draws_per_step : int
        Noise draws averaged per gradient (EOT).
    lift : Lift, optional
        Maps the variable to the k-space perturbation; identity for k-space attacks.
    health : GradientHealth, optional
        Records the gradients' zero and non-finite entries per slice.
    start_scale : float
        The random start is drawn in the ball and multiplied by this (CycMit-MRI: 1 / sqrt(2)).
    """
    lift = lift if lift is not None else (lambda v: v)
    norm = NormType(norm)
    alpha = per_slice_scale(eps * step_fraction, support).to(support.device)
    if random_start:
        delta = random_in_ball(variable_shape, eps, norm, support, generator) * start_scale
    else:
        delta = torch.zeros(variable_shape, device=support.device)
    k = max(1, int(draws_per_step))
    best, best_obj, history = delta.clone(), None, []
    for step in range(steps):
        ACTIVITY.attack_step(step + 1, steps)
        grad, obj = estimate_gradient(objective, lift, delta, [step * k + i for i in range(k)], health)
        history.append(obj)
        if best_obj is None:
            best_obj = obj.clone()
        better = obj > best_obj
        best = torch.where(per_slice_scale(better, best), delta, best)
        best_obj = torch.maximum(best_obj, obj)
        delta = project(delta + alpha * ascent_direction(grad, norm), eps, norm, support).detach()
    # The final iterate has not been scored yet.
    with torch.no_grad():
        final = torch.stack([objective(lift(delta), steps * k + i) for i in range(k)]).mean(0)
    history.append(final)
    if keep_best and best_obj is not None:
        better = final > best_obj
        delta = torch.where(per_slice_scale(better, delta), delta, best)
        final = torch.maximum(final, best_obj)
    delta = delta.detach()
    return AscentResult(kspace_delta=lift(delta).detach(), objective=final, history=history)


@register_attack
class PGD(Attack):
    """PGD maximising `reconstruction_error` of the model's reconstruction to the target.

    The random start comes from ``seed``; gradient draw ``i`` of a randomized model uses noise seed
    ``seed + 1 + i``. EOT averages ``eot_samples`` draws per step for randomized models (one draw otherwise).
    With ``gradient: published`` the model is run under ``attack_gradient="published"`` for the whole ascent;
    the evaluation then reconstructs the attacked k-space under the condition's own settings.
    """

    kind = "pgd"
    Settings = PGDSettings
    white_box = True
    family = AttackFamily.GRADIENT

    def __call__(self, model: AttackedModel, batch: dict, targets: Targets, seed: int) -> AttackOutcome:
        settings = self.settings
        problem = problem_of(settings, model, batch, targets, seed)
        return ascend(
            problem,
            settings.budget.norm,
            steps=settings.steps,
            step_fraction=settings.step_fraction,
            random_start=settings.random_start,
            keep_best=settings.keep_best,
        )


def ascend(problem: AttackProblem, norm: NormType, **ascent: Any) -> AttackOutcome:
    """PGD on an attack problem (`projected_gradient_ascent` with the keywords ``ascent``) and its outcome with the
    gradients' health: the one ascent of every PGD-type attack (PGD, the unsupervised attack)."""
    health = GradientHealth(problem.perturbed.support)
    result = projected_gradient_ascent(
        problem.objective,
        problem.perturbed.signal.shape,
        problem.perturbed.support,
        problem.eps,
        norm,
        problem.generator,
        draws_per_step=problem.draws,
        lift=problem.perturbed.lift,
        health=health,
        **ascent,
    )
    return AttackOutcome(
        result.kspace_delta,
        problem.eps.tolist(),
        result.objective.tolist(),
        result.history,
        diagnostics=health.diagnostics(),
    )
