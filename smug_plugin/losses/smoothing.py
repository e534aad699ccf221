"""Denoiser pre-training loss, the unrolled-stability (UStab) loss and the journal's reconstruction loss.

All compare complex images ``(..., H, W, 2)`` by their mean squared error, as the papers' ||.||^2 terms
(averaged over pixels so the weight lambda_l of the reconstruction term keeps its meaning across image sizes).
"""

from collections.abc import Callable

import torch
from direct.types import DirectEnum

from smug_plugin.operators import MultiCoilOperator

DENOISER_LOSS = "denoiser_loss"
USTAB_LOSS = "ustab_loss"
COMPLEX_MSE_LOSS = "complex_mse_loss"
# Names an engine of the family accepts in `training.loss.losses` besides DIRECT's own.
PLUGIN_LOSSES = (DENOISER_LOSS, USTAB_LOSS, COMPLEX_MSE_LOSS)


class RSE2ETarget(DirectEnum):
    """What RS-E2E's reconstruction losses compare its output with."""

    GROUND_TRUTH = "ground_truth"  # the fully sampled image, like every other model of the family
    TEACHER = "teacher"  # a frozen trained MoDL's reconstruction of the same batch (the published distillation)


class UStabTarget(DirectEnum):
    """What the denoised noisy iterates D(x_n + eta) are pulled towards."""

    DENOISED_TARGET = "denoised_target"  # D(t), the journal's choice
    TARGET = "target"  # t
    DENOISED_ITERATE = "denoised_iterate"  # D(x_n): stability around the current iterate
    FROZEN_DENOISER = "frozen_denoiser"  # D_pre(t) with a frozen pre-trained denoiser


def complex_target_image(kspace: torch.Tensor, operator: MultiCoilOperator) -> torch.Tensor:
    """The complex ground truth t = S^H F^-1 y_full ``(N, H, W, 2)`` in the space the unrolled models output.

    Parameters
    ----------
    kspace : torch.Tensor
        Fully sampled k-space ``(N, coil, H, W, 2)``.
    operator : MultiCoilOperator
        The batch's operator (its coil maps and FFT; the mask is not applied).
    """
    return operator.coil_combine(kspace)


def denoiser_pretraining_loss(denoised: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E ||D(t + eta) - t||^2 for one batch of denoised noisy targets."""
    return torch.mean((denoised - target) ** 2)


def ustab_loss(
    denoised: list[torch.Tensor],
    anchors: list[torch.Tensor],
    slice_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """sum_n E_eta ||D(x_n + eta) - a_n||^2, taken per noise draw (as the journal's code does).

    Parameters
    ----------
    denoised : list[torch.Tensor]
        Per unroll, the denoiser outputs for each draw ``(K, N, H, W, 2)``.
    anchors : list[torch.Tensor]
        Per unroll, the anchor ``(N, H, W, 2)`` (or ``(K, N, H, W, 2)``): D(t), t, D(x_n) or D_pre(t).
    slice_weights : torch.Tensor, optional
        A weight ``(N,)`` of each slice's squared errors (s^2 of the papers' units, see the engine); none: 1.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    if len(denoised) != len(anchors) or not denoised:
        raise ValueError(f"ustab_loss needs one anchor per unroll, got {len(denoised)} unrolls, {len(anchors)}.")
    total = denoised[0].new_zeros(())
    for samples, anchor in zip(denoised, anchors, strict=True):
        total = total + _mean_squared_error(samples, anchor, slice_weights)
    return total


def complex_mse_loss(
    output: torch.Tensor, target: torch.Tensor, slice_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The journal's reconstruction term: the mean over pixels and both channels of (x - t)^2 (torch's MSELoss on
    the real and imaginary channels), not DIRECT's ``l2_loss`` of magnitudes.

    Parameters
    ----------
    output : torch.Tensor
        The reconstruction ``(N, H, W, 2)``, or one per noise draw ``(K, N, H, W, 2)`` (the mean over draws of
        their errors, as the published RS-E2E training).
    target : torch.Tensor
        The complex target ``(N, H, W, 2)``.
    slice_weights : torch.Tensor, optional
        A weight ``(N,)`` of each slice's squared errors, as in :func:`ustab_loss`; none: 1.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    return _mean_squared_error(output, target, slice_weights)


def _mean_squared_error(
    samples: torch.Tensor, anchor: torch.Tensor, slice_weights: torch.Tensor | None
) -> torch.Tensor:
    """mean((samples - anchor)^2), each slice's errors weighted; ``samples`` may carry a leading draw axis."""
    if anchor.ndim == samples.ndim - 1:
        anchor = anchor.unsqueeze(0)
    error = (samples - anchor) ** 2
    if slice_weights is not None:
        error = error * slice_weights.reshape(-1, 1, 1, 1)
    return torch.mean(error)


def ustab_anchors(
    target_kind: UStabTarget,
    iterates: list[torch.Tensor],
    target: torch.Tensor,
    denoise: Callable[[torch.Tensor], torch.Tensor],
    frozen_denoise: Callable[[torch.Tensor], torch.Tensor] | None = None,
    detach: bool = False,
) -> list[torch.Tensor]:
    """The UStab anchor of every unroll.

    ``detach`` stops the gradient through D(t) (or D(x_n)); the journal's code keeps it (``detach=False``), so the
    denoiser is also pulled towards being stable around the target. A frozen denoiser never receives gradients.
    """
    target_kind = UStabTarget(target_kind)
    if target_kind == UStabTarget.TARGET:
        return [target] * len(iterates)
    if target_kind == UStabTarget.FROZEN_DENOISER:
        if frozen_denoise is None:
            raise ValueError(
                "ustab_target 'frozen_denoiser' needs `model.ustab_frozen_denoiser_checkpoint` (a smug.didn.DIDN "
                "or other smug.* checkpoint)."
            )
        with torch.no_grad():
            return [frozen_denoise(target)] * len(iterates)
    if target_kind == UStabTarget.DENOISED_TARGET:
        anchor = denoise(target)
        return [anchor.detach() if detach else anchor] * len(iterates)
    anchors = [denoise(x) for x in iterates]
    return [a.detach() for a in anchors] if detach else anchors
