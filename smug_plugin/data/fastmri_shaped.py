"""fastMRI-shaped multicoil files, generated from the bundled anatomy: no fastMRI data ships or downloads.

The files have the shapes, oversampling, padding and header fields of fastMRI's multicoil sets, so that DIRECT's
and fastMRI's loaders and every transform of the knee and brain projects run on them as on the real data:

* knee: 15 coils, k-space 640 x 368 (2x readout oversampling; 334 of the 368 phase-encoding columns acquired, the
  rest zero padding that ``kspace_encoding_step_1`` declares), ISMRMRD ``encodedSpace`` 640 x 368 and ``reconSpace``
  320 x 320, ``reconstruction_rss`` 320 x 320, acquisition ``CORPDFS_FBK``;
* brain: 16 coils, 640 x 320 (``AXT2``), and a second size per file, 20 coils 768 x 396 (``AXFLAIR``) as in
  fastMRI's brain set; ``reconSpace`` and ``reconstruction_rss`` 320 x 320.

Every file has the attributes ``acquisition``, ``max``, ``norm`` and ``patient_id``. The images are slices of the
bundled Colin27 brain (:mod:`smug_plugin.data.colin27`, also for the "knee": what matters here are the shapes),
simulated as in the demo (:mod:`smug_plugin.data.simulation`: smooth phase, Biot-Savart coils, k-space cropped from
a finer grid, noise) and scaled so that ``max`` is of the order of fastMRI's (about 5e-4).
"""

import dataclasses
import pathlib

import numpy as np

from smug_plugin.data import simulation
from smug_plugin.data.colin27 import load_colin27
from smug_plugin.data.demo import simulate_slab
from smug_plugin.data.fastmri_h5 import ismrmrd_header, write_fastmri_h5

SPLITS = ("train", "val", "test")
RECON_MATRIX = (320, 320)
# fastMRI's reconstruction_rss maxima are of the order of 1e-4 to 1e-3 (k-space in the scanner's raw units).
TARGET_MAX = 5e-4


@dataclasses.dataclass(frozen=True)
class Shape:
    """One fastMRI acquisition type.

    Attributes
    ----------
    acquisition : str
        The ``acquisition`` attribute (fastMRI: CORPD_FBK, CORPDFS_FBK, AXT1, AXT2, AXFLAIR, AXT1POST ...).
    coils : int
        Receive channels.
    matrix : tuple[int, int]
        k-space (H, W): H the readout, 2x oversampled; W the phase encoding.
    acquired_columns : int
        Columns actually sampled, centred; the others are zero (declared by ``kspace_encoding_step_1``).
    recon_fov_mm : tuple[float, float]
        Field of view of the 320 x 320 reconstruction; the encoded space spans twice that along the readout.
    """

    acquisition: str
    coils: int
    matrix: tuple[int, int]
    acquired_columns: int
    recon_fov_mm: tuple[float, float]

    @property
    def encoded_fov_mm(self) -> tuple[float, float]:
        """(H, W) field of view of the k-space matrix: 2x readout oversampling, the same pixel width."""
        pixel = self.recon_fov_mm[1] / RECON_MATRIX[1]
        return (2 * self.recon_fov_mm[0], self.matrix[1] * pixel)


ANATOMIES: dict[str, tuple[Shape, ...]] = {
    "knee": (Shape("CORPDFS_FBK", 15, (640, 368), 334, (200.0, 200.0)),),
    "brain": (
        Shape("AXT2", 16, (640, 320), 320, (220.0, 220.0)),
        Shape("AXFLAIR", 20, (768, 396), 396, (220.0, 220.0)),
    ),
}


def _geometry(shape: Shape, fine_spacing_mm: tuple[float, float]) -> simulation.Geometry:
    fov = tuple(round(f / s) * s for f, s in zip(shape.encoded_fov_mm, fine_spacing_mm))
    return simulation.Geometry(fov_mm=fov, matrix=shape.matrix, fine_spacing_mm=fine_spacing_mm)


def make_fastmri_shaped(
    output_dir: pathlib.Path,
    anatomy: str,
    *,
    volumes: dict[str, int] | None = None,
    slices: int = 2,
    seed: int = 0,
    noise: float = 0.02,
    sizes: str = "all",
) -> dict[str, list[pathlib.Path]]:
    """Write fastMRI-shaped multicoil volumes into ``output_dir/<split>/``.

    Parameters
    ----------
    output_dir : pathlib.Path
        Root folder; ``train/``, ``val/`` and ``test/`` are created.
    anatomy : str
        ``knee`` or ``brain`` (:data:`ANATOMIES`).
    volumes : dict[str, int], optional
        Volumes per split; default one each.
    slices : int
        Central slices per volume (fastMRI's volumes have 16-40; a few suffice for tests).
    seed : int
        Seed of phase, coils and noise.
    noise : float
        Noise per k-space sample relative to the image maximum before scaling (as ``smug data demo --noise``).
    sizes : str
        ``all``: the volumes cycle through the anatomy's acquisition types (brain: 640 x 320 with 16
        coils, then 768 x 396 with 20); ``first``: only the first type (the cheapest, for tests).

    Returns
    -------
    dict[str, list[pathlib.Path]]
        The files written, per split.
    """
    if anatomy not in ANATOMIES:
        raise ValueError(f"anatomy must be one of {', '.join(ANATOMIES)}, got {anatomy!r}.")
    shapes = ANATOMIES[anatomy] if sizes == "all" else ANATOMIES[anatomy][:1]
    volumes = {split: 1 for split in SPLITS} if volumes is None else volumes
    colin = load_colin27()
    ring_centre_mm = 0.5 * (colin.slice_z_mm.min() + colin.slice_z_mm.max())
    thickness_mm = float(np.median(np.diff(colin.slice_z_mm[colin.slab(0)])))
    written: dict[str, list[pathlib.Path]] = {}
    slab = 0
    for split in SPLITS:
        written[split] = []
        for _ in range(volumes.get(split, 0)):
            shape = shapes[slab % len(shapes)]
            geometry = _geometry(shape, colin.pixel_spacing_mm)
            geometry.validate(colin.images.shape[1:])
            positions = colin.slab(slab % colin.num_slabs)
            first = max((len(positions) - slices) // 2, 0)
            positions = positions[first : first + slices]
            kspace = simulate_slab(
                colin.images[positions] / float(colin.images.max()),
                colin.slice_z_mm[positions] - ring_centre_mm,
                geometry,
                slab=slab,
                seed=seed,
                num_coils=shape.coils,
                noise=noise,
            )
            # Zero the columns that were not acquired (fastMRI's zero-padded phase encoding).
            start = shape.matrix[1] // 2 - shape.acquired_columns // 2
            kspace[..., :start] = 0
            kspace[..., start + shape.acquired_columns :] = 0
            rss = np.sqrt((np.abs(np.fft.ifft2(kspace[0], norm="ortho")) ** 2).sum(0)).max()
            kspace *= TARGET_MAX / rss
            header = ismrmrd_header(
                shape.matrix,
                geometry.fov_mm,
                thickness_mm,
                len(positions),
                shape.coils,
                protocol=shape.acquisition,
                recon_matrix=RECON_MATRIX,
                recon_fov_mm=shape.recon_fov_mm,
                acquired_columns=shape.acquired_columns,
            )
            path = pathlib.Path(output_dir) / split / f"file_{anatomy}_{shape.acquisition}_{slab:04d}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_fastmri_h5(
                path,
                kspace,
                header,
                acquisition=shape.acquisition,
                patient_id=f"smug-fixture-{anatomy}-{slab:04d}",
                extra_attrs={"smug_plugin_fixture": "fastmri_shaped", "source_slab": slab % colin.num_slabs},
                target_shape=RECON_MATRIX,
            )
            written[split].append(path)
            slab += 1
    return written
