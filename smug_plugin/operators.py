"""The multi-coil MRI operator A = M F S and its adjoint, the one copy used by models, losses and attacks.

Tensors follow DIRECT's 2D convention: images ``(N, H, W, 2)``, k-space and coil maps ``(N, coil, H, W, 2)``,
masks ``(N, 1, H, W, 1)`` (any shape broadcastable to the k-space). deepinv's ``MultiCoilMRI`` holds the same
maths, but on complex tensors and its own FFT convention; DIRECT's engines hand us their configured
``forward_operator`` / ``backward_operator`` (centred or not, normalised or not), which this object keeps.

Inside, the arithmetic runs on complex tensors (one operator per complex product instead of DIRECT's dozen on real
pairs; the products and sums are DIRECT's, so the values are too). When the engine's operators are DIRECT's
``fft2`` / ``ifft2`` (``functools.partial`` included), the normal operator A^H A folds the centring shifts into the
maps and the mask, computed once per operator: only the image is shifted, not every coil's k-space, four times.
"""

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from direct.data.transforms import expand_operator, fft2, ifft2, reduce_operator

COIL_DIM = 1
SPATIAL_DIMS = (2, 3)
COMPLEX_SPATIAL_DIMS = (-2, -1)


def apply_mask(kspace: torch.Tensor, sampling_mask: torch.Tensor) -> torch.Tensor:
    """Zero the k-space entries outside the mask, the one masking rule of the package.

    ``torch.where`` (as DIRECT's conjugate gradient) rather than a product: a non-finite value outside the mask
    must not leak in as NaN = inf * 0.
    """
    return _zero_where(sampling_mask == 0, kspace)


def _zero_where(dropped: torch.Tensor, kspace: torch.Tensor) -> torch.Tensor:
    return torch.where(dropped, 0.0, kspace)


def as_complex(tensor: torch.Tensor) -> torch.Tensor:
    """A DIRECT real-pair tensor ``(..., 2)`` as a complex tensor ``(...)`` (a view when its layout allows one)."""
    return torch.view_as_complex(tensor.contiguous())


def fft_convention(operator: Callable, transform: Callable) -> tuple[bool, bool] | None:
    """``(centered, normalized)`` of DIRECT's ``transform`` (``fft2`` or ``ifft2``) or a ``functools.partial`` of it
    (DIRECT builds ``fft2(centered=False)`` as one); ``None`` for any other callable."""
    keywords = {}
    if isinstance(operator, functools.partial):
        keywords, operator = ({} if operator.args else operator.keywords), operator.func
    if operator is not transform or set(keywords) - {"centered", "normalized", "dim"}:
        return None
    defaults = inspect.signature(transform).parameters
    return tuple(keywords.get(name, defaults[name].default) for name in ("centered", "normalized"))


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
        if self._convention is None:
            return self.forward_operator(expand_operator(image, self.sensitivity_map, COIL_DIM), dim=SPATIAL_DIMS)
        coil_images = self._maps * as_complex(image).unsqueeze(COIL_DIM)
        return torch.view_as_real(self._fourier(coil_images, torch.fft.fftn))

    def adjoint(self, kspace: torch.Tensor) -> torch.Tensor:
        """A^H y = S^H F^-1 M y, the SENSE-combined zero-filled image; k-space outside the mask never leaks in."""
        return self.coil_combine(apply_mask(kspace, self.sampling_mask))

    def coil_combine(self, kspace: torch.Tensor) -> torch.Tensor:
        """S^H F^-1 y without the mask (the complex target image of fully sampled k-space)."""
        if self._convention is None:
            return reduce_operator(self.backward_operator(kspace, dim=SPATIAL_DIMS), self.sensitivity_map, COIL_DIM)
        coil_images = self._fourier(as_complex(kspace), torch.fft.ifftn)
        return torch.view_as_real((self._conj_maps * coil_images).sum(COIL_DIM))

    def normal(self, image: torch.Tensor) -> torch.Tensor:
        """A^H A x."""
        if self._convention is None:
            return self.adjoint(self.fully_sampled(image))
        return torch.view_as_real(self.complex_normal(as_complex(image)))

    __call__ = forward

    def complex_normal(self, image: torch.Tensor) -> torch.Tensor:
        """A^H A x on complex images ``(N, H, W)``, the conjugate gradient's operator.

        With a centred FFT, fftshift(F(ifftshift(S x))) masked and brought back equals, entry for entry, the
        unshifted transforms of ifftshift(S) ifftshift(x) under ifftshift(M), shifted back once at the end.
        """
        if self._convention is None:
            return as_complex(self.normal(torch.view_as_real(image)))
        centered, _ = self._convention
        if centered:
            image = torch.fft.ifftshift(image, dim=COMPLEX_SPATIAL_DIMS)
        kspace = torch.fft.fftn(self._folded[0] * image.unsqueeze(COIL_DIM), dim=COMPLEX_SPATIAL_DIMS, norm=self._norm)
        kspace = _zero_where(self._folded[2], kspace)
        coil_images = torch.fft.ifftn(kspace, dim=COMPLEX_SPATIAL_DIMS, norm=self._norm)
        image = (self._folded[1] * coil_images).sum(COIL_DIM)
        return torch.fft.fftshift(image, dim=COMPLEX_SPATIAL_DIMS) if centered else image

    def repeat(self, times: int) -> "MultiCoilOperator":
        """The operator of a batch repeated ``times`` times along the batch axis (K noise draws at once)."""
        return MultiCoilOperator(
            self.forward_operator,
            self.backward_operator,
            repeat_batch(self.sensitivity_map, times),
            repeat_batch(self.sampling_mask, times),
        )

    @functools.cached_property
    def _convention(self) -> tuple[bool, bool] | None:
        """``(centered, normalized)`` when both FFTs are DIRECT's with one convention, else ``None`` (the engine's
        callables are then used as they are, on real pairs)."""
        forward = fft_convention(self.forward_operator, fft2)
        return forward if forward is not None and forward == fft_convention(self.backward_operator, ifft2) else None

    @property
    def _norm(self) -> str:
        return "ortho" if self._convention[1] else "backward"

    def _fourier(self, data: torch.Tensor, transform: Callable) -> torch.Tensor:
        """DIRECT's (i)fft2 on complex coil data ``(N, coil, H, W)``, shifted when centred."""
        centered, _ = self._convention
        if centered:
            data = torch.fft.ifftshift(data, dim=COMPLEX_SPATIAL_DIMS)
        data = transform(data, dim=COMPLEX_SPATIAL_DIMS, norm=self._norm)
        return torch.fft.fftshift(data, dim=COMPLEX_SPATIAL_DIMS) if centered else data

    @functools.cached_property
    def _maps(self) -> torch.Tensor:
        return as_complex(self.sensitivity_map)

    @functools.cached_property
    def _conj_maps(self) -> torch.Tensor:
        return self._maps.conj_physical()

    @functools.cached_property
    def _folded(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Maps, conjugate maps and the dropped entries ``(N, 1, H, W)`` in the unshifted order of the FFT."""
        dropped = self.sampling_mask == 0
        if dropped.shape[-1] == 2 and not torch.equal(dropped[..., 0], dropped[..., 1]):
            raise ValueError("sampling_mask must be the same for the real and the imaginary part of the k-space.")
        tensors = (self._maps, self._conj_maps, dropped[..., 0])
        if self._convention[0]:
            tensors = tuple(torch.fft.ifftshift(t, dim=COMPLEX_SPATIAL_DIMS) for t in tensors)
        return tensors


def repeat_batch(tensor: torch.Tensor, times: int) -> torch.Tensor:
    """``times`` copies of a batch along the batch axis, in the order the K noise draws are stacked."""
    return tensor.repeat(times, *([1] * (tensor.ndim - 1)))
