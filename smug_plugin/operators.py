"""The multi-coil MRI operator A = M F S and its adjoint, the one copy used by models, losses and attacks.

Tensors follow DIRECT's 2D convention: images ``(N, H, W, 2)``, k-space and coil maps ``(N, coil, H, W, 2)``,
masks ``(N, 1, H, W, 1)`` (any shape broadcastable to the k-space). deepinv's ``MultiCoilMRI`` holds the same
maths, but on complex tensors and its own FFT convention; DIRECT's engines hand us their configured
``forward_operator`` / ``backward_operator`` (centred or not, normalised or not), which this object keeps.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from direct.data.transforms import expand_operator, reduce_operator

COIL_DIM = 1
SPATIAL_DIMS = (2, 3)


def apply_mask(kspace: torch.Tensor, sampling_mask: torch.Tensor) -> torch.Tensor:
    """Zero the k-space entries outside the mask, the one masking rule of the package.

    ``torch.where`` (as DIRECT's conjugate gradient) rather than a product: a non-finite value outside the mask
    must not leak in as NaN = inf * 0.
    """
    return torch.where(sampling_mask == 0, torch.zeros((), dtype=kspace.dtype, device=kspace.device), kspace)


@dataclass(frozen=True)
class MultiCoilOperator:
    """A = M F S for one batch: sensitivity maps, sampling mask and the engine's FFT operators.

    Parameters
    ----------
    forward_operator, backward_operator : Callable
        DIRECT's ``fft2`` / ``ifft2`` (as configured for the engine), called with ``dim=(2, 3)``.
    sensitivity_map : torch.Tensor
        Coil maps ``(N, coil, H, W, 2)``, normalised as the engine normalises them (sum_c |S_c|^2 = 1).
    sampling_mask : torch.Tensor
        Sampling mask broadcastable to the k-space, nonzero where acquired.
    """

    forward_operator: Callable
    backward_operator: Callable
    sensitivity_map: torch.Tensor
    sampling_mask: torch.Tensor

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """A x = M F S x: the acquired multi-coil k-space ``(N, coil, H, W, 2)`` of images ``(N, H, W, 2)``."""
        return apply_mask(self.fully_sampled(image), self.sampling_mask)

    def fully_sampled(self, image: torch.Tensor) -> torch.Tensor:
        """F S x, the k-space of every coil before the mask."""
        return self.forward_operator(expand_operator(image, self.sensitivity_map, COIL_DIM), dim=SPATIAL_DIMS)

    def adjoint(self, kspace: torch.Tensor) -> torch.Tensor:
        """A^H y = S^H F^-1 M y, the SENSE-combined zero-filled image; k-space outside the mask never leaks in."""
        return self.coil_combine(apply_mask(kspace, self.sampling_mask))

    def coil_combine(self, kspace: torch.Tensor) -> torch.Tensor:
        """S^H F^-1 y without the mask (the complex target image of fully sampled k-space)."""
        return reduce_operator(self.backward_operator(kspace, dim=SPATIAL_DIMS), self.sensitivity_map, COIL_DIM)

    def normal(self, image: torch.Tensor) -> torch.Tensor:
        """A^H A x."""
        return self.adjoint(self.fully_sampled(image))

    __call__ = forward

    def repeat(self, times: int) -> "MultiCoilOperator":
        """The operator of a batch repeated ``times`` times along the batch axis (K noise draws at once)."""
        return MultiCoilOperator(
            self.forward_operator,
            self.backward_operator,
            repeat_batch(self.sensitivity_map, times),
            repeat_batch(self.sampling_mask, times),
        )


def repeat_batch(tensor: torch.Tensor, times: int) -> torch.Tensor:
    """``times`` copies of a batch along the batch axis, in the order the K noise draws are stacked."""
    return tensor.repeat(times, *([1] * (tensor.ndim - 1)))
