"""Robustness measured inside ``direct train``'s validation: the reconstruction of a PGD-attacked batch.

The engines of the plugin call :func:`attacked_kspace` from ``forward_function`` during a second validation pass,
so DIRECT computes, logs and writes the metrics of the attacked reconstructions exactly like its own
(``<metric>_pgd`` in ``metrics_val_*.json`` and TensorBoard).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from smug_plugin.robustness.budgets import NormType
from smug_plugin.robustness.perturbations import PGDSettings, pgd


@dataclass
class RobustValidation:
    """k-space l_inf PGD against the ground truth (the journal's protocol) with an absolute budget.

    Parameters
    ----------
    budget : float
        l_inf radius per real/imaginary entry of DIRECT's normalised k-space; 0 disables the attack.
    steps : int
        PGD steps (step size budget / 3, random start).
    seed : int
        Seed of the random start, so that validations at different iterations attack alike.
    """

    budget: float = 0.0
    steps: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.budget < 0:
            raise ValueError(f"robust_validation_budget must be >= 0, got {self.budget}.")
        if self.steps < 1:
            raise ValueError(f"robust_validation_steps must be >= 1, got {self.steps}.")

    @property
    def enabled(self) -> bool:
        return self.budget > 0


def attacked_kspace(
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    masked_kspace: torch.Tensor,
    sampling_mask: torch.Tensor,
    target: torch.Tensor,
    settings: RobustValidation,
) -> torch.Tensor:
    """``masked_kspace + delta`` with delta from PGD maximising the per-slice MSE of |reconstruct(y)| to the target.

    Parameters
    ----------
    reconstruct : Callable
        Maps k-space (N, coil, H, W, 2) to the complex image (N, H, W, 2).
    masked_kspace, sampling_mask : torch.Tensor
        The batch as DIRECT's engine holds it (normalised).
    target : torch.Tensor
        Magnitude ground truth (N, H, W).
    settings : RobustValidation
        Budget, steps and seed.
    """
    generator = torch.Generator(device=masked_kspace.device).manual_seed(settings.seed)
    support = (sampling_mask != 0).to(masked_kspace.dtype).expand_as(masked_kspace)
    eps = torch.full((masked_kspace.shape[0],), float(settings.budget), device=masked_kspace.device)

    def objective(delta: torch.Tensor, draw: int) -> torch.Tensor:
        image = reconstruct(masked_kspace + delta)
        magnitude = torch.linalg.vector_norm(image, dim=-1)
        return ((magnitude - target) ** 2).flatten(1).mean(1)

    with torch.enable_grad():
        result = pgd(
            objective,
            masked_kspace.shape,
            support,
            eps,
            PGDSettings(norm=NormType.LINF, steps=settings.steps),
            generator,
        )
    return masked_kspace + result.kspace_delta
