"""The papers' size, one preset for every benchmark (``--paper-size``): fastMRI knee slices of 320 x 320 with 15 coils
and the SMUG papers' networks, whose settings are the defaults of the plugin's model configs (8 unrolls, CG 10
iterations to tol 1e-6, DIDN 64 channels x 3 down-up blocks with 9 reconstruction convs, K = 10 draws)."""

import argparse
import dataclasses
import resource

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


# How torch and Python report an allocation refused by the address-space limit.
_OUT_OF_MEMORY = ("can't allocate memory", "MemoryError", "bad_alloc", "Cannot allocate memory")


def add_memory_limit_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        default=None,
        help="cap each measurement's address space (RLIMIT_AS, about 3 GB of it taken by the libraries): a run that "
        "needs more fails with a 'needs more than' row instead of waking the kernel's OOM killer on a shared machine",
    )


def limit_address_space(gigabytes: float | None) -> None:
    """Caps this process's address space (and its children's) at ``gigabytes``; ``None`` leaves it."""
    if gigabytes is not None:
        limit = int(gigabytes * 1024**3)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def memory_failure(message: str, gigabytes: float | None) -> str | None:
    """The row text of a measurement that ``message`` says ran out of the capped address space, else ``None``."""
    if gigabytes is None or not any(marker in message for marker in _OUT_OF_MEMORY):
        return None
    return f"needs more than {gigabytes:g} GB (address-space limit)"
