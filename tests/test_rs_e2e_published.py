"""RS-E2E as published: the clean A^H y in every data-consistency step, and training towards a frozen MoDL."""

import pytest
import torch
from conftest import multicoil_inputs
from direct.data.transforms import fft2, ifft2, modulus
from test_complex_mse_loss import TINY as ENGINE_TINY
from test_complex_mse_loss import batch, engine

from smug_plugin.losses.smoothing import complex_target_image
from smug_plugin.models.didn import DIDN
from smug_plugin.models.modl import MoDL
from smug_plugin.models.rs_e2e import RSE2E
from smug_plugin.models.smug import SMUG
from smug_plugin.models.weighted_smug import WeightedSMUG
from smug_plugin.operators import MultiCoilOperator
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


def save_modl(path, **overrides) -> MoDL:
    """A MoDL with the engine tests' sizes (and random weights), saved as `direct train` does."""
    torch.manual_seed(1)
    modl = MoDL(fft2, ifft2, **ENGINE_TINY, **overrides)
    torch.save({"model": modl.state_dict(), "iteration": 3}, path)
    return modl.eval()


def teacher_engine(path, **overrides):
    checkpoint = None if path is None else str(path)
    settings = dict(rs_e2e_target="teacher", rs_e2e_teacher_checkpoint=checkpoint, rs_e2e_dc_input="clean")
    return engine("RS-E2E", ["l2_loss", "complex_mse_loss"], **{**settings, **overrides})


def with_target(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    operator = MultiCoilOperator(fft2, ifft2, data["sensitivity_map"], data["sampling_mask"])
    return {**data, "target": modulus(complex_target_image(data["kspace"], operator))}


@pytest.mark.parametrize("units", ["direct", "paper"])
def test_teacher_reconstruction_is_the_target_of_every_reconstruction_loss(tmp_path, units):
    modl = save_modl(tmp_path / "model_3.pt", intensity_scale=units)
    rs = teacher_engine(tmp_path / "model_3.pt", intensity_scale=units)
    rs._load_teacher()
    data = with_target(batch())
    ground_truth = data["target"]
    with torch.no_grad():
        teacher = modl(data["masked_kspace"], data["sampling_mask"], data["sensitivity_map"])
    torch.manual_seed(5)
    rs.forward_function(data)
    loss = rs._compute_plugin_loss("complex_mse_loss")

    # DIRECT's losses (l2_loss here) read data["target"]: now the teacher's magnitude, not the ground truth.
    torch.testing.assert_close(data["target"], modulus(teacher))
    assert (data["target"] - ground_truth).abs().max() > 0.1
    # complex_mse_loss: per noise draw, towards the teacher (s^2-weighted errors in units of s: DIRECT's units).
    torch.manual_seed(5)
    _, details = rs.model(data["masked_kspace"], data["sampling_mask"], data["sensitivity_map"], return_details=True)
    s = 1.0 if details.scale is None else details.scale[:, None, None, None]
    assert details.draws.shape[0] == 2
    torch.testing.assert_close(loss, ((s * details.draws - teacher) ** 2).mean())
    assert not torch.isclose(loss, ((s * details.draws - complex_target_image_of(data)) ** 2).mean(), rtol=0.1)
    assert not any(p.requires_grad for p in rs._teacher.parameters())


def complex_target_image_of(data):
    operator = MultiCoilOperator(fft2, ifft2, data["sensitivity_map"], data["sampling_mask"])
    return complex_target_image(data["kspace"], operator)


def test_ground_truth_is_the_default_target(tmp_path):
    rs = engine("RS-E2E", ["l2_loss", "complex_mse_loss"])
    rs._load_teacher()
    data = with_target(batch())
    target = data["target"]
    torch.manual_seed(5)
    output, _ = rs.forward_function(data)
    assert rs._teacher is None and data["target"] is target
    torch.testing.assert_close(
        rs._compute_plugin_loss("complex_mse_loss"), torch.nn.functional.mse_loss(output, complex_target_image_of(data))
    )


def test_missing_or_wrong_teacher_gives_a_one_line_error_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match="rs_e2e_target: teacher needs model.rs_e2e_teacher_checkpoint"):
        teacher_engine(None)._load_teacher()
    with pytest.raises(FileNotFoundError, match="rs_e2e_teacher_checkpoint .*smug.modl.MoDL"):
        teacher_engine(tmp_path / "absent.pt")._load_teacher()
    didn = DIDN(denoiser_hidden_channels=4, denoiser_num_dubs=1, denoiser_num_convs_recon=1)
    torch.save({"model": didn.state_dict()}, tmp_path / "didn.pt")
    wide = MoDL(fft2, ifft2, **{**ENGINE_TINY, "denoiser_hidden_channels": 8})
    torch.save({"model": wide.state_dict()}, tmp_path / "wide.pt")
    weighted = WeightedSMUG(fft2, ifft2, **ENGINE_TINY)
    torch.save({"model": weighted.state_dict()}, tmp_path / "weighted.pt")
    for name in ("didn.pt", "wide.pt", "weighted.pt"):
        with pytest.raises(ValueError, match="rs_e2e_teacher_checkpoint .* is not a smug.modl.MoDL") as error:
            teacher_engine(tmp_path / name)._load_teacher()
        assert "\n" not in str(error.value)
