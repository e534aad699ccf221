"""RS-E2E as published: the clean A^H y in every data-consistency step, and training towards a frozen MoDL."""

import pytest
import torch
from conftest import multicoil_inputs
from direct.data.transforms import fft2, ifft2

from smug_plugin.models.rs_e2e import RSE2E
from smug_plugin.models.smug import SMUG
from smug_plugin.units import clamp_noisy, measured_intensity_scale

TINY = dict(num_steps=2, cg_iters=3, denoiser_hidden_channels=4, denoiser_num_dubs=1, denoiser_num_convs_recon=1)
SIGMA, DRAWS, SEED = 0.3, 2, 7


def rs_e2e(**overrides) -> RSE2E:
    torch.manual_seed(0)
    return RSE2E(fft2, ifft2, sigma=SIGMA, num_samples=DRAWS, noise_seed=SEED, **TINY, **overrides).eval()


@pytest.fixture
def inputs():
    generator, mask, sens = multicoil_inputs(batch=2, coils=2, size=(8, 8))
    return 3 * torch.randn(sens.shape, generator=generator) * mask, mask, sens


def by_hand(model: RSE2E, inputs, dc_input: str) -> torch.Tensor:
    """E_eta of N unrolls x_{n+1} = (A^H A + lambda I)^-1 (b + lambda D(x_n)) from x_0 = A^H y + eta (clamped with
    clamp_noisy_input), b = A^H y (clean) or x_0 (noisy), one draw at a time, with the model's denoiser and CG."""
    kspace, mask, sens = inputs
    operator = model.operator(mask, sens)
    adjoint = operator.adjoint(kspace)
    scale = measured_intensity_scale(adjoint)[:, None, None, None] if model.intensity_scale == "paper" else 1.0
    kspace, adjoint = kspace / (scale[..., None] if model.intensity_scale == "paper" else 1.0), adjoint / scale
    eta = SIGMA * torch.randn((DRAWS, *adjoint.shape), generator=torch.Generator().manual_seed(SEED))
    reconstructions = []
    for draw in range(DRAWS):
        x0 = adjoint + eta[draw]
        x0 = clamp_noisy(x0, adjoint) if model.clamp_noisy_input else x0
        x = x0
        for _ in range(TINY["num_steps"]):
            z = model.denoise(x)
            if dc_input == "noisy":  # b + lambda z = A^H y + lambda (z + (x_0 - A^H y) / lambda)
                z = z + (x0 - adjoint) / model.lambd
            x = model.dc.solve(operator, kspace, z, model.lambd)
        reconstructions.append(x)
    return scale * torch.stack(reconstructions).mean(0)


@pytest.mark.parametrize("units", [{}, {"intensity_scale": "paper", "clamp_noisy_input": True}])
@pytest.mark.parametrize("dc_input", ["clean", "noisy"])
def test_rs_e2e_is_the_hand_built_average_of_modl_on_noisy_inputs(inputs, dc_input, units):
    model = rs_e2e(rs_e2e_dc_input=dc_input, **units)
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs), by_hand(model, inputs, dc_input), rtol=1e-5, atol=1e-5)


def test_noisy_dc_input_is_the_default_and_differs_from_clean(inputs):
    with torch.no_grad():
        default, noisy, clean = (
            rs_e2e(**mode)(*inputs) for mode in ({}, {"rs_e2e_dc_input": "noisy"}, {"rs_e2e_dc_input": "clean"})
        )
    assert torch.equal(default, noisy)
    assert (clean - noisy).abs().max() > 1e-3


def test_dc_input_is_checked():
    with pytest.raises(ValueError, match="rs_e2e_dc_input must be one of clean, noisy"):
        rs_e2e(rs_e2e_dc_input="published")
    with pytest.raises(ValueError, match="rs_e2e_dc_input is a setting of smug.rs_e2e.RSE2E only"):
        SMUG(fft2, ifft2, rs_e2e_dc_input="clean", **TINY)
