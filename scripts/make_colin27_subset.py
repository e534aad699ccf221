"""Derive the bundled Colin27 T1 asset ``smug_plugin/data/assets/colin27_t1_slabs.npz`` from Debian's mricron-data.

The source is ``/usr/share/mricron/templates/ch2better.nii.gz`` of the Debian package ``mricron-data``
(BSD-3-clause): the skull-stripped Colin27 T1 brain, (301, 370, 316) uint8 voxels of 0.5 mm in RAS orientation.
The script keeps a few axial slabs ("volumes") of slices at the native 0.5 mm in-plane resolution, so the demo
simulation can acquire k-space on a grid four times finer than the reconstruction grid (no inverse crime).

Usage::

    python scripts/make_colin27_subset.py                       # downloads the .deb with ``apt-get download``
    python scripts/make_colin27_subset.py --source mricron-data_1.2.20211006+dfsg-4_all.deb
    python scripts/make_colin27_subset.py --source ch2better.nii.gz --output /tmp/colin27_t1_slabs.npz

Only numpy is needed: the NIfTI-1 header is parsed here (no nibabel).
"""

import argparse
import gzip
import hashlib
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

NIFTI_MEMBER = "usr/share/mricron/templates/ch2better.nii.gz"
DEFAULT_OUTPUT = pathlib.Path(__file__).resolve().parents[1] / "smug_plugin/data/assets/colin27_t1_slabs.npz"
# NIfTI-1 datatype codes -> numpy dtypes (the subset that occurs in anatomical templates).
NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2"}


def read_nifti1(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parse an uncompressed single-file NIfTI-1 image.

    Parameters
    ----------
    raw : bytes
        Contents of a ``.nii`` file (already gunzipped).

    Returns
    -------
    volume : np.ndarray
        The data indexed ``[i, j, k]`` (NIfTI's voxel axes), with the scaling slope/intercept applied only when
        it is not the identity (so uint8 stays uint8).
    affine : np.ndarray
        The 4 x 4 voxel-to-world (RAS, mm) matrix from the sform.
    """
    endian = "<" if int.from_bytes(raw[:4], "little") == 348 else ">"
    if int.from_bytes(raw[:4], "little" if endian == "<" else "big") != 348 or raw[344:347] != b"n+1":
        raise ValueError("Not a single-file NIfTI-1 image (bad sizeof_hdr or magic).")

    def field(offset: int, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(raw, dtype=endian + dtype, count=count, offset=offset)

    dim = field(40, "i2", 8)
    shape = tuple(int(d) for d in dim[1 : 1 + dim[0]])
    datatype = int(field(70, "i2", 1)[0])
    if datatype not in NIFTI_DTYPES:
        raise ValueError(f"Unsupported NIfTI datatype code {datatype}.")
    vox_offset = int(field(108, "f4", 1)[0])
    slope, inter = (float(v) for v in field(112, "f4", 2))
    sform_code = int(field(254, "i2", 1)[0])
    if sform_code <= 0:
        raise ValueError("The image has no sform; this script relies on it for the orientation.")
    affine = np.eye(4)
    affine[:3] = field(280, "f4", 12).reshape(3, 4)

    # NIfTI stores voxels with the first axis fastest (Fortran order).
    count = int(np.prod(shape))
    volume = np.frombuffer(raw, dtype=endian + NIFTI_DTYPES[datatype], count=count, offset=vox_offset)
    volume = volume.reshape(shape, order="F")
    if slope not in (0.0, 1.0) or inter != 0.0:
        volume = volume * slope + inter
    return volume, affine


def fetch_nifti(source: pathlib.Path | None, workdir: pathlib.Path) -> tuple[bytes, str]:
    """Return the gzipped ch2better NIfTI bytes and a description of where they came from.

    ``source`` may be the ``.nii.gz`` itself, the ``.deb``, or None (then ``apt-get download mricron-data``).
    """
    if source is not None and source.name.endswith(".nii.gz"):
        return source.read_bytes(), source.name
    if source is None:
        subprocess.run(["apt-get", "download", "mricron-data"], cwd=workdir, check=True)
        source = next(workdir.glob("mricron-data_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(source), str(workdir / "x")], check=True)
    return (workdir / "x" / NIFTI_MEMBER).read_bytes(), f"{source.name}:/{NIFTI_MEMBER}"


def select_slabs(
    volume: np.ndarray, num_slabs: int, slices_per_slab: int, slice_step: int, min_area_fraction: float
) -> np.ndarray:
    """Pick ``num_slabs`` slabs of axial slices spread over the brain, skipping near-empty slices.

    Returns
    -------
    np.ndarray
        (num_slabs, slices_per_slab) source slice indices along the NIfTI k (inferior -> superior) axis.
    """
    area = (volume > 0).sum(axis=(0, 1))
    # Slices with little brain (top of the skull, lowest cerebellum) carry little to learn from.
    usable = np.flatnonzero(area >= min_area_fraction * area.max())
    span = (slices_per_slab - 1) * slice_step
    starts = np.round(np.linspace(usable[0], usable[-1] - span, num_slabs)).astype(int)
    return starts[:, None] + slice_step * np.arange(slices_per_slab)[None, :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=pathlib.Path, help="mricron-data .deb or ch2better.nii.gz (default: download)")
    parser.add_argument("--output", type=pathlib.Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--num-slabs", type=int, default=10)
    parser.add_argument("--slices-per-slab", type=int, default=6)
    parser.add_argument("--slice-step", type=int, default=4, help="source slices (0.5 mm) between kept slices")
    parser.add_argument("--min-area-fraction", type=float, default=0.3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        compressed, origin = fetch_nifti(args.source, pathlib.Path(tmp))
    volume, affine = read_nifti1(gzip.decompress(compressed))
    if volume.dtype != np.uint8:
        raise ValueError(f"Expected uint8 voxels, got {volume.dtype}.")
    # The sform must be diagonal and positive (RAS+): then i = left->right, j = posterior->anterior, k = up.
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))) or (np.diag(affine)[:3] <= 0).any():
        raise ValueError(f"Unexpected orientation, sform:\n{affine}")

    slab_slices = select_slabs(volume, args.num_slabs, args.slices_per_slab, args.slice_step, args.min_area_fraction)
    source_index = slab_slices.ravel()
    # volume[:, :, k] is (x, y); transpose to rows = y and flip so row 0 is anterior: a brain seen from above,
    # anterior up, patient's left on the viewer's left.
    images = np.ascontiguousarray(np.flip(volume[:, :, source_index].transpose(2, 1, 0), axis=1))

    # Drop the all-zero border shared by every kept slice (skull-stripped data): smaller file, same content.
    rows = np.flatnonzero(images.any(axis=(0, 2)))
    cols = np.flatnonzero(images.any(axis=(0, 1)))
    margin = 2
    r0, r1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, images.shape[1])
    c0, c1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, images.shape[2])
    images = images[:, r0:r1, c0:c1]

    voxel_mm = np.abs(np.diag(affine)[:3])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.output,
        images=images,
        slab_index=np.repeat(np.arange(args.num_slabs), args.slices_per_slab).astype(np.int16),
        source_slice_index=source_index.astype(np.int16),
        slice_z_mm=(affine[2, 2] * source_index + affine[2, 3]).astype(np.float32),
        pixel_spacing_mm=voxel_mm[[1, 0]].astype(np.float32),
        crop_box=np.array([r0, r1, c0, c1], dtype=np.int16),
        source=np.array(origin),
        source_sha256=np.array(hashlib.sha256(compressed).hexdigest()),
        orientation=np.array("axial; rows: anterior->posterior; columns: patient left->right (viewed from above)"),
    )
    size = args.output.stat().st_size
    print(f"Wrote {args.output} ({size / 1e6:.2f} MB): images {images.shape} {images.dtype}, slabs (first slices) ")
    print("  " + ", ".join(str(s) for s in slab_slices[:, 0]) + f"; step {args.slice_step}, source {origin}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
