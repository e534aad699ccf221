"""Robustness measured inside ``direct train``'s validation: the reconstruction of a PGD-attacked batch.

The engines of the plugin call :func:`attacked_kspace` from ``forward_function`` during a second validation pass,
so DIRECT computes, logs and writes the metrics of the attacked reconstructions exactly like its own
(``<metric>_pgd`` in ``metrics_val_*.json`` and TensorBoard). The attack is `smug evaluate`'s PGD object with its
objective, on the network being trained.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from smug_plugin.robustness.attacks import Budget, Targets
from smug_plugin.robustness.attacks.pgd import PGD


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
    attack = PGD(budget=Budget(float(settings.budget)), steps=settings.steps)
    batch = {"masked_kspace": masked_kspace, "sampling_mask": sampling_mask}
    # DIRECT validates under no_grad; the attack needs gradients to the input.
    with torch.enable_grad():
        outcome = attack(_TrainingNetwork(reconstruct), batch, Targets(target), settings.seed)
    return masked_kspace + outcome.kspace_delta
