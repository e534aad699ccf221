"""Gradient checkpointing while an attack takes gradients in eval mode: the same outputs and input gradients."""

import pytest
import torch
from conftest import multicoil_inputs
from direct.data.transforms import fft2, ifft2

from smug_plugin.models.modl import MoDL
from smug_plugin.models.rs_e2e import RSE2E
from smug_plugin.models.smug import SMUG
from smug_plugin.models.weighted_smug import WeightedSMUG

TINY = dict(num_steps=3, cg_iters=4, denoiser_hidden_channels=8, denoiser_num_dubs=1, denoiser_num_convs_recon=2)


def make(cls, **overrides):
    torch.manual_seed(0)
    kwargs = {**TINY, **overrides}
    if cls is not MoDL:
        kwargs = {"sigma": 0.05, "num_samples": 3, "noise_seed": 7, **kwargs}
    return cls(fft2, ifft2, **kwargs).eval()


def output_and_input_gradient(model, kspace, mask, sens):
    kspace = kspace.clone().requires_grad_(True)
    output = model(kspace, mask, sens)
    output.square().sum().backward()
    return output.detach(), kspace.grad


@pytest.mark.parametrize("each_draw", [False, True], ids=["per-unroll", "per-draw"])
@pytest.mark.parametrize("cls", [MoDL, SMUG, RSE2E, WeightedSMUG])
def test_eval_mode_checkpointing_gives_the_same_outputs_and_input_gradients(cls, each_draw):
    generator, mask, sens = multicoil_inputs()
    kspace = torch.randn(sens.shape, generator=generator) * mask
    plain = make(cls)
    checkpointed = make(cls, gradient_checkpointing=True, checkpoint_each_draw=each_draw)
    calls = []
    forward = checkpointed.denoiser.forward

    def counted(image):  # forward hooks do not fire when checkpoint recomputes; the forward itself runs
        calls.append(image.shape[0])
        return forward(image)

    checkpointed.denoiser.forward = counted
    expected = output_and_input_gradient(plain, kspace, mask, sens)
    got = output_and_input_gradient(checkpointed, kspace, mask, sens)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-4, atol=1e-6)
    # The denoiser ran twice per unroll (forward, and recomputed in the backward pass): checkpointing was on.
    draws = 1 if cls is MoDL else 3  # RSE2E: its K noisy inputs in the batch, one chunk per draw
    calls_per_pass = draws if each_draw else 1
    assert len(calls) == 2 * calls_per_pass * TINY["num_steps"]


def test_weighted_smugs_encoder_is_recomputed_draw_by_draw_in_eval_mode_only():
    generator, mask, sens = multicoil_inputs()
    kspace = torch.randn(sens.shape, generator=generator) * mask
    model = make(WeightedSMUG, gradient_checkpointing=True, checkpoint_each_draw=True)
    calls = []
    forward = model.weight_encoder.forward

    def counted(image):
        calls.append(image.shape[0])
        return forward(image)

    model.weight_encoder.forward = counted
    output_and_input_gradient(model, kspace, mask, sens)
    batch = kspace.shape[0]
    assert calls == [batch] * (2 * 3 * TINY["num_steps"])  # one draw per call, forward and recomputation, 3 draws
    calls.clear()
    model.train()  # batch norm: statistics over the K-draw batch, never recomputed
    output_and_input_gradient(model, kspace, mask, sens)
    assert calls == [3 * batch] * TINY["num_steps"]


def test_no_checkpointing_without_gradients():
    generator, mask, sens = multicoil_inputs()
    kspace = torch.randn(sens.shape, generator=generator) * mask
    model = make(SMUG, gradient_checkpointing=True, checkpoint_each_draw=True)
    calls = []
    forward = model.denoiser.forward
    model.denoiser.forward = lambda image: calls.append(image.shape[0]) or forward(image)
    with torch.no_grad():
        model(kspace, mask, sens)
    assert calls == [6] * TINY["num_steps"]  # one call of the K = 3 draws x 2 slices per unroll
