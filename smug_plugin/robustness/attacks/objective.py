"""The attack objective, the one definition used by ``smug evaluate``, the robust validation inside
``direct train`` and the PGD benchmark: the per-slice mean squared error of a magnitude reconstruction to a target.
"""

import torch


def reconstruction_error(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-slice MSE of ``reconstruction`` to ``target``, both magnitude images (batch, height, width).

    An engine may return a cropped (or padded) image: both are then centre-cropped to their common size, so the
    error is measured on the pixels both cover.

    Returns
    -------
    torch.Tensor
        Shape (batch,).
    """
    if reconstruction.shape != target.shape:
        from direct.data.transforms import center_crop

        common = tuple(min(a, b) for a, b in zip(reconstruction.shape[-2:], target.shape[-2:]))
        reconstruction, target = center_crop(reconstruction, common), center_crop(target, common)
    return ((reconstruction - target) ** 2).flatten(1).mean(1)
