"""The units table of README.md: what the papers' sigma and eps mean in DIRECT's units on a dataset.

    python scripts/units_table.py [--data data/demo] [--project projects/reproduce/modl.yaml]

Paths are taken relative to the repository, as `make reproduce` gives them to `direct train` (DIRECT seeds each
file's mask from its path, so the same relative path gives the study's masks).

For every slice of train/val/test, built with the project's validation transforms (masks, maps, DIRECT's
normalisation) at 4x and 8x: the papers' scale s_ref (max(|Re|, |Im|) of the fully sampled coil-combined image),
the networks' scale s_meas (the same of A^H y), and what sigma = 0.01 and eps = 0.02 are in DIRECT's units.
"""

import argparse
import os
import pathlib
import types

import numpy as np
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
MASKS = ((4, 0.08), (8, 0.04))


def slice_scales(data: pathlib.Path, transforms: dict, acceleration: int, center_fraction: float):
    """(s_ref, s_meas) per slice in DIRECT's normalised units."""
    import direct.config.defaults  # noqa: F401  (DIRECT's config modules import cleanly only through this one)
    from direct.data import transforms as T
    from direct.data.datasets import build_dataset_from_input
    from direct.data.datasets_config import FastMRIConfig
    from direct.train import build_transforms_from_environment
    from omegaconf import OmegaConf

    from smug_plugin.operators import MultiCoilOperator
    from smug_plugin.units import measured_intensity_scale, reference_intensity_scale

    masking = {"name": "FastMRIRandom", "accelerations": [acceleration], "center_fractions": [center_fraction]}
    transforms = {**transforms, "masking": masking, "delete_kspace": False}
    cfg = OmegaConf.merge(OmegaConf.structured(FastMRIConfig(name="FastMRI")), {"transforms": transforms})
    env = types.SimpleNamespace(engine=types.SimpleNamespace(forward_operator=T.fft2, backward_operator=T.ifft2))
    reference, measured = [], []
    for split in ("train", "val", "test"):
        build = build_transforms_from_environment(env, cfg)
        dataset = build_dataset_from_input(transforms=build, dataset_config=cfg, data_root=data / split)
        for sample in dataset:
            maps = sample["sensitivity_map"][None]
            # The engines' normalisation of the maps: sum_c |S_c|^2 = 1.
            maps = T.safe_divide(maps, T.root_sum_of_squares(maps, 1, -1).unsqueeze(1).unsqueeze(-1))
            operator = MultiCoilOperator(T.fft2, T.ifft2, maps, sample["sampling_mask"][None])
            reference.append(reference_intensity_scale(operator.coil_combine(sample["kspace"][None])).item())
            measured.append(measured_intensity_scale(operator.adjoint(sample["masked_kspace"][None])).item())
    return np.array(reference), np.array(measured)


def spread(values: np.ndarray, digits: int = 3) -> str:
    return f"{values.min():.{digits}f}-{values.max():.{digits}f} (median {np.median(values):.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=pathlib.Path, default=pathlib.Path("data/demo"))
    parser.add_argument("--project", type=pathlib.Path, default=pathlib.Path("projects/reproduce/modl.yaml"))
    args = parser.parse_args()
    os.chdir(ROOT)
    transforms = yaml.safe_load(args.project.read_text())["validation"]["datasets"][0]["transforms"]
    for acceleration, center_fraction in MASKS:
        s_ref, s_meas = slice_scales(args.data, transforms, acceleration, center_fraction)
        print(f"{acceleration}x, {len(s_ref)} slices of {args.data} ({args.project.name}'s transforms):")
        print(f"  s_ref  (papers' scale, fully sampled), DIRECT units: {spread(s_ref, 2)}")
        print(f"  s_meas (the networks' scale, A^H y), DIRECT units:   {spread(s_meas, 2)}")
        print(f"  s_meas / s_ref:                                      {spread(s_meas / s_ref, 2)}")
        print(f"  image peak in the networks' units (s_ref / s_meas):  {spread(s_ref / s_meas, 2)}")
        print(f"  sigma 0.01 in DIRECT units, as % of s_ref:           {spread(100 * 0.01 / s_ref, 2)} %")
        print(f"  sigma 0.01 in paper units (x s_meas), DIRECT units:  {spread(0.01 * s_meas)}")
        print(f"    ... as % of s_ref:                                 {spread(100 * 0.01 * s_meas / s_ref, 2)} %")
        print(f"  eps 0.02 in paper units (x s_ref), DIRECT units:     {spread(0.02 * s_ref)}")
        print(f"  eps 0.02 in DIRECT units, as % of s_ref:             {spread(100 * 0.02 / s_ref, 2)} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
