"""Tiny ellipse phantoms as fully sampled fastMRI multi-coil files, for tests and benchmarks of DIRECT pipelines.

Unlike the demo data (real anatomy, simulated acquisition), these are a few geometric shapes seen by smooth complex
coil maps, cheap enough to write in milliseconds at any matrix size.
"""

import pathlib

import numpy as np

from smug_plugin.data.fastmri_h5 import ismrmrd_header, write_fastmri_h5

MATRIX, COILS, SLICES = (32, 24), 4, 3


def write_phantom_h5(
    directory: pathlib.Path,
    num_files: int = 2,
    seed: int = 0,
    shape: tuple[int, int] = MATRIX,
    coils: int = COILS,
    slices: int = SLICES,
) -> pathlib.Path:
    """Write ``num_files`` volumes ``file<i>.h5`` of random ellipse phantoms (seeded) into ``directory``.

    Parameters
    ----------
    directory : pathlib.Path
        Output folder (created).
    num_files, slices : int
        Volumes and slices per volume.
    seed : int
        Seed of the phantoms' shapes.
    shape : tuple[int, int]
        Matrix (H, W), 1 mm pixels.
    coils : int
        Receiver coils.

    Returns
    -------
    pathlib.Path
        ``directory``.
    """
    h, w = shape
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]
    maps = np.stack([np.exp(-((xx - c) ** 2 + yy**2)) * np.exp(1j * c) for c in np.linspace(-0.8, 0.8, coils)])
    header = ismrmrd_header(shape, (float(h), float(w)), 1.0, slices, coils, protocol="PHANTOM")
    for f in range(num_files):
        images = []
        for s in range(slices):
            a, b = rng.uniform(0.4, 0.8, size=2)
            img = ((xx / a) ** 2 + (yy / b) ** 2 < 1).astype(float)
            img += 0.5 * ((xx - rng.uniform(-0.2, 0.2)) ** 2 + (yy - 0.1 * s) ** 2 < 0.04)
            images.append(img)
        coil_images = np.stack(images)[:, None] * maps[None]
        kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(coil_images, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
        write_fastmri_h5(directory / f"file{f}.h5", kspace, header, acquisition="PHANTOM", patient_id=f"phantom{f}")
    return directory
