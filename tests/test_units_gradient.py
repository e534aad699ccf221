"""The ``attack_gradient`` test-time setting: ``published`` is the gradient of the published code's CG backward."""

import pytest
import torch
from conftest import multicoil_inputs
from direct.data.transforms import fft2, ifft2

from smug_plugin.models.modl import MoDL
from smug_plugin.models.smug import SMUG
from smug_plugin.units import from_unit_scale, measured_intensity_scale, to_unit_scale

TINY = dict(num_steps=3, cg_iters=4, denoiser_hidden_channels=8, denoiser_num_dubs=1, denoiser_num_convs_recon=2)
SIGMA, SAMPLES, SEED = 0.05, 2, 11


def make(cls, units: str):
    torch.manual_seed(0)
    smoothing = {} if cls is MoDL else {"sigma": SIGMA, "num_samples": SAMPLES, "noise_seed": SEED}
    clamp = {"clamp_noisy_input": True} if cls is SMUG and units == "paper" else {}
    return cls(fft2, ifft2, **TINY, **smoothing, **clamp, intensity_scale=units).eval()


@pytest.fixture
def inputs():
    generator, mask, sens = multicoil_inputs()
    return 3 * torch.randn(sens.shape, generator=generator) * mask, mask, sens


def by_hand(model, live_kspace: torch.Tensor, mask, sens) -> torch.Tensor:
    """The reconstruction written out with the DC right-hand sides on a detached copy of the k-space: the live
    k-space enters only x_0 = A^H y (in the papers' units also divided by s, a constant as in the published code)."""
    operator = model.operator(mask, sens)
    adjoint = operator.adjoint(live_kspace)
    scale = measured_intensity_scale(adjoint).detach() if model.intensity_scale == "paper" else None
    fixed_kspace = to_unit_scale(live_kspace.detach().clone(), scale)
    x = to_unit_scale(adjoint, scale)
    generator = torch.Generator().manual_seed(SEED) if model.is_randomized else None
    for _ in range(model.num_steps):
        if model.is_randomized:
            noise = SIGMA * torch.randn((SAMPLES, *x.shape), generator=generator)
            noisy = x.unsqueeze(0) + noise
            # The bound of the published clamp: [-1, 1], widened to the iterate's own range (a constant).
            bound = x.detach().abs().amax(dim=(1, 2, 3)).clamp_min(1.0)[None, :, None, None, None]
            noisy = torch.clamp(noisy, -bound, bound) if model.clamp_noisy_input else noisy
            z = model.denoise(noisy.flatten(0, 1)).unflatten(0, (SAMPLES, -1)).mean(0)
        else:
            z = model.denoise(x)
        x = model.dc.solve(operator, fixed_kspace, z, model.lambd)
    return from_unit_scale(x, scale)


def kspace_gradient(forward, kspace: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    live = kspace.clone().requires_grad_(True)
    output = forward(live)
    (gradient,) = torch.autograd.grad(output.square().sum(), live)
    return output.detach(), gradient


@pytest.mark.parametrize("units", ["direct", "paper"])
@pytest.mark.parametrize("cls", [MoDL, SMUG])
def test_published_gradient_flows_through_the_first_denoiser_input_only(cls, units, inputs):
    kspace, mask, sens = inputs
    model = make(cls, units)
    full_output, full = kspace_gradient(lambda y: model(y, mask, sens), kspace)
    with model.test_time(attack_gradient="published"):
        output, published = kspace_gradient(lambda y: model(y, mask, sens), kspace)
    assert model.attack_gradient == "full"  # restored
    hand_output, hand = kspace_gradient(lambda y: by_hand(model, y, mask, sens), kspace)

    assert torch.equal(output, full_output)  # the setting changes the backward pass only
    torch.testing.assert_close(output, hand_output, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(published, hand, rtol=1e-5, atol=1e-6 * hand.abs().max().item())
    assert (published - full).abs().max() > 0.05 * full.abs().max()


def test_an_unknown_attack_gradient_is_rejected_with_the_choices():
    model = make(MoDL, "direct")
    with pytest.raises(ValueError, match="attack_gradient must be one of full, published, got 'exact'"):
        with model.test_time(attack_gradient="exact"):
            pytest.fail("the block must not run")
    assert model.attack_gradient == "full"
