"""The bundled shifted set: real anatomy of other subjects than Colin27 (``assets/dipy_shifted.npz``).

The asset is derived by ``scripts/make_dipy_shifted_subset.py`` from two data files of PyPI's dipy (BSD-3-clause,
see ``assets/LICENSE-dipy.txt``): 10 axial slices of a b0 EPI volume (another subject, T2-weighted contrast, 2 mm)
and one coronal T1 slice (another subject and orientation, 1 mm). ``smug data demo --shifted`` simulates them with
the demo's simulator, but with another coil array and another noise level, as a distribution-shifted test set.
"""

import dataclasses
import importlib.resources

import numpy as np
from scipy import ndimage

ASSET_NAME = "dipy_shifted.npz"
FOLDER = "shifted"
FILE_PREFIX = "dipy_"
NOISE = 0.03
# Another head array than the demo's (coil_sensitivities' defaults: ring 120 x 102 mm, 160 mm loops, 10 degrees):
# a tighter ring, shorter loops, a wider positioning range.
COIL_ARRAY = {"ring_semi_axes_mm": (110.0, 94.0), "loop_length_mm": 120.0, "max_rotation_deg": 25.0}
# Offset of the random streams' volume index, so that no shifted volume shares a stream with a Colin27 slab.
STREAM_OFFSET = 1000
# The b0 file's slice positions are unreliable (its affine is sheared, 32 mm along z for 10 slices): the simulation
# places the slices this far apart around the coil ring centre.
EPI_SLICE_GAP_MM = 4.0


@dataclasses.dataclass(frozen=True)
class ShiftedVolume:
    """One volume of the shifted set, resampled to the simulation grid.

    Attributes
    ----------
    name : str
        File stem.
    acquisition : str
        fastMRI ``acquisition`` attribute.
    description : str
        Where the anatomy comes from.
    images : np.ndarray
        (slices, rows, columns) magnitude in [0, 1] at the fine spacing.
    slice_z_mm : np.ndarray
        (slices,) positions relative to the coil ring centre.
    thickness_mm : float
        Slice spacing written to the header.
    """

    name: str
    acquisition: str
    description: str
    images: np.ndarray
    slice_z_mm: np.ndarray
    thickness_mm: float


def _resample(images: np.ndarray, spacing_mm: np.ndarray, fine_spacing_mm: tuple[float, float]) -> np.ndarray:
    """Cubic-spline interpolation of each slice onto the fine grid, scaled to a maximum of 1 per volume."""
    zoom = (1.0, *(float(s) / f for s, f in zip(spacing_mm, fine_spacing_mm)))
    fine = np.clip(ndimage.zoom(images.astype(np.float64), zoom, order=3), 0.0, None)
    return fine / fine.max()


def load_shifted_volumes(fine_spacing_mm: tuple[float, float]) -> list[ShiftedVolume]:
    """Load the bundled asset and resample it to ``fine_spacing_mm``.

    Parameters
    ----------
    fine_spacing_mm : tuple[float, float]
        Pixel spacing of the simulation grid.

    Returns
    -------
    list[ShiftedVolume]
        The b0 EPI volume (10 axial slices) and the coronal T1 slice.
    """
    with importlib.resources.files("smug_plugin.data.assets").joinpath(ASSET_NAME).open("rb") as handle:
        with np.load(handle) as asset:
            epi, epi_spacing = asset["epi"], asset["epi_spacing_mm"]
            coronal, coronal_spacing = asset["coronal"], asset["coronal_spacing_mm"]
    epi_z = (np.arange(len(epi)) - (len(epi) - 1) / 2) * EPI_SLICE_GAP_MM
    return [
        ShiftedVolume(
            name=f"{FILE_PREFIX}b0_epi",
            acquisition="AXT2",
            description="dipy S0_10slices.nii.gz (b0 EPI, another subject)",
            images=_resample(epi, epi_spacing, fine_spacing_mm),
            slice_z_mm=epi_z,
            thickness_mm=EPI_SLICE_GAP_MM,
        ),
        ShiftedVolume(
            name=f"{FILE_PREFIX}t1_coronal",
            acquisition="CORT1",
            description="dipy t1_coronal_slice.npy (coronal T1, another subject)",
            images=_resample(coronal, coronal_spacing, fine_spacing_mm),
            slice_z_mm=np.zeros(1),
            thickness_mm=1.0,
        ),
    ]
