"""Writing the fastMRI multicoil h5 layout that DIRECT's ``FastMRIDataset`` and fastMRI's own loaders read.

A file holds ``kspace`` (slices, coils, H, W) complex64 with the phase-encoding direction on the last axis,
``reconstruction_rss`` (slices, H, W) float32, an ISMRMRD XML header, and the attributes ``max``, ``norm``,
``acquisition`` and ``patient_id``.
"""

import pathlib
import xml.etree.ElementTree as ET

import h5py
import numpy as np

from smug_plugin.atomic import atomic_path
from smug_plugin.data.fourier import ifft2c

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"


def ismrmrd_header(
    matrix: tuple[int, int],
    fov_mm: tuple[float, float],
    slice_thickness_mm: float,
    num_slices: int,
    num_coils: int,
    protocol: str = "AXT1",
    *,
    recon_matrix: tuple[int, int] | None = None,
    recon_fov_mm: tuple[float, float] | None = None,
    acquired_columns: int | None = None,
) -> str:
    """Build the ISMRMRD XML header of a 2D Cartesian multi-slice acquisition.

    fastMRI's convention is followed: matrixSize x = H (readout, axis -2), y = W (phase encoding, axis -1).
    By default encoded and reconstructed spaces are equal (no readout oversampling) and the phase-encoding
    limits span all W columns with the centre at W // 2, so DIRECT's header parsing finds no padded columns; the
    fastMRI-shaped fixtures (:mod:`smug_plugin.data.fastmri_shaped`) set both as fastMRI's files do.

    Parameters
    ----------
    matrix : tuple[int, int]
        (H, W) of the k-space.
    fov_mm : tuple[float, float]
        Field of view (H, W) in mm.
    slice_thickness_mm : float
        Slice thickness (the z field of view).
    num_slices, num_coils : int
        Number of slices and receiver channels.
    protocol : str
        Protocol name.
    recon_matrix, recon_fov_mm : tuple[int, int], optional
        The reconstruction space (fastMRI: 320 x 320 with 2x readout oversampling in the encoded space); default:
        that of the encoded space.
    acquired_columns : int, optional
        Phase-encoding columns actually sampled, centred at W // 2; the others are zero padding, which DIRECT and
        fastMRI find from ``kspace_encoding_step_1`` (fastMRI knee: 368 columns, about 334 acquired). Default: all.

    Returns
    -------
    str
        The XML document.
    """
    ET.register_namespace("", ISMRMRD_NAMESPACE)

    def sub(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ISMRMRD_NAMESPACE}}}{tag}")
        if text is not None:
            element.text = str(text)
        return element

    def xyz(parent: ET.Element, tag: str, values: tuple) -> None:
        element = sub(parent, tag)
        for axis, value in zip("xyz", values):
            sub(element, axis, value)

    def limits(parent: ET.Element, tag: str, maximum: int, center: int) -> None:
        element = sub(parent, tag)
        sub(element, "minimum", 0)
        sub(element, "maximum", maximum)
        sub(element, "center", center)

    root = ET.Element(f"{{{ISMRMRD_NAMESPACE}}}ismrmrdHeader")
    measurement = sub(root, "measurementInformation")
    sub(measurement, "patientPosition", "HFS")
    sub(measurement, "protocolName", protocol)
    system = sub(root, "acquisitionSystemInformation")
    sub(system, "systemVendor", "smug_plugin simulation")
    sub(system, "receiverChannels", num_coils)
    encoding = sub(root, "encoding")
    spaces = {"encodedSpace": (matrix, fov_mm), "reconSpace": (recon_matrix or matrix, recon_fov_mm or fov_mm)}
    for space, (size, fov) in spaces.items():
        element = sub(encoding, space)
        xyz(element, "matrixSize", (size[0], size[1], 1))
        xyz(element, "fieldOfView_mm", (*(float(f) for f in fov), float(slice_thickness_mm)))
    encoding_limits = sub(encoding, "encodingLimits")
    # DIRECT and fastMRI: padding_left = W // 2 - center, padding_right = padding_left + maximum + 1.
    acquired = matrix[1] if acquired_columns is None else acquired_columns
    first = matrix[1] // 2 - acquired // 2
    limits(encoding_limits, "kspace_encoding_step_1", acquired - 1, matrix[1] // 2 - first)
    limits(encoding_limits, "kspace_encoding_step_2", 0, 0)
    limits(encoding_limits, "slice", num_slices - 1, num_slices // 2)
    sub(encoding, "trajectory", "cartesian")
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def rss_from_kspace(kspace: np.ndarray) -> np.ndarray:
    """Root-sum-of-squares image of centred multi-coil k-space (..., coils, H, W), orthonormal inverse FFT."""
    return np.sqrt((np.abs(ifft2c(kspace)) ** 2).sum(axis=-3))


def write_fastmri_h5(
    path: pathlib.Path,
    kspace: np.ndarray,
    header: str,
    *,
    acquisition: str,
    patient_id: str,
    extra_attrs: dict[str, object] | None = None,
    target_shape: tuple[int, int] | None = None,
) -> None:
    """Write one volume atomically (:func:`smug_plugin.atomic.atomic_path`), with the mode the umask gives.

    A run that fails half-way thus leaves no truncated file that a later training run would pick up.

    Parameters
    ----------
    path : pathlib.Path
        Destination ``.h5``.
    kspace : np.ndarray
        (slices, coils, H, W) complex k-space.
    header : str
        ISMRMRD XML header.
    acquisition, patient_id : str
        fastMRI attributes.
    extra_attrs : dict[str, object], optional
        Further file attributes (provenance).
    target_shape : tuple[int, int], optional
        Centre-crop ``reconstruction_rss`` to this (the reconstruction space, fastMRI: 320 x 320), as fastMRI
        does; default: the k-space's H x W.
    """
    if kspace.ndim != 4 or not np.iscomplexobj(kspace):
        raise ValueError(f"kspace must be complex (slices, coils, H, W), got {kspace.dtype} {kspace.shape}.")
    kspace = kspace.astype(np.complex64)
    target = rss_from_kspace(kspace).astype(np.float32)
    if target_shape is not None:
        if any(t > s for t, s in zip(target_shape, target.shape[-2:])):
            raise ValueError(f"target_shape {target_shape} exceeds the k-space's {target.shape[-2:]}.")
        top, left = ((s - t) // 2 for s, t in zip(target.shape[-2:], target_shape))
        target = np.ascontiguousarray(target[:, top : top + target_shape[0], left : left + target_shape[1]])
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as handle:
        # One slice per chunk: DIRECT reads slice by slice.
        handle.create_dataset("kspace", data=kspace, chunks=(1, *kspace.shape[1:]))
        handle.create_dataset("reconstruction_rss", data=target)
        handle.create_dataset("ismrmrd_header", data=header)
        handle.attrs["max"] = float(target.max())
        handle.attrs["norm"] = float(np.linalg.norm(target))
        handle.attrs["acquisition"] = acquisition
        handle.attrs["patient_id"] = patient_id
        for key, value in (extra_attrs or {}).items():
            handle.attrs[key] = value
