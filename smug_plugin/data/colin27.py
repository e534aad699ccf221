"""Access to the bundled Colin27 T1 subset (``assets/colin27_t1_slabs.npz``).

The asset is derived by ``scripts/make_colin27_subset.py`` from Debian's ``mricron-data`` (BSD-3-clause, see
``assets/LICENSE-colin27.txt``): axial slices of the skull-stripped Colin27 brain at 0.5 mm, grouped into slabs
that the demo treats as separate volumes.
"""

import dataclasses
import importlib.resources

import numpy as np

ASSET_NAME = "colin27_t1_slabs.npz"


@dataclasses.dataclass(frozen=True)
class Colin27Slabs:
    """Axial 0.5 mm slices of the Colin27 T1 brain, grouped into slabs.

    Attributes
    ----------
    images : np.ndarray
        (slices, rows, columns) uint8; rows run anterior -> posterior, columns patient left -> right.
    slab_index : np.ndarray
        (slices,) slab ("volume") of each slice.
    source_slice_index : np.ndarray
        (slices,) index of the slice along the inferior -> superior axis of ``ch2better.nii.gz``.
    slice_z_mm : np.ndarray
        (slices,) world z position (mm, superior positive) of each slice.
    pixel_spacing_mm : tuple[float, float]
        In-plane spacing (rows, columns) in mm.
    """

    images: np.ndarray
    slab_index: np.ndarray
    source_slice_index: np.ndarray
    slice_z_mm: np.ndarray
    pixel_spacing_mm: tuple[float, float]

    @property
    def num_slabs(self) -> int:
        """Number of slabs (volumes)."""
        return int(self.slab_index.max()) + 1

    def slab(self, index: int) -> np.ndarray:
        """Positions (into ``images``) of the slices of slab ``index``, inferior to superior."""
        positions = np.flatnonzero(self.slab_index == index)
        if positions.size == 0:
            raise IndexError(f"Slab {index} does not exist; there are {self.num_slabs} slabs.")
        return positions


def load_colin27() -> Colin27Slabs:
    """Load the bundled asset.

    Returns
    -------
    Colin27Slabs
        The slices and their provenance.
    """
    with importlib.resources.files("smug_plugin.data.assets").joinpath(ASSET_NAME).open("rb") as handle:
        with np.load(handle) as asset:
            return Colin27Slabs(
                images=asset["images"],
                slab_index=asset["slab_index"].astype(np.int64),
                source_slice_index=asset["source_slice_index"].astype(np.int64),
                slice_z_mm=asset["slice_z_mm"].astype(np.float64),
                pixel_spacing_mm=tuple(float(v) for v in asset["pixel_spacing_mm"]),
            )
