"""The denoiser shared by every unroll: DIRECT's DIDN, and loading it from a pre-training checkpoint."""

import pathlib

import torch
from direct.nn.didn.didn import DIDN as DirectDIDN
from torch import nn

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


def load_denoiser_state(denoiser: nn.Module, checkpoint: str | pathlib.Path) -> None:
    """Initialise ``denoiser`` from a checkpoint written by ``direct train`` for any model of the family.

    DIRECT checkpoints are ``{"model": state_dict, ...}``; the denoiser's weights are the entries under
    ``denoiser.`` (a ``smug.didn.DIDN`` pre-training run, or a fine-tuned MoDL/SMUG run).

    Raises
    ------
    FileNotFoundError
        The checkpoint does not exist.
    ValueError
        The file holds no denoiser weights, or they do not fit this denoiser (other width or depth).
    """
    path = pathlib.Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"denoiser_checkpoint {str(path)!r} does not exist. Point `model.denoiser_checkpoint` at a "
            "`model_<iteration>.pt` written by `direct train` for smug.didn.DIDN (or set it to null)."
        )
    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("model", state) if isinstance(state, dict) else state
    weights = {k[len(DENOISER_PREFIX) :]: v for k, v in state.items() if k.startswith(DENOISER_PREFIX)}
    if not weights:
        raise ValueError(
            f"{str(path)!r} holds no denoiser weights (no key starts with {DENOISER_PREFIX!r}); "
            "expected a checkpoint of smug.didn.DIDN or of another smug.* model."
        )
    try:
        denoiser.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"The denoiser in {str(path)!r} does not fit this model's denoiser (check denoiser_hidden_channels, "
            f"denoiser_num_dubs and denoiser_num_convs_recon against the pre-training config): {error}"
        ) from error


def apply_denoiser(denoiser: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Applies a 2-channel image denoiser to DIRECT complex images ``(B, H, W, 2)``."""
    return denoiser(image.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
