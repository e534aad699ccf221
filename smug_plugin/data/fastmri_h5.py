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
) -> str:
    """Build the ISMRMRD XML header of a 2D Cartesian multi-slice acquisition.

    fastMRI's convention is followed: matrixSize x = H (readout, axis -2), y = W (phase encoding, axis -1).
    Encoded and reconstructed spaces are equal (no readout oversampling is simulated) and the phase-encoding
    limits span all W columns with the centre at W // 2, so DIRECT's header parsing finds no padded columns.

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
    for space in ("encodedSpace", "reconSpace"):
        element = sub(encoding, space)
        xyz(element, "matrixSize", (matrix[0], matrix[1], 1))
        xyz(element, "fieldOfView_mm", (*(float(f) for f in fov_mm), float(slice_thickness_mm)))
    encoding_limits = sub(encoding, "encodingLimits")
    limits(encoding_limits, "kspace_encoding_step_1", matrix[1] - 1, matrix[1] // 2)
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
    """
    if kspace.ndim != 4 or not np.iscomplexobj(kspace):
        raise ValueError(f"kspace must be complex (slices, coils, H, W), got {kspace.dtype} {kspace.shape}.")
    kspace = kspace.astype(np.complex64)
    target = rss_from_kspace(kspace).astype(np.float32)
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
