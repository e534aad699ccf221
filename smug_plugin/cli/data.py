"""``smug data demo``: simulate the bundled Colin27 demo dataset in fastMRI multicoil h5 format."""

import argparse
import pathlib
import sys
import time

# Mirrors the defaults of smug_plugin.data.demo.make_demo_dataset, which is imported only when the command runs.
DEFAULTS = {"seed": 0, "coils": 8, "matrix": (96, 80), "fov": (192.0, 160.0), "noise": 0.02, "shifted_noise": 0.03}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``smug data`` and its ``demo`` sub-command.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The sub-command registry of the ``smug`` parser.

    Returns
    -------
    argparse.ArgumentParser
        The ``data`` parser.
    """
    data = subparsers.add_parser("data", help="Prepare datasets.", description="Prepare datasets.")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    demo = data_sub.add_parser(
        "demo",
        help="Simulate multi-coil k-space of the bundled Colin27 T1 brain (fastMRI h5).",
        description=(
            "Simulate Cartesian multi-coil acquisitions of the bundled Colin27 T1 brain slabs and write them as "
            "fastMRI multicoil h5 files into OUTPUT_DIR/{train,val,test}/, readable by DIRECT's FastMRI dataset. "
            "The phase-encoding direction is the last k-space axis (W). With --shifted, also OUTPUT_DIR/shifted/: "
            "other subjects (dipy's b0 EPI slices and coronal T1 slice) with another coil array and noise level, "
            "for distribution-shift studies (all volume counts 0 writes only that folder)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--output-dir", type=pathlib.Path, required=True, help="root folder of the dataset")
    demo.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of phase, coils and noise")
    demo.add_argument("--coils", type=int, default=DEFAULTS["coils"], help="number of receive coils")
    demo.add_argument(
        "--matrix", type=int, nargs=2, metavar=("H", "W"), default=DEFAULTS["matrix"], help="k-space matrix"
    )
    demo.add_argument(
        "--fov", type=float, nargs=2, metavar=("H_MM", "W_MM"), default=DEFAULTS["fov"], help="field of view in mm"
    )
    demo.add_argument("--train-volumes", type=int, default=6, help="volumes (slabs) in train/")
    demo.add_argument("--val-volumes", type=int, default=2, help="volumes (slabs) in val/")
    demo.add_argument("--test-volumes", type=int, default=2, help="volumes (slabs) in test/")
    demo.add_argument("--slices-per-volume", type=int, default=None, help="central slices kept per slab (all: 6)")
    demo.add_argument(
        "--noise",
        type=float,
        default=DEFAULTS["noise"],
        help="complex noise std per k-space sample relative to the maximum image intensity",
    )
    demo.add_argument("--shifted", action="store_true", help="also write the shifted test set to OUTPUT_DIR/shifted/")
    demo.add_argument(
        "--shifted-noise",
        type=float,
        default=DEFAULTS["shifted_noise"],
        help="noise of the shifted set, in the units of --noise",
    )
    demo.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run in OUTPUT_DIR once the new data are complete"
    )
    demo.set_defaults(func=run)
    return data


def run(args: argparse.Namespace) -> int:
    """Run ``smug data demo``; return 0 on success, 2 on bad input (with the problem and the fix on stderr)."""
    from smug_plugin.data.demo import make_demo_dataset

    start = time.perf_counter()
    try:
        summary = make_demo_dataset(
            args.output_dir,
            seed=args.seed,
            num_coils=args.coils,
            matrix=tuple(args.matrix),
            fov_mm=tuple(args.fov),
            train_volumes=args.train_volumes,
            val_volumes=args.val_volumes,
            test_volumes=args.test_volumes,
            slices_per_volume=args.slices_per_volume,
            noise=args.noise,
            shifted=args.shifted,
            shifted_noise=args.shifted_noise,
            overwrite=args.overwrite,
        )
    except (ValueError, OSError) as exc:  # the library's messages name the path or option and the fix
        print(f"smug data demo: error: {exc}", file=sys.stderr)
        return 2

    params = summary.parameters
    print(
        f"Simulated {params['num_coils']}-coil Cartesian k-space, matrix {params['matrix'][0]} x {params['matrix'][1]}"
        f" (FOV {params['fov_mm'][0]:g} x {params['fov_mm'][1]:g} mm, {params['spacing_mm'][0]:g} x "
        f"{params['spacing_mm'][1]:g} mm voxels) from a {params['fine_shape'][0]} x {params['fine_shape'][1]} "
        f"0.5 mm grid, noise {params['noise']:g}, seed {params['seed']}."
    )
    if "shifted" in params:
        print(f"Shifted set: another coil array, noise {params['shifted']['noise']:g}.")
    for split, records in summary.files.items():
        slices = sum(r["kspace_shape"][0] for r in records)
        print(f"{split}: {len(records)} volume(s), {slices} slice(s) in {summary.output_dir / split}")
        for record in records:
            shape = " x ".join(str(n) for n in record["kspace_shape"])
            origin = f"slab {record['slab']}" if "slab" in record else record["volume"]
            print(f"  {pathlib.Path(record['path']).name}  kspace {shape} ({origin})")
    print(f"Manifest: {summary.output_dir / 'demo_manifest.json'}")
    print(f"Done in {time.perf_counter() - start:.1f} s.")
    return 0
