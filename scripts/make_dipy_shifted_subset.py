"""Derive the bundled shifted-set asset ``smug_plugin/data/assets/dipy_shifted.npz`` from PyPI's dipy wheel.

Two real images of other subjects than the Colin27 demo brain, shipped as data files inside dipy (BSD-3-clause):

- ``dipy/data/files/S0_10slices.nii.gz``: 10 axial slices of a b0 (T2-weighted spin-echo EPI) diffusion volume,
  (128, 128, 10) uint16 voxels of 2 mm in plane: another subject, another contrast, another resolution;
- ``dipy/data/files/t1_coronal_slice.npy``: one coronal T1 slice, (256, 256) float64 in [0, 1] (multiples of 1/255):
  another subject and another orientation (anatomy shift).

Usage::

    python scripts/make_dipy_shifted_subset.py                  # pip download dipy==1.12.1 (no dependencies)
    python scripts/make_dipy_shifted_subset.py --source dipy-1.12.1-cp313-...whl --output /tmp/dipy_shifted.npz

Only numpy is needed (the NIfTI-1 reader of ``make_colin27_subset.py``).
"""

import argparse
import gzip
import hashlib
import io
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from make_colin27_subset import read_nifti1

DIPY_VERSION = "1.12.1"
EPI_MEMBER = "dipy/data/files/S0_10slices.nii.gz"
CORONAL_MEMBER = "dipy/data/files/t1_coronal_slice.npy"
DEFAULT_OUTPUT = pathlib.Path(__file__).resolve().parents[1] / "smug_plugin/data/assets/dipy_shifted.npz"
# The b0 volume has a noisy background (about 17 +- 10, EPI ghosts up to about 120) and no skull stripping: voxels
# at or below this value are set to zero, so the object is the head (the brain peaks at about 2300, the eyes at 4095).
EPI_BACKGROUND = 150
# t1_coronal_slice.npy: values are k / 255; voxels of the (already zero) background stay zero.
CORONAL_BACKGROUND = 0.02


def fetch_wheel(source: pathlib.Path | None, workdir: pathlib.Path) -> pathlib.Path:
    """The dipy wheel: ``source``, or ``pip download dipy==DIPY_VERSION --no-deps`` into ``workdir``."""
    if source is not None:
        return source
    command = [sys.executable, "-m", "pip", "download", "--no-deps", f"dipy=={DIPY_VERSION}", "-d", str(workdir)]
    subprocess.run(command, check=True)
    return next(workdir.glob("dipy-*.whl"))


def crop_box(mask: np.ndarray, margin: int = 2) -> tuple[slice, slice]:
    """Rows and columns of the bounding box of ``mask`` (any leading axes) plus ``margin`` pixels."""
    rows = np.flatnonzero(mask.any(axis=tuple(range(mask.ndim - 2)) + (mask.ndim - 1,)))
    cols = np.flatnonzero(mask.any(axis=tuple(range(mask.ndim - 1))))
    r0, r1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, mask.shape[-2])
    c0, c1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, mask.shape[-1])
    return slice(r0, r1), slice(c0, c1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=pathlib.Path, help="dipy wheel (default: pip download)")
    parser.add_argument("--output", type=pathlib.Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        wheel = fetch_wheel(args.source, pathlib.Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            epi_bytes, coronal_bytes = archive.read(EPI_MEMBER), archive.read(CORONAL_MEMBER)
        wheel_name = wheel.name

    volume, affine = read_nifti1(gzip.decompress(epi_bytes))
    if volume.dtype != np.uint16 or volume.shape != (128, 128, 10, 1):
        raise ValueError(f"Unexpected {EPI_MEMBER}: {volume.shape} {volume.dtype}.")
    # As for Colin27: volume[:, :, k] is (x, y) in RAS; rows = y flipped (anterior up), columns = x (left -> right).
    epi = np.ascontiguousarray(np.flip(volume[..., 0].transpose(2, 1, 0), axis=1))
    epi = np.where(epi > EPI_BACKGROUND, epi, 0).astype(np.uint16)
    rows, cols = crop_box(epi > 0)
    epi = epi[:, rows, cols]

    coronal = np.load(io.BytesIO(coronal_bytes), allow_pickle=False)
    coronal = np.round(coronal * 255).astype(np.uint8)  # exact: the file holds multiples of 1/255
    rows, cols = crop_box(coronal > CORONAL_BACKGROUND * 255)
    coronal = coronal[None, rows, cols]

    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.output,
        epi=epi,
        epi_spacing_mm=np.abs(np.diag(affine)[[1, 0]]).astype(np.float32),
        coronal=coronal,
        coronal_spacing_mm=np.array([1.0, 1.0], dtype=np.float32),
        source=np.array(f"{wheel_name}:/{EPI_MEMBER}, {wheel_name}:/{CORONAL_MEMBER}"),
        source_sha256=np.array(f"{hashlib.sha256(epi_bytes).hexdigest()}, {hashlib.sha256(coronal_bytes).hexdigest()}"),
        orientation=np.array(
            "epi: axial, rows anterior->posterior, columns patient left->right; coronal: as stored by dipy"
        ),
    )
    size = args.output.stat().st_size
    print(f"Wrote {args.output} ({size / 1e3:.0f} kB): epi {epi.shape} {epi.dtype}, coronal {coronal.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
