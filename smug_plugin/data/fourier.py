"""The one centred orthonormal 2D FFT pair of the data package (DIRECT's ``fft2``/``ifft2`` convention, in numpy).

The simulation runs in float64 numpy, so DIRECT's torch transforms are not reused here; the convention is the same:
the k-space centre (DC) sits at index ``n // 2`` of each of the last two axes.
"""

import numpy as np

AXES = (-2, -1)


def fft2c(image: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2D FFT over the last two axes."""
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image, axes=AXES), norm="ortho"), axes=AXES)


def ifft2c(kspace: np.ndarray) -> np.ndarray:
    """Centred orthonormal inverse 2D FFT over the last two axes."""
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=AXES), norm="ortho"), axes=AXES)
