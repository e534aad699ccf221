"""Classical compressed sensing: l1-wavelet regularised SENSE, min_x 1/2 ||A x - y||^2 + w ||W x||_1, by FISTA.

The solver is plain torch on `MultiCoilOperator`, so an attack differentiates through every iteration. W is
ptwt's matrix wavelet transform with QR-orthogonalised boundary filters: exactly orthonormal for any Daubechies
wavelet, so the proximal step is exact (W^T soft(W v)) rather than the usual approximation of a redundant transform.
ptwt rather than deepinv: one small torch package (PyWavelets its only extra) where deepinv brings a framework.
Real and imaginary parts are transformed alike; the threshold acts on the complex coefficient's magnitude and spares
the coarsest approximation band (the image's mean intensity is not sparse).
"""

import math
import warnings
from dataclasses import dataclass

import torch

from smug_plugin.operators import MultiCoilOperator

# ||A|| <= 1 for the operators of DIRECT's engines: orthonormal FFT, sum_c |S_c|^2 = 1 (or 0), a 0/1 mask. So
# 1 / ||A||^2 >= 1 and step 1 is FISTA's 1 / L without a power iteration per slice.
STEP = 1.0
_TINY = 1e-24  # inside the square root of a coefficient's magnitude: its gradient stays finite at 0


@dataclass(frozen=True)
class L1WaveletSettings:
    """The settings of the CS reconstruction (the CS model's YAML).

    Parameters
    ----------
    weight : float
        w of the l1 term, in DIRECT's normalised image units (chosen on the validation split by ``smug cs-tune``).
    iterations : int
        FISTA iterations.
    wavelet : str
        A PyWavelets name of an orthogonal wavelet (``haar``, ``db2``, ``db4``, ...).
    levels : int
        Decomposition levels; the image height and width must be divisible by 2**levels.
    """

    weight: float = 1e-3
    iterations: int = 50
    wavelet: str = "db4"
    levels: int = 3

    def __post_init__(self) -> None:
        import pywt

        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float) or not self.weight >= 0:
            raise ValueError(f"'weight' must be a number >= 0, got {self.weight!r}.")
        if not math.isfinite(self.weight):
            raise ValueError(f"'weight' must be finite, got {self.weight!r}.")
        for key in ("iterations", "levels"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"'{key}' must be a positive integer, got {value!r}.")
        if not isinstance(self.wavelet, str) or self.wavelet not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"'wavelet' must be a wavelet name of PyWavelets (haar, db4, ...), got {self.wavelet!r}.")
        if not pywt.Wavelet(self.wavelet).orthogonal:
            raise ValueError(f"'wavelet' {self.wavelet!r} is not orthogonal: use haar, dbN, symN or coifN.")


class OrthogonalWavelet:
    """W and W^T = W^-1 of ``levels`` 2D levels on real images (B, H, W); matrices built once per image size."""

    def __init__(self, wavelet: str, levels: int):
        self.wavelet, self.levels = wavelet, levels
        self._transforms: dict[tuple, tuple] = {}

    def _pair(self, like: torch.Tensor):
        import ptwt

        key = (tuple(like.shape[-2:]), like.dtype, like.device)
        if key not in self._transforms:
            height, width = like.shape[-2:]
            if height % 2**self.levels or width % 2**self.levels:
                raise ValueError(
                    f"The CS model's wavelet needs image sides divisible by 2**levels = {2**self.levels}, got "
                    f"{height} x {width}: lower 'levels' in its YAML."
                )
            self._transforms[key] = (ptwt.MatrixWavedec2(self.wavelet, self.levels), ptwt.MatrixWaverec2(self.wavelet))
        return self._transforms[key]

    def shrink(self, image: torch.Tensor, threshold: float) -> torch.Tensor:
        """W^T soft(W x, threshold) of complex images (N, H, W, 2): the prox of threshold ||W x||_1."""
        parts = image.movedim(-1, 1).flatten(0, 1)  # (N * 2, H, W): real and imaginary part of each slice
        analysis, synthesis = self._pair(parts)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="ptwt")  # torch.sparse is "beta"
            coefficients = analysis(parts)
            details = [tuple(_soft(band, threshold) for band in level) for level in coefficients[1:]]
            restored = synthesis([coefficients[0], *details])
        return restored.unflatten(0, (-1, 2)).movedim(1, -1)


def _soft(band: torch.Tensor, threshold: float) -> torch.Tensor:
    """Soft-thresholding of complex coefficients stored as (real, imaginary) pairs along dim 0 of (N * 2, h, w)."""
    pairs = band.unflatten(0, (-1, 2))
    magnitude = torch.sqrt((pairs**2).sum(dim=1, keepdim=True) + _TINY)
    return (pairs * torch.relu(1 - threshold / magnitude)).flatten(0, 1)


def l1_wavelet_sense(
    operator: MultiCoilOperator, kspace: torch.Tensor, settings: L1WaveletSettings, wavelet: OrthogonalWavelet
) -> torch.Tensor:
    """FISTA from the zero-filled image A^H y; the complex image (N, H, W, 2), differentiable w.r.t. ``kspace``."""
    adjoint = operator.adjoint(kspace)
    x = momentum = adjoint
    t = 1.0
    for _ in range(settings.iterations):
        gradient = operator.normal(momentum) - adjoint
        x_next = wavelet.shrink(momentum - STEP * gradient, STEP * settings.weight)
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        momentum = x_next + ((t - 1) / t_next) * (x_next - x)
        x, t = x_next, t_next
    return x
