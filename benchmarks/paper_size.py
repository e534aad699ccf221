"""The papers' size, one preset for every benchmark (``--paper-size``): fastMRI knee slices of 320 x 320 with 15 coils
and the SMUG papers' networks, whose settings are the defaults of the plugin's model configs (8 unrolls, CG 10
iterations to tol 1e-6, DIDN 64 channels x 3 down-up blocks with 9 reconstruction convs, K = 10 draws)."""

import argparse
import dataclasses

from smug_plugin.models.config import SMUGConfig

IMAGE_SIZE = (320, 320)
COILS = 15
MODEL_SETTINGS = (
    "num_steps",
    "cg_iters",
    "cg_tol",
    "denoiser_hidden_channels",
    "denoiser_num_dubs",
    "denoiser_num_convs_recon",
    "num_samples",
)


def paper_model() -> dict:
    """The papers' network settings, by their names in the ``model:`` section."""
    paper = dataclasses.asdict(SMUGConfig())
    return {name: paper[name] for name in MODEL_SETTINGS}


def parse_with_preset(parser: argparse.ArgumentParser, preset: dict) -> argparse.Namespace:
    """Parse the command line; with ``--paper-size`` the ``preset`` (option values of the papers' size) replaces the
    defaults, so that an option given explicitly still wins (``--paper-size --repeats 1``)."""
    parser.add_argument(
        "--paper-size",
        action="store_true",
        help=f"the papers' size: {IMAGE_SIZE[0]} x {IMAGE_SIZE[1]}, {COILS} coils, the papers' networks",
    )
    args = parser.parse_args()
    if args.paper_size:
        parser.set_defaults(**preset)
        args = parser.parse_args()
    return args
