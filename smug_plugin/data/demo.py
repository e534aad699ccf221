"""The demo dataset: simulated multi-coil acquisitions of the bundled Colin27 slabs in fastMRI h5 format.

Each slab of the bundled asset becomes one volume (one h5 file). Volumes are assigned to ``train/``, ``val/`` and
``test/`` as a whole, so no slice of one volume appears in two splits. All randomness comes from generators seeded
with ``(seed, slab, purpose[, slice])``: the same seed gives byte-identical k-space, whatever the split sizes.

The whole dataset is written into a hidden staging folder beside the output folder and swapped in at the end, so
an interrupted run leaves the earlier data or the new data, never a mix of both (see :func:`swap_in`).
"""

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import time
from collections.abc import Iterator

import numpy as np

from smug_plugin.atomic import atomic_write_text
from smug_plugin.data import shifted as shifted_set
from smug_plugin.data import simulation
from smug_plugin.data.colin27 import load_colin27
from smug_plugin.data.fastmri_h5 import ismrmrd_header, write_fastmri_h5

SPLITS = ("train", "val", "test")
FILE_PREFIX = "colin27_AXT1_slab"
MANIFEST_NAME = "demo_manifest.json"
# Folders this command writes, with the prefix of their h5 files.
FOLDER_PREFIXES = {**{split: FILE_PREFIX for split in SPLITS}, shifted_set.FOLDER: shifted_set.FILE_PREFIX}
# Sub-seeds of the per-slab generators.
_PHASE, _COILS, _NOISE = 0, 1, 2


@dataclasses.dataclass
class DemoSummary:
    """What :func:`make_demo_dataset` wrote.

    Attributes
    ----------
    output_dir : pathlib.Path
        Root folder (with ``train/``, ``val/``, ``test/``).
    files : dict[str, list[dict]]
        Per split, one record per volume: ``path``, ``slab``, ``source_slices``, ``kspace_shape``; with the shifted
        set also ``shifted`` (``volume`` in place of ``slab``).
    parameters : dict
        The simulation parameters.
    seconds : float
        Wall-clock time.
    """

    output_dir: pathlib.Path
    files: dict[str, list[dict]]
    parameters: dict
    seconds: float


def _spread(candidates: list[int], count: int) -> list[int]:
    """Pick ``count`` of the sorted ``candidates`` at evenly spaced positions (each split spans the brain)."""
    positions = np.floor((np.arange(count) + 0.5) * len(candidates) / max(count, 1)).astype(int)
    return [candidates[p] for p in positions]


def assign_splits(num_slabs: int, train: int, val: int, test: int) -> dict[str, list[int]]:
    """Assign whole slabs to splits: test and validation slabs spread over the brain, training from the rest.

    Parameters
    ----------
    num_slabs : int
        Slabs available.
    train, val, test : int
        Volumes per split.

    Returns
    -------
    dict[str, list[int]]
        Slab indices per split, disjoint.
    """
    if min(train, val, test) < 0 or train + val + test == 0:
        raise ValueError("volume counts must be >= 0 and not all zero (e.g. --train-volumes 6).")
    if train + val + test > num_slabs:
        raise ValueError(
            f"{train} + {val} + {test} volumes requested but the bundled data has {num_slabs} slabs: "
            f"lower --train-volumes/--val-volumes/--test-volumes to a total of at most {num_slabs}."
        )
    remaining = list(range(num_slabs))
    splits = {}
    for name, count in (("test", test), ("val", val), ("train", train)):
        splits[name] = _spread(remaining, count)
        remaining = [s for s in remaining if s not in splits[name]]
    return {name: sorted(splits[name]) for name in SPLITS}


def simulate_slab(
    magnitudes: np.ndarray,
    z_mm: np.ndarray,
    geometry: simulation.Geometry,
    *,
    slab: int,
    seed: int,
    num_coils: int,
    noise: float,
    coil_array: dict | None = None,
) -> np.ndarray:
    """Simulate the k-space of one volume.

    Parameters
    ----------
    magnitudes : np.ndarray
        (slices, rows, columns) magnitude in [0, 1] at the fine spacing.
    z_mm : np.ndarray
        (slices,) positions relative to the coil ring centre.
    geometry : simulation.Geometry
        Field of view and matrices.
    slab, seed : int
        Identify the random streams.
    num_coils : int
        Receive channels.
    noise : float
        Noise standard deviation per k-space sample, relative to the maximum image intensity (1.0).
    coil_array : dict, optional
        Keyword arguments of :func:`simulation.coil_sensitivities` (the ring and loops); default: its defaults.

    Returns
    -------
    np.ndarray
        (slices, coils, H, W) complex64 k-space.
    """
    shape, spacing = geometry.fine_shape, geometry.fine_spacing_mm
    kspace = []
    for index, (magnitude, z) in enumerate(zip(magnitudes, z_mm)):
        # Fresh generators with the same seed per slice: one phase model and one coil array per volume.
        phase = simulation.smooth_phase(shape, spacing, z, np.random.default_rng([seed, slab, _PHASE]))
        coil_rng = np.random.default_rng([seed, slab, _COILS])
        maps = simulation.coil_sensitivities(shape, spacing, z, num_coils, coil_rng, **(coil_array or {}))
        noise_rng = np.random.default_rng([seed, slab, _NOISE, index])
        padded = simulation.pad_to_shape(magnitude, shape)
        kspace.append(simulation.simulate_kspace(padded, phase, maps, geometry.matrix, noise, noise_rng))
    return np.stack(kspace)


class OutputDirError(FileExistsError):
    """The output folder cannot take the dataset as it is; the message names the path and the fix."""


def _staging_prefix(output_dir: pathlib.Path) -> str:
    return f".{output_dir.name}.partial-"


def _previous_dir(output_dir: pathlib.Path) -> pathlib.Path:
    return output_dir.with_name(f".{output_dir.name}.previous")


def _output_error(output_dir: pathlib.Path, error: OSError) -> OSError:
    """A one-line error for a file-system failure while writing the dataset, naming the path and the fix."""
    where = f" ({error.filename})" if error.filename and str(error.filename) != str(output_dir) else ""
    return OSError(
        f"cannot write the demo data to {output_dir}: {error.strerror or error}{where}; nothing there was changed. "
        "Choose a writable --output-dir (it is created if missing)."
    )


def recover_interrupted_run(output_dir: pathlib.Path) -> None:
    """Undo what a killed run left beside ``output_dir``: staging folders, and a swap stopped half-way.

    A swap moves the earlier data to ``.<name>.previous`` and the staging folder to ``<name>``: if the second
    rename did not happen, the earlier data are put back; if only the deletion of the earlier data did not, it is
    finished. (So two runs must not write the same folder at once.)
    """
    if not output_dir.parent.is_dir():
        return
    for staging in output_dir.parent.glob(f"{_staging_prefix(output_dir)}*"):
        shutil.rmtree(staging)
    previous = _previous_dir(output_dir)
    if previous.is_dir():
        if output_dir.exists():
            shutil.rmtree(previous)
        else:
            previous.rename(output_dir)


def check_output_dir(output_dir: pathlib.Path, overwrite: bool) -> None:
    """Accept a new or empty folder, or one holding only an earlier run of this command (with ``overwrite``).

    Raises
    ------
    OutputDirError
        ``output_dir`` is or lies inside a file, holds anything this command did not write, or holds an earlier run and
        ``overwrite`` is false.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputDirError(f"--output-dir {output_dir} is a file: choose a folder (it is created if missing).")
    nearest = next(p for p in output_dir.parents if p.exists())
    if not nearest.is_dir():
        raise OutputDirError(
            f"--output-dir {output_dir} lies inside {nearest}, which is a file: choose a folder (it is created if "
            "missing)."
        )
    if not output_dir.is_dir():
        return
    ours, foreign = [], []
    for entry in sorted(output_dir.iterdir()):
        if entry.name == MANIFEST_NAME and entry.is_file():
            ours.append(entry)
        elif entry.name in FOLDER_PREFIXES and entry.is_dir():
            for child in sorted(entry.iterdir()):
                prefix = FOLDER_PREFIXES[entry.name]
                is_volume = child.name.startswith(prefix) and child.suffix == ".h5" and child.is_file()
                (ours if is_volume else foreign).append(child)
        else:
            foreign.append(entry)
    if foreign:
        raise OutputDirError(
            f"{foreign[0]} was not written by `smug data demo`; refusing to replace {output_dir}. Choose a new or "
            "empty --output-dir."
        )
    if ours and not overwrite:
        volumes = [p for p in ours if p.suffix == ".h5"]
        raise OutputDirError(
            f"{output_dir} already holds the demo data of an earlier run ({len(volumes)} h5 file(s)); DIRECT would "
            "train on all of them. Choose an empty --output-dir or pass --overwrite."
        )


def make_staging_dir(output_dir: pathlib.Path) -> pathlib.Path:
    """Create the hidden folder beside ``output_dir`` that the dataset is written into (mode from the umask)."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.with_name(f"{_staging_prefix(output_dir)}{os.getpid()}")
    staging.mkdir()
    for split in SPLITS:
        (staging / split).mkdir()
    return staging


@contextlib.contextmanager
def staged_output(output_dir: pathlib.Path, overwrite: bool) -> Iterator[pathlib.Path]:
    """Yield an empty staging folder (with the split folders) that replaces ``output_dir`` when the block succeeds.

    Parameters
    ----------
    output_dir : pathlib.Path
        The dataset folder: new, empty, or holding an earlier run of this command (replaced only if
        ``overwrite``). A symlink is followed: the folder it points to is replaced.
    overwrite : bool
        Replace an earlier run.

    Raises
    ------
    OSError
        With a one-line message naming the path and the fix (:class:`OutputDirError` for a folder that cannot take
        the dataset); nothing in ``output_dir`` has changed then.
    """
    # The real folder is swapped, and its staging folder sits beside it, on the same file system.
    target = output_dir.resolve()
    try:
        recover_interrupted_run(target)
        check_output_dir(target, overwrite)
        staging = make_staging_dir(target)
    except OutputDirError:
        raise
    except OSError as error:
        raise _output_error(output_dir, error) from error
    try:
        yield staging
        swap_in(staging, target)
    except OSError as error:
        raise _output_error(output_dir, error) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # already gone after a successful swap


def swap_in(staging: pathlib.Path, output_dir: pathlib.Path) -> None:
    """Replace ``output_dir`` by the complete ``staging`` folder.

    Two renames: the earlier data to ``.<name>.previous``, the staging folder to ``<name>``. An exception in
    between puts the earlier data back; a kill in between leaves them in ``.<name>.previous``, which
    :func:`recover_interrupted_run` puts back on the next run.
    """
    if not output_dir.exists():
        staging.rename(output_dir)
        return
    previous = _previous_dir(output_dir)
    output_dir.rename(previous)
    try:
        staging.rename(output_dir)
    except BaseException:
        previous.rename(output_dir)
        raise
    # The new data are in place: a failure to delete the earlier ones is finished by the next run.
    shutil.rmtree(previous, ignore_errors=True)


def make_demo_dataset(
    output_dir: str | os.PathLike,
    *,
    seed: int = 0,
    num_coils: int = 8,
    matrix: tuple[int, int] = (96, 80),
    fov_mm: tuple[float, float] = (192.0, 160.0),
    train_volumes: int = 6,
    val_volumes: int = 2,
    test_volumes: int = 2,
    slices_per_volume: int | None = None,
    noise: float = 0.02,
    shifted: bool = False,
    shifted_noise: float = shifted_set.NOISE,
    overwrite: bool = False,
) -> DemoSummary:
    """Simulate the demo dataset into ``output_dir/{train,val,test}/*.h5`` (fastMRI multicoil layout).

    With ``shifted``, also the shifted test set ``output_dir/shifted/*.h5`` (:mod:`smug_plugin.data.shifted`): other
    subjects, contrast and orientation, simulated with another coil array and ``shifted_noise``. It may be the only
    output (all volume counts 0).

    Parameters
    ----------
    output_dir : str or os.PathLike
        Root folder; created if needed.
    seed : int
        Seed of the phase, coil and noise realisations.
    num_coils : int
        Receive channels.
    matrix : tuple[int, int]
        Acquired matrix (H, W); W (last axis) is the phase-encoding direction that fastMRI masks undersample.
    fov_mm : tuple[float, float]
        Field of view (H, W) in mm; the 0.5 mm source image is zero-padded to it.
    train_volumes, val_volumes, test_volumes : int
        Volumes (slabs) per split; at most the number of bundled slabs in total.
    slices_per_volume : int, optional
        Keep only this many central slices of each slab (small test data). Default: all.
    noise : float
        Complex noise standard deviation per k-space sample relative to the maximum image intensity (1.0) at
        unit coil sensitivity (the ring centre); 0.02 gives an SNR of about 40 in white matter.
    shifted : bool
        Also write the shifted set to ``shifted/``.
    shifted_noise : float
        Its noise level, in the units of ``noise``.
    overwrite : bool
        Replace the data of an earlier run in ``output_dir`` (only once the new data are complete).

    Returns
    -------
    DemoSummary
        Files, shapes, split and timing.
    """
    start = time.perf_counter()
    colin = load_colin27()
    # Snap the field of view to whole fine pixels, so the header states the FOV that was simulated.
    fov_mm = tuple(round(f / s) * s for f, s in zip(fov_mm, colin.pixel_spacing_mm))
    geometry = simulation.Geometry(fov_mm=fov_mm, matrix=tuple(matrix), fine_spacing_mm=colin.pixel_spacing_mm)
    # Validate everything before the first file is written.
    geometry.validate(colin.images.shape[1:])
    if num_coils < 1:
        raise ValueError(f"the number of coils must be at least 1, got {num_coils} (e.g. --coils 8).")
    if noise < 0 or shifted_noise < 0:
        raise ValueError(
            f"noise levels must be >= 0, got --noise {noise} and --shifted-noise {shifted_noise} (e.g. 0.02, 0.03)."
        )
    max_slices = min(len(colin.slab(s)) for s in range(colin.num_slabs))
    if slices_per_volume is not None and not 1 <= slices_per_volume <= max_slices:
        raise ValueError(
            f"slices per volume must be between 1 and {max_slices} (--slices-per-volume), got {slices_per_volume}."
        )
    if shifted and train_volumes == val_volumes == test_volumes == 0:
        splits = {split: [] for split in SPLITS}
    else:
        splits = assign_splits(colin.num_slabs, train_volumes, val_volumes, test_volumes)
    shifted_volumes = shifted_set.load_shifted_volumes(colin.pixel_spacing_mm) if shifted else []
    for volume in shifted_volumes:
        geometry.validate(volume.images.shape[1:])
    output_dir = pathlib.Path(output_dir)
    with staged_output(output_dir, overwrite) as staging:
        scale = 1.0 / float(colin.images.max())
        ring_centre_mm = 0.5 * (colin.slice_z_mm.min() + colin.slice_z_mm.max())
        thickness_mm = float(np.median(np.diff(colin.slice_z_mm[colin.slab(0)])))
        files: dict[str, list[dict]] = {split: [] for split in SPLITS}
        for split, slabs in splits.items():
            for slab in slabs:
                positions = colin.slab(slab)
                if slices_per_volume is not None:
                    first = (len(positions) - slices_per_volume) // 2
                    positions = positions[first : first + slices_per_volume]
                kspace = simulate_slab(
                    colin.images[positions] * scale,
                    colin.slice_z_mm[positions] - ring_centre_mm,
                    geometry,
                    slab=slab,
                    seed=seed,
                    num_coils=num_coils,
                    noise=noise,
                )
                name = f"{FILE_PREFIX}{slab:02d}.h5"
                header = ismrmrd_header(geometry.matrix, geometry.fov_mm, thickness_mm, len(positions), num_coils)
                source_slices = [int(i) for i in colin.source_slice_index[positions]]
                write_fastmri_h5(
                    staging / split / name,
                    kspace,
                    header,
                    acquisition="AXT1",
                    patient_id=f"colin27-slab{slab:02d}",
                    extra_attrs={"source": "Colin27 T1 (mricron-data ch2better.nii.gz)", "seed": seed, "noise": noise},
                )
                files[split].append(
                    {
                        "path": str(output_dir / split / name),
                        "slab": slab,
                        "source_slices": source_slices,
                        "kspace_shape": list(kspace.shape),
                    }
                )

        if shifted:
            files[shifted_set.FOLDER] = write_shifted_set(
                staging, output_dir, shifted_volumes, geometry, seed, num_coils, shifted_noise, slices_per_volume
            )

        parameters = {
            "seed": seed,
            "num_coils": num_coils,
            "matrix": list(geometry.matrix),
            "fov_mm": list(geometry.fov_mm),
            "spacing_mm": list(geometry.spacing_mm),
            "fine_shape": list(geometry.fine_shape),
            "slices_per_volume": slices_per_volume,
            "noise": noise,
        }
        if shifted:
            parameters["shifted"] = {"noise": shifted_noise, "coil_array": shifted_set.COIL_ARRAY}
        atomic_write_text(
            staging / MANIFEST_NAME, json.dumps({"parameters": parameters, "files": files}, indent=2) + "\n"
        )
    return DemoSummary(output_dir, files, parameters, time.perf_counter() - start)


def write_shifted_set(
    staging: pathlib.Path,
    output_dir: pathlib.Path,
    volumes: list[shifted_set.ShiftedVolume],
    geometry: simulation.Geometry,
    seed: int,
    num_coils: int,
    noise: float,
    slices_per_volume: int | None,
) -> list[dict]:
    """Simulate the shifted volumes into ``staging/shifted/`` with the other coil array; return their records."""
    (staging / shifted_set.FOLDER).mkdir()
    records = []
    for index, volume in enumerate(volumes):
        positions = np.arange(len(volume.images))
        if slices_per_volume is not None and slices_per_volume < len(positions):
            first = (len(positions) - slices_per_volume) // 2
            positions = positions[first : first + slices_per_volume]
        kspace = simulate_slab(
            volume.images[positions],
            volume.slice_z_mm[positions],
            geometry,
            slab=shifted_set.STREAM_OFFSET + index,
            seed=seed,
            num_coils=num_coils,
            noise=noise,
            coil_array=shifted_set.COIL_ARRAY,
        )
        name = f"{volume.name}.h5"
        header = ismrmrd_header(geometry.matrix, geometry.fov_mm, volume.thickness_mm, len(positions), num_coils)
        write_fastmri_h5(
            staging / shifted_set.FOLDER / name,
            kspace,
            header,
            acquisition=volume.acquisition,
            patient_id=volume.name,
            extra_attrs={"source": volume.description, "seed": seed, "noise": noise},
        )
        records.append(
            {
                "path": str(output_dir / shifted_set.FOLDER / name),
                "volume": volume.name,
                "source_slices": [int(i) for i in positions],
                "kspace_shape": list(kspace.shape),
            }
        )
    return records
