"""The denoiser shared by every unroll: DIRECT's DIDN, and loading it from a pre-training checkpoint.

DIRECT's DIDN runs with torch's own convolutions in place of DIRECT's ``ModConv2d`` (which, without modulation, is
``nn.Conv2d`` with the bias added as a separate operator) and in the channels-last memory layout: 0.96 x DIRECT's
time per forward + backward of the denoiser on 1 and 2 CPU threads, where neither change alone wins
(``benchmarks/results/denoiser_variants_cpu.txt``; computing the 1 x 1 convolutions as matrix products was measured
too and did not win consistently, so it is not used). The parameters are DIRECT's own tensors under DIRECT's names
and shapes, so checkpoints load both ways; only the rounding of the sums may differ.
"""

import pathlib

import torch
from direct.nn.conv.modulated import ModConv2d, ModConvType
from direct.nn.didn.didn import DIDN as DirectDIDN
from torch import nn

from smug_plugin.models.checkpoint import checkpoint_fix, read_model_state, state_mismatch

# Every model of the family keeps its denoiser under this attribute, so checkpoints map one-to-one.
DENOISER_PREFIX = "denoiser."


def build_denoiser(
    hidden_channels: int = 64, num_dubs: int = 3, num_convs_recon: int = 9, compiled: bool = False
) -> nn.Module:
    """DIDN on 2-channel (real, imaginary) images with a global residual, the papers' denoiser.

    Parameters
    ----------
    hidden_channels : int
        Channels of the first DIDN level (papers: 64).
    num_dubs : int
        Number of down-up blocks (journal: 3, conference: 2).
    num_convs_recon : int
        Convolutions of each reconstruction block.
    compiled : bool
        ``torch.compile`` the denoiser's forward (``nn.Module.compile``: parameters and state dict unchanged). On CPU
        a compiled training step of the denoiser took about 20 % less time than the eager one, after a first step
        that compiles (tens of seconds; needs a C++ compiler).

    Returns
    -------
    nn.Module
        ``DIDN(in_channels=2, out_channels=2, skip_connection=True)``, channels-last, with torch's convolutions.
    """
    for name, value in (("hidden_channels", hidden_channels), ("num_dubs", num_dubs)):
        if int(value) < 1:
            raise ValueError(f"denoiser_{name} must be a positive integer, got {value}.")
    didn = DirectDIDN(
        in_channels=2,
        out_channels=2,
        hidden_channels=hidden_channels,
        num_dubs=num_dubs,
        num_convs_recon=num_convs_recon,
        skip_connection=True,
    )
    _use_torch_convolutions(didn)
    didn = didn.to(memory_format=torch.channels_last)
    if compiled:
        didn.compile()
    return didn


def _use_torch_convolutions(module: nn.Module) -> None:
    """Replaces every unmodulated ``ModConv2d`` below ``module`` by the ``nn.Conv2d`` it equals, holding the same
    parameters (names, shapes, tensors; the optimiser's order as well)."""
    for name, child in module.named_children():
        if not isinstance(child, ModConv2d):
            _use_torch_convolutions(child)
            continue
        if child.modulation != ModConvType.NONE or not isinstance(child.bias, nn.Parameter):
            continue
        layer = nn.Conv2d(
            child.in_channels,
            child.out_channels,
            child.kernel_size,
            stride=child.stride,
            padding=child.padding,
            dilation=child.dilation,
            device="meta",  # no initialisation: DIRECT's parameters are taken over
        )
        layer.weight, layer.bias = child.weight, child.bias
        setattr(module, name, layer)


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
    """Applies a 2-channel image denoiser to DIRECT complex images ``(B, H, W, 2)``.

    The permuted view of a contiguous ``(B, H, W, 2)`` tensor is channels-last, the denoiser's layout: no copy either
    way.
    """
    return denoiser(image.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
