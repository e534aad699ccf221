"""The papers' size, one preset for every benchmark (``--paper-size``): fastMRI knee slices of 320 x 320 with 15 coils
and the SMUG papers' networks, whose settings are the defaults of the plugin's model configs (8 unrolls, CG 10
iterations to tol 1e-6, DIDN 64 channels x 3 down-up blocks with 9 reconstruction convs, K = 10 draws)."""

import argparse

from smug_plugin.models.config import SMUGConfig

IMAGE_SIZE = (320, 320)
COILS = 15


def paper_settings() -> dict:
    """The benchmarks' option values (argparse destinations) of the papers' size."""
    paper = SMUGConfig()
    return {
        "size": IMAGE_SIZE,
        "coils": COILS,
        "steps": paper.num_steps,
        "cg_iters": paper.cg_iters,
        "cg_tol": paper.cg_tol,
        "denoiser_channels": paper.denoiser_hidden_channels,
        "denoiser_dubs": paper.denoiser_num_dubs,
        "denoiser_convs_recon": paper.denoiser_num_convs_recon,
        "num_samples": paper.num_samples,
    }


def parse_with_preset(parser: argparse.ArgumentParser, extra: dict | None = None) -> argparse.Namespace:
    """Parse the command line; with ``--paper-size`` the preset (and ``extra``) replace the defaults, so that an
    option given explicitly still wins (``--paper-size --steps 2``)."""
    parser.add_argument(
        "--paper-size",
        action="store_true",
        help=f"the papers' size: {IMAGE_SIZE[0]} x {IMAGE_SIZE[1]}, {COILS} coils, the papers' networks",
    )
    args = parser.parse_args()
    if args.paper_size:
        parser.set_defaults(**paper_settings(), **(extra or {}))
        args = parser.parse_args()
    return args
