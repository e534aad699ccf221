"""What every attack that queries the attacked model sets up alike: the model it runs (with the gradient it asks
for), the target, the ball with its radius per slice, the random source and the objective it ascends.

PGD, APGD and the gradient-free random search build their problem here, so they attack the same objective in the
same ball and differ only in how they search it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch

from smug_plugin.models.unrolled import AttackGradient
from smug_plugin.robustness.attacks.base import AttackedModel, AttackTarget, Targets
from smug_plugin.robustness.attacks.budgets import Budget
from smug_plugin.robustness.attacks.domain import AttackDomain, PerturbedSignal, perturbed_signal
from smug_plugin.robustness.attacks.objective import AttackLoss, attack_loss


class AttackSurrogate(StrEnum):
    """Which model an attack differentiates."""

    SELF = "self"  # the attacked model (white-box)
    # The same network without smoothing (sigma 0), its perturbation transferred to the smoothed model: the SMUG
    # conference / 2023 published test code. Models without a sigma setting (MoDL, DIRECT's) are attacked themselves.
    UNSMOOTHED = "unsmoothed"


# objective(kspace_delta, draw_index) -> loss per slice, shape (batch,); the attack ascends it.
Objective = Callable[[torch.Tensor, int], torch.Tensor]
Lift = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttackProblem:
    """One attack's search problem on one batch.

    Attributes
    ----------
    objective : Objective
        Per-slice loss of the reconstruction of the batch plus a k-space perturbation; draw ``i`` of a randomized
        model uses noise seed ``seed + 1 + i``.
    perturbed : PerturbedSignal
        The signal the budget is measured on, the entries that may change and the lift to k-space.
    eps : torch.Tensor
        Radius of the ball per slice (batch,), in DIRECT's normalised units.
    generator : torch.Generator
        The attack's random source, seeded by the attack's seed.
    draws : int
        Noise draws averaged per evaluation: the EOT draws for a randomized model, 1 otherwise.
    """

    objective: Objective
    perturbed: PerturbedSignal
    eps: torch.Tensor
    generator: torch.Generator
    draws: int


def attack_problem(
    model: AttackedModel,
    batch: dict,
    targets: Targets,
    seed: int,
    *,
    budget: Budget,
    domain: AttackDomain,
    target: AttackTarget,
    loss: AttackLoss = AttackLoss.MSE,
    eot_samples: int = 1,
    gradient: AttackGradient = AttackGradient.FULL,
    surrogate: AttackSurrogate = AttackSurrogate.SELF,
) -> AttackProblem:
    """The problem of attacking ``model`` on ``batch`` within ``budget``.

    With ``surrogate: unsmoothed`` the attack runs on the model with sigma 0 (where it has that setting), so the
    objective, the draws and the kept iterate are the surrogate's; the evaluation then reconstructs the perturbation
    with the model itself (a transfer). With ``gradient: published`` the model runs under
    ``attack_gradient="published"`` (raises ``reconstructors.interface.UnsupportedSettings`` for a model without that
    setting); forward values are the same.
    """
    if AttackSurrogate(surrogate) == AttackSurrogate.UNSMOOTHED and "sigma" in _supported(model):
        model = model.with_settings(sigma=0.0)
    differentiated = model
    if gradient != AttackGradient.FULL:
        differentiated = model.with_settings(attack_gradient=AttackGradient(gradient).value)
    reference = targets.of(target, model)
    generator = torch.Generator(device=batch["masked_kspace"].device).manual_seed(seed)
    perturbed = perturbed_signal(domain, model, batch)
    eps = budget.resolve(
        perturbed.signal, perturbed.support, targets.reference_scale, zero_filled(budget, model, batch)
    )
    loss_of = attack_loss(loss)

    def objective(kspace_delta: torch.Tensor, draw: int) -> torch.Tensor:
        output = differentiated.reconstruct(batch, kspace_delta, noise_seed=seed + 1 + draw)
        return loss_of(output, reference)

    draws = eot_samples if model.is_randomized else 1
    return AttackProblem(objective, perturbed, eps, generator, draws)


def _supported(model: AttackedModel) -> frozenset[str]:
    reconstructor = getattr(model, "reconstructor", None)
    return reconstructor.supported_settings() if reconstructor is not None else frozenset()


def zero_filled(budget: Budget, model: AttackedModel, batch: dict) -> torch.Tensor | None:
    """A^H y of the batch's measured k-space where ``budget`` is relative to it (else None)."""
    if not budget.needs_zero_filled:
        return None
    return model.operator(batch).adjoint(batch["masked_kspace"]).detach()


# The settings fields that describe an attack's problem; an attack's settings hold those that apply to it.
PROBLEM_FIELDS = ("budget", "domain", "target", "loss", "eot_samples", "gradient", "surrogate")


def problem_of(
    settings: object, model: AttackedModel, batch: dict, targets: Targets, seed: int, **fixed: object
) -> AttackProblem:
    """:func:`attack_problem` with every problem field the attack's ``settings`` hold, and ``fixed`` for those the
    attack defines itself (e.g. the unsupervised attack's target and loss): one place reads settings into problems."""
    keywords = {name: getattr(settings, name) for name in PROBLEM_FIELDS if hasattr(settings, name)}
    return attack_problem(model, batch, targets, seed, **{**keywords, **fixed})
