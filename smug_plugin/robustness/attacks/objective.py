"""The attack objective, the one definition used by ``smug evaluate``, the robust validation inside
``direct train`` and the PGD benchmark: the per-slice mean squared error of a magnitude reconstruction to a target
(or, as an option, its structural dissimilarity 1 - SSIM).
"""

from collections.abc import Callable
from enum import StrEnum

import torch


class AttackLoss(StrEnum):
    """The regression loss an attack ascends."""

    MSE = "mse"
    SSIM = "ssim"  # 1 - SSIM (fastMRI's 7 x 7 window, data range = the target's maximum per slice)
    # ||f(x + d) - t|| / ||t||: with the clean reconstruction as t, CycMit-MRI's unsupervised objective
    RELATIVE_L2 = "relative_l2"


def _common_crop(reconstruction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images centre-cropped to their common size (an engine may return a cropped or padded image)."""
    if reconstruction.shape == target.shape:
        return reconstruction, target
    from direct.data.transforms import center_crop

    common = tuple(min(a, b) for a, b in zip(reconstruction.shape[-2:], target.shape[-2:]))
    return center_crop(reconstruction, common), center_crop(target, common)


def reconstruction_error(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-slice MSE of ``reconstruction`` to ``target``, both magnitude images (batch, height, width).

    An engine may return a cropped (or padded) image: both are then centre-cropped to their common size, so the
    error is measured on the pixels both cover.

    Returns
    -------
    torch.Tensor
        Shape (batch,).
    """
    reconstruction, target = _common_crop(reconstruction, target)
    return ((reconstruction - target) ** 2).flatten(1).mean(1)


def structural_dissimilarity(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-slice 1 - SSIM of ``reconstruction`` to ``target`` (fastMRI's differentiable SSIM), shape (batch,)."""
    from fastmri.losses import SSIMLoss

    reconstruction, target = _common_crop(reconstruction, target)
    data_range = target.detach().flatten(1).amax(1)
    loss_map = SSIMLoss().to(reconstruction.device)(
        reconstruction.unsqueeze(1), target.unsqueeze(1), data_range, reduced=False
    )
    return loss_map.flatten(1).mean(1)


def relative_error(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-slice ||reconstruction - target||_2 / ||target||_2, shape (batch,)."""
    reconstruction, target = _common_crop(reconstruction, target)
    return (reconstruction - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1).clamp_min(1e-30)


def attack_loss(loss: AttackLoss) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The per-slice loss function of ``loss``: (reconstruction, target) -> (batch,)."""
    losses = {
        AttackLoss.MSE: reconstruction_error,
        AttackLoss.SSIM: structural_dissimilarity,
        AttackLoss.RELATIVE_L2: relative_error,
    }
    return losses[AttackLoss(loss)]
