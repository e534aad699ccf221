"""Gaussian noise with the energy of the attack, which isolates the effect of the attack's direction."""

from dataclasses import dataclass

import torch

from smug_plugin.robustness.attacks.ball import per_slice, per_slice_scale, vertex_norm
from smug_plugin.robustness.attacks.base import (
    Attack,
    AttackedModel,
    AttackFamily,
    AttackOutcome,
    AttackSettings,
    Targets,
    register_attack,
)
from smug_plugin.robustness.attacks.budgets import Budget
from smug_plugin.robustness.attacks.domain import AttackDomain, perturbed_signal
from smug_plugin.robustness.attacks.problem import zero_filled


@dataclass(frozen=True)
class GaussianNoiseSettings(AttackSettings):
    """Settings of matched Gaussian noise.

    Parameters
    ----------
    budget : Budget
        The ball whose largest element sets the noise energy.
    domain : AttackDomain
        Noise on the acquired k-space entries, or on the image A^H y (lifted to k-space).
    """

    budget: Budget
    domain: AttackDomain = AttackDomain.KSPACE

    def describe(self) -> str:
        return f"gaussian {self.domain.value} {self.budget.describe()}"


def matched_noise(
    shape: torch.Size, eps: torch.Tensor, norm, support: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Gaussian noise on the support, rescaled to the l2 norm of the largest element of the ball.

    For l_inf that is a vertex, ``eps * sqrt(#entries)``, where sign-step PGD ends up; for l2 it is ``eps``. The
    noise therefore has the same energy as the attack.
    """
    g = torch.randn(shape, generator=generator, device=support.device) * support.expand(shape).to(torch.float32)
    target = vertex_norm(eps, norm, support, shape)
    return g * per_slice_scale(target / per_slice(g).norm(dim=1).clamp_min(1e-30), g)


@register_attack
class GaussianNoise(Attack):
    """Matched-energy Gaussian noise; the noise comes from ``seed`` and does not depend on the model."""

    kind = "gaussian"
    Settings = GaussianNoiseSettings
    family = AttackFamily.NOISE

    def __call__(self, model: AttackedModel, batch: dict, targets: Targets, seed: int) -> AttackOutcome:
        generator = torch.Generator(device=batch["masked_kspace"].device).manual_seed(seed)
        perturbed = perturbed_signal(self.settings.domain, model, batch)
        budget = self.settings.budget
        eps = budget.resolve(
            perturbed.signal, perturbed.support, targets.reference_scale, zero_filled(budget, model, batch)
        )
        noise = matched_noise(perturbed.signal.shape, eps, self.settings.budget.norm, perturbed.support, generator)
        return AttackOutcome(perturbed.lift(noise), eps.tolist())
