"""The papers' units in the networks (``intensity_scale: paper``), the clamp of noisy inputs, and the scale s."""

import pytest
import torch
from conftest import multicoil_inputs
from direct.data.transforms import fft2, ifft2

from smug_plugin.models.didn import DIDN
from smug_plugin.models.modl import MoDL
from smug_plugin.models.rs_e2e import RSE2E
from smug_plugin.models.smug import SMUG, SMUGv0
from smug_plugin.models.weighted_smug import WeightedSMUG
from smug_plugin.units import (
    intensity_scale,
    measured_intensity_scale,
    reference_intensity_scale,
    to_unit_scale,
)

TINY = dict(num_steps=2, cg_iters=4, denoiser_hidden_channels=8, denoiser_num_dubs=1, denoiser_num_convs_recon=2)
SMOOTHED = [SMUG, SMUGv0, WeightedSMUG, RSE2E]
FAMILY = [MoDL, *SMOOTHED]


def make(cls, **overrides):
    torch.manual_seed(0)
    kwargs = {**TINY, **overrides}
    if cls is not MoDL:
        kwargs = {"sigma": 0.05, "num_samples": 2, **kwargs}
    return cls(fft2, ifft2, **kwargs).eval()


@pytest.fixture
def inputs():
    """Two slices in DIRECT-like units: images of maximum about 5, as on the demo data."""
    generator, mask, sens = multicoil_inputs()
    mask[..., 5:7, :] = 1.0  # the centre, as every fastMRI mask
    return 5 * torch.randn(sens.shape, generator=generator) * mask, mask, sens


def test_the_scale_is_the_largest_real_or_imaginary_value_of_each_slice():
    image = torch.zeros(3, 4, 5, 2)
    image[0, 1, 2] = torch.tensor([3.0, -0.5])
    image[0, 3, 4] = torch.tensor([-1.0, -5.0])  # |Im| = 5 is the largest of slice 0
    image[1, 0, 0] = torch.tensor([0.25, 0.125])
    # slice 2 is all zero: s = 1, so that dividing by s stays defined
    expected = torch.tensor([5.0, 0.25, 1.0])
    assert torch.equal(intensity_scale(image), expected)
    assert torch.equal(intensity_scale(torch.view_as_complex(image)), expected)  # complex dtype alike
    assert torch.equal(measured_intensity_scale(image), expected)
    assert torch.equal(reference_intensity_scale(image), expected)
    assert torch.equal(to_unit_scale(image, expected)[0, 3, 4], torch.tensor([-0.2, -1.0]))
    assert to_unit_scale(image, None) is image


@pytest.mark.parametrize("cls", FAMILY)
def test_paper_units_run_the_network_on_y_over_s_and_scale_back(cls, inputs):
    kspace, mask, sens = inputs
    paper, direct = make(cls, intensity_scale="paper"), make(cls)
    s = measured_intensity_scale(paper.operator(mask, sens).adjoint(kspace))
    assert (s > 2).all()  # DIRECT-like data: the test would not see a missing division otherwise
    expected = s[:, None, None, None] * direct(kspace / s[:, None, None, None, None], mask, sens)
    torch.testing.assert_close(paper(kspace, mask, sens), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", FAMILY)
def test_a_slice_scaled_by_c_gives_its_reconstruction_scaled_by_c(cls, inputs):
    # c = 4 is a power of two: A^H (c y), s and y / s are exact multiples, so the unrolls see bit-identical inputs and
    # the equality is exact. The other slice of the batch is untouched.
    kspace, mask, sens = inputs
    clamp = {} if cls is MoDL else {"clamp_noisy_input": True}
    model = make(cls, intensity_scale="paper", **clamp)
    scaled = kspace.clone()
    scaled[0] *= 4.0
    reference, output = model(kspace, mask, sens), model(scaled, mask, sens)
    assert torch.equal(output[0], 4.0 * reference[0])
    assert torch.equal(output[1], reference[1])
    # DIRECT's units are not scale-equivariant: the option is what makes it so.
    direct = make(cls)
    assert not torch.allclose(direct(scaled, mask, sens)[0], 4.0 * direct(kspace, mask, sens)[0], rtol=1e-3)


# The clamp exists in the papers' units only (rejected in DIRECT's, tested below).
@pytest.mark.parametrize(("units", "clamp"), [("direct", False), ("paper", False), ("paper", True)])
@pytest.mark.parametrize("cls", SMOOTHED)
def test_sigma_zero_is_exactly_modl_in_both_units(cls, units, clamp, inputs):
    modl = make(MoDL, intensity_scale=units)
    # sigma 0 adds no noise, so there is no noisy input to clamp.
    smoothed = make(cls, sigma=0.0, num_samples=3, intensity_scale=units, clamp_noisy_input=clamp)
    smoothed.load_state_dict({**smoothed.state_dict(), **modl.state_dict()})
    assert torch.equal(modl(*inputs), smoothed(*inputs))


def test_modl_never_clamps():
    with pytest.raises(ValueError, match="MoDL adds no noise, and never clamps"):
        MoDL(fft2, ifft2, **TINY, intensity_scale="paper", clamp_noisy_input=True)
    from smug_plugin.models.config import MoDLConfig, SMUGConfig

    # DIRECT merges the YAML into these dataclasses and rejects unknown keys: a MoDL YAML cannot ask for a clamp.
    assert "clamp_noisy_input" not in MoDLConfig.__dataclass_fields__
    assert "clamp_noisy_input" in SMUGConfig.__dataclass_fields__


@pytest.mark.parametrize("build", [lambda: make(SMUG, clamp_noisy_input=True), lambda: DIDN(clamp_noisy_input=True)])
def test_the_clamp_is_rejected_in_directs_units(build):
    with pytest.raises(ValueError, match="clamp_noisy_input: true needs intensity_scale: paper"):
        build()


def test_an_unknown_unit_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="intensity_scale must be one of direct, paper, got 'papers'"):
        make(MoDL, intensity_scale="papers")


@pytest.mark.parametrize("cls", SMOOTHED)
def test_the_clamp_bounds_every_noisy_denoiser_input(cls, inputs):
    def excess_over_bound(model) -> float:
        """Largest amount by which a noisy denoiser input leaves [-b, b], b = max(1, its noise-free input's max)."""
        excess = []
        original = model._noisy

        def recorded(image, noise):
            noisy = original(image, noise)
            bound = image.abs().amax(dim=(-3, -2, -1), keepdim=True).clamp_min(1.0)
            excess.append(float((noisy.abs() - bound).max()))
            return noisy

        model._noisy = recorded
        with torch.no_grad():
            model(*inputs)
        return max(excess)

    overrides = {"sigma": 0.5, "intensity_scale": "paper"}  # the noise takes inputs well outside [-1, 1]
    assert excess_over_bound(make(cls, **overrides)) > 0.2
    assert excess_over_bound(make(cls, clamp_noisy_input=True, **overrides)) <= 1e-6


def test_rs_e2e_uses_its_clamped_noisy_input_in_the_data_consistency_too(inputs):
    kspace, mask, sens = inputs
    sigma, seed = 0.5, 3
    model = make(
        RSE2E, num_steps=1, num_samples=1, sigma=sigma, noise_seed=seed, intensity_scale="paper", clamp_noisy_input=True
    )
    with torch.no_grad():
        operator = model.operator(mask, sens)
        adjoint = operator.adjoint(kspace)
        s = measured_intensity_scale(adjoint)
        y, adjoint = to_unit_scale(kspace, s), to_unit_scale(adjoint, s)
        eta = sigma * torch.randn((1, *adjoint.shape), generator=torch.Generator().manual_seed(seed))[0]
        noisy = (adjoint + eta).clamp(-1, 1)
        z = model.denoise(noisy)
        # (A^H A + lambda I) x = noisy + lambda z = A^H y + lambda (z + (noisy - A^H y) / lambda)
        expected = model.dc.solve(operator, y, z + (noisy - adjoint) / model.lambd, model.lambd)
        torch.testing.assert_close(model(kspace, mask, sens), s[:, None, None, None] * expected, rtol=1e-5, atol=1e-6)


def test_pretraining_noise_is_clamped_only_when_asked():
    target = torch.full((1, 8, 6, 2), 0.99)
    clamped = DIDN(sigma=0.5, intensity_scale="paper", clamp_noisy_input=True).eval()
    free = DIDN(sigma=0.5, intensity_scale="paper").eval()
    assert clamped.add_noise(target).abs().max() == 1.0
    assert free.add_noise(target).abs().max() > 1.2
    assert torch.equal(free.target_scale(target), torch.tensor([0.99]))
    assert DIDN().target_scale(target) is None
