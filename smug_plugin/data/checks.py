"""Checks of the h5 files under ``--data-root`` before anything is evaluated.

DIRECT's FastMRI dataset skips a file it cannot open with a console warning, and reads some malformed files without
a word: 3-D k-space as single-coil, a header whose encoded matrix contradicts the k-space (it then zeroes the wrong
columns), real k-space as if it were complex. Each would give a wrong number with exit status 0. Here a file that
DIRECT skips becomes a `DataIssue` in the report, and a file it would misread is a `DataError`: DIRECT itself raises
on data it cannot use consistently (``verify_extra_h5_integrity``), and a halted run costs nothing at this point,
while a wrong number in a table is not noticed.
"""

import pathlib
from dataclasses import asdict, dataclass

import numpy as np

from smug_plugin import direct_adapter

LAYOUT = "kspace (slices, coils, H, W) complex, as fastMRI multicoil files"


class DataError(ValueError):
    """An h5 file under the data root that DIRECT would read into wrong numbers."""


@dataclass(frozen=True)
class DataIssue:
    """A file DIRECT skips, as the report lists it."""

    file: str
    problem: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def check_data_root(data_root: pathlib.Path) -> list[DataIssue]:
    """Check every ``*.h5`` directly under ``data_root`` (the files DIRECT's dataset globs).

    Returns
    -------
    list[DataIssue]
        The files DIRECT will skip (it cannot open them: truncated, or not HDF5).

    Raises
    ------
    DataError
        No h5 file, none readable, or a file DIRECT would misread: no ``kspace``, real or 3-D k-space, a header that
        is no ISMRMRD XML or whose encoded matrix contradicts the k-space.
    """
    import h5py

    files = sorted(data_root.glob("*.h5"))
    if not files:
        raise DataError(f"No *.h5 files in --data-root {data_root}: give the folder of the fastMRI-format files.")
    issues = []
    for path in files:
        try:
            with h5py.File(path, "r") as handle:
                check_volume(path, handle)
        except OSError as error:  # what DIRECT's dataset catches to skip a file
            issues.append(DataIssue(path.name, f"skipped: cannot be opened as HDF5 (truncated or corrupt): {error}"))
    if len(issues) == len(files):
        first = issues[0]
        raise DataError(f"None of the {len(files)} h5 files in {data_root} is readable ({first.file} {first.problem}).")
    return issues


def check_fully_sampled(data_root: pathlib.Path, fix: str) -> None:
    """Raise DataError if an h5 file under ``data_root`` holds undersampled k-space: a ``mask`` dataset, as in
    fastMRI's test and challenge files (DIRECT reads their k-space as if it were fully sampled). ``fix`` says what
    needs the fully sampled k-space and what to do instead. Files that cannot be opened are left to
    :func:`check_data_root`."""
    import h5py

    for path in sorted(data_root.glob("*.h5")):
        try:
            with h5py.File(path, "r") as handle:
                undersampled = "mask" in handle
        except OSError:
            continue
        if undersampled:
            raise DataError(f"{path} holds undersampled k-space (it has a 'mask' dataset): {fix}.")


def check_volume(path: pathlib.Path, handle) -> None:
    """Raise DataError if DIRECT's FastMRI dataset would misread the open h5 file ``handle``."""
    if "kspace" not in handle:
        found = ", ".join(handle) or "nothing"
        raise DataError(f"{path} has no 'kspace' dataset (it has: {found}); expected {LAYOUT}.")
    kspace = handle["kspace"]
    # DIRECT also reads real and imaginary parts stored as a last axis of size 2.
    complex_pairs = np.issubdtype(kspace.dtype, np.floating) and kspace.shape[-1:] == (2,)
    if not np.issubdtype(kspace.dtype, np.complexfloating) and not complex_pairs:
        raise DataError(
            f"{path}: kspace is real ({kspace.dtype}, shape {kspace.shape}); expected {LAYOUT} "
            "(or real and imaginary parts as a last axis of size 2)."
        )
    shape = kspace.shape[:-1] if complex_pairs else kspace.shape
    if len(shape) != 4:
        coils = " has no coil axis (single-coil data: add one of size 1)" if len(shape) == 3 else ""
        raise DataError(f"{path}: kspace of shape {kspace.shape}{coils}; expected {LAYOUT}.")
    if "ismrmrd_header" in handle:
        check_header(path, handle["ismrmrd_header"][()], shape[-1])


def check_header(path: pathlib.Path, header, width: int) -> None:
    """Raise DataError unless ``header`` is ISMRMRD XML whose encoded matrix fits k-space of ``width`` columns."""
    fix = "correct the header or delete the 'ismrmrd_header' dataset (DIRECT then uses the k-space shape)"
    try:
        parsed = direct_adapter.parse_fastmri_header(header)
    except Exception as error:  # XML syntax, missing elements, non-integers: DIRECT would raise mid-run
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path}: ismrmrd_header is not an ISMRMRD XML header ({problem}): {fix}.") from None
    encoded = parsed["encoding_size"][1]
    left, right = parsed["padding_left"], parsed["padding_right"]
    if encoded != width or not 0 <= left < right <= width:
        raise DataError(
            f"{path}: ismrmrd_header encodedSpace matrixSize y={encoded} (encoding limits: columns {left} to "
            f"{right - 1}) contradicts the k-space width {width}; DIRECT would zero k-space columns by it: {fix}."
        )
