"""The denoiser shared by every unroll: DIRECT's DIDN, and loading it from a pre-training checkpoint."""

import pathlib

import torch
from direct.nn.didn.didn import DIDN as DirectDIDN
from torch import nn

from smug_plugin.models.checkpoint import checkpoint_fix, read_model_state, state_mismatch

# Every model of the family keeps its denoiser under this attribute, so checkpoints map one-to-one.
DENOISER_PREFIX = "denoiser."


def build_denoiser(hidden_channels: int = 64, num_dubs: int = 3, num_convs_recon: int = 9) -> nn.Module:
    """DIDN on 2-channel (real, imaginary) images with a global residual, the papers' denoiser.

    Parameters
    ----------
    hidden_channels : int
        Channels of the first DIDN level (papers: 64).
    num_dubs : int
        Number of down-up blocks (journal: 3, conference: 2).
    num_convs_recon : int
        Convolutions of each reconstruction block.

    Returns
    -------
    nn.Module
        ``DIDN(in_channels=2, out_channels=2, skip_connection=True)``.
    """
    for name, value in (("hidden_channels", hidden_channels), ("num_dubs", num_dubs)):
        if int(value) < 1:
            raise ValueError(f"denoiser_{name} must be a positive integer, got {value}.")
    return DirectDIDN(
        in_channels=2,
        out_channels=2,
        hidden_channels=hidden_channels,
        num_dubs=num_dubs,
        num_convs_recon=num_convs_recon,
        skip_connection=True,
    )


def load_denoiser_state(
    denoiser: nn.Module, checkpoint: str | pathlib.Path, setting: str = "denoiser_checkpoint"
) -> None:
    """Initialise ``denoiser`` from a checkpoint written by ``direct train`` for any model of the family.

    DIRECT checkpoints are ``{"model": state_dict, ...}``; the denoiser's weights are the entries under
    ``denoiser.`` (a ``smug.didn.DIDN`` pre-training run, or a fine-tuned MoDL/SMUG run).

    Parameters
    ----------
    denoiser : nn.Module
        The denoiser to initialise (see :func:`build_denoiser`).
    checkpoint : str or pathlib.Path
        The ``model_<iteration>.pt`` to read.
    setting : str
        The ``model:`` key that named the file (``denoiser_checkpoint``, ``ustab_frozen_denoiser_checkpoint``).

    Raises
    ------
    FileNotFoundError
        The checkpoint does not exist.
    ValueError
        The file is unreadable or refused (see :func:`read_model_state`), holds no denoiser weights, or they do
        not fit this denoiser (other width or depth).
    """
    state = read_model_state(checkpoint, setting)
    where = f"model.{setting} {str(checkpoint)!r}"
    weights = {k.removeprefix(DENOISER_PREFIX): v for k, v in state.items() if k.startswith(DENOISER_PREFIX)}
    if not weights:
        raise ValueError(
            f"{where} holds no denoiser weights (no key starts with {DENOISER_PREFIX!r}): {checkpoint_fix(setting)}."
        )
    mismatch = state_mismatch(denoiser.state_dict(), weights)
    if mismatch:
        raise ValueError(
            f"The denoiser in {where} does not fit this model's denoiser ({mismatch}): check "
            "denoiser_hidden_channels, denoiser_num_dubs and denoiser_num_convs_recon against the pre-training "
            f"config; or {checkpoint_fix(setting)}."
        )
    denoiser.load_state_dict(weights, strict=True)


def apply_denoiser(denoiser: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Applies a 2-channel image denoiser to DIRECT complex images ``(B, H, W, 2)``."""
    return denoiser(image.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
