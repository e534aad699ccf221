"""Robustness measured inside ``direct train``'s validation: the reconstruction of a PGD-attacked batch.

The engines of the plugin call :func:`attacked_kspace` from ``forward_function`` during a second validation pass,
so DIRECT computes, logs and writes the metrics of the attacked reconstructions exactly like its own
(``<metric>_pgd`` in ``metrics_val_*.json`` and TensorBoard). The attack is `smug evaluate`'s PGD object with its
objective, on the network being trained.

The narrow interface between training and evaluation: `smug_plugin.models` imports only this module of
`smug_plugin.robustness`, and only `RobustValidation` (the settings) and `attacked_kspace` (one attacked batch).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from smug_plugin.robustness.attacks import Budget, Targets
from smug_plugin.robustness.attacks.budgets import BudgetConvention
from smug_plugin.robustness.attacks.pgd import PGD
from smug_plugin.units import IntensityScale, parse_choice

__all__ = ["RobustValidation", "attacked_kspace"]


@dataclass
class RobustValidation:
    """k-space l_inf PGD against the ground truth (the journal's protocol).

    Parameters
    ----------
    budget : float
        l_inf radius per real/imaginary k-space entry in `units`; 0 disables the attack.
    units : IntensityScale
        ``direct``: absolute, in DIRECT's normalised k-space. ``paper``: a fraction of each slice's s_ref, the
        max(|Re|, |Im|) of its coil-combined fully sampled image (the papers' eps = 0.02).
    steps : int
        PGD steps (step size budget / 3, random start).
    seed : int
        Seed of the random start, so that validations at different iterations attack alike.
    """

    budget: float = 0.0
    units: IntensityScale = IntensityScale.DIRECT
    steps: int = 5
    seed: int = 0

    def __post_init__(self):
        self.units = parse_choice(IntensityScale, "robust_validation_units", self.units)
        if self.budget < 0:
            raise ValueError(f"robust_validation_budget must be >= 0, got {self.budget}.")
        if self.steps < 1:
            raise ValueError(f"robust_validation_steps must be >= 1, got {self.steps}.")

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    @property
    def needs_reference_scale(self) -> bool:
        return self.units == IntensityScale.PAPER

    def as_budget(self) -> Budget:
        convention = BudgetConvention.PAPER if self.needs_reference_scale else BudgetConvention.ABSOLUTE
        return Budget(float(self.budget), convention)


class _TrainingNetwork:
    """The network inside a validation step, as the attack sees a model: k-space in, magnitude image out."""

    name = "validation"
    is_randomized = False  # one reconstruction per step, as configured (the journal's single-draw protocol)

    def __init__(self, reconstruct: Callable[[torch.Tensor], torch.Tensor]):
        self._reconstruct = reconstruct

    def reconstruct(
        self, batch: dict, kspace_delta: torch.Tensor | None = None, noise_seed: int | None = None
    ) -> torch.Tensor:
        kspace = batch["masked_kspace"] if kspace_delta is None else batch["masked_kspace"] + kspace_delta
        return torch.linalg.vector_norm(self._reconstruct(kspace), dim=-1)


def attacked_kspace(
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    masked_kspace: torch.Tensor,
    sampling_mask: torch.Tensor,
    target: torch.Tensor,
    settings: RobustValidation,
    reference_scale: torch.Tensor | None = None,
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
    reference_scale : torch.Tensor, optional
        s_ref per slice (N,), for ``units: paper``.
    """
    attack = PGD(budget=settings.as_budget(), steps=settings.steps)
    batch = {"masked_kspace": masked_kspace, "sampling_mask": sampling_mask}
    # DIRECT validates under no_grad; the attack needs gradients to the input.
    with torch.enable_grad():
        targets = Targets(target, reference_scale=reference_scale)
        outcome = attack(_TrainingNetwork(reconstruct), batch, targets, settings.seed)
    return masked_kspace + outcome.kspace_delta
