"""complex_mse_loss: the journal's 2-channel MSE of the complex output, in UStab's units, for every family engine."""

import pytest
import torch
from conftest import multicoil_inputs
from direct.config.defaults import DefaultConfig, FunctionConfig, LossConfig, TrainingConfig, ValidationConfig
from direct.data.transforms import fft2, ifft2
from omegaconf import OmegaConf

from smug_plugin.losses.smoothing import PLUGIN_LOSSES, complex_mse_loss, complex_target_image
from smug_plugin.models import config
from smug_plugin.models.modl import MoDL
from smug_plugin.models.rs_e2e import RSE2E
from smug_plugin.models.smug import SMUG, SMUGv0
from smug_plugin.models.smug_engine import MoDLEngine, RSE2EEngine, SMUGEngine, SMUGv0Engine, WeightedSMUGEngine
from smug_plugin.models.weighted_smug import WeightedSMUG
from smug_plugin.operators import MultiCoilOperator
from smug_plugin.units import measured_intensity_scale

TINY = dict(num_steps=2, cg_iters=3, denoiser_hidden_channels=4, denoiser_num_dubs=1, denoiser_num_convs_recon=1)
SMOOTHED = dict(sigma=0.05, num_samples=2, **TINY)
FAMILY = {
    "MoDL": (MoDL, MoDLEngine, config.MoDLConfig, "smug.modl.MoDL", TINY),
    "SMUG": (SMUG, SMUGEngine, config.SMUGConfig, "smug.smug.SMUG", SMOOTHED),
    "SMUGv0": (SMUGv0, SMUGv0Engine, config.SMUGv0Config, "smug.smug.SMUGv0", SMOOTHED),
    "Weighted SMUG": (
        WeightedSMUG,
        WeightedSMUGEngine,
        config.WeightedSMUGConfig,
        "smug.weighted_smug.WeightedSMUG",
        SMOOTHED,
    ),
    "RS-E2E": (RSE2E, RSE2EEngine, config.RSE2EConfig, "smug.rs_e2e.RSE2E", SMOOTHED),
}


def engine(member: str, losses: list[str], **overrides):
    network, engine_class, config_class, name, settings = FAMILY[member]
    model_cfg = config_class(model_name=name, **settings, **overrides)
    cfg = OmegaConf.structured(
        DefaultConfig(
            model=model_cfg,
            training=TrainingConfig(loss=LossConfig(losses=[FunctionConfig(loss) for loss in losses])),
            validation=ValidationConfig(crop=None),
        )
    )
    torch.manual_seed(0)
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k not in ("model_name", "engine_name")}
    result = engine_class(cfg, network(fft2, ifft2, **kwargs), "cpu", fft2, ifft2)
    result.model.train()  # the plugin losses are training losses
    return result


def batch() -> dict[str, torch.Tensor]:
    """Fully sampled k-space of images of maximum about 5 (DIRECT-like units) and its masked copy."""
    generator, mask, sens = multicoil_inputs(coils=2, size=(8, 8))
    image = 5 * torch.rand(2, 8, 8, 2, generator=generator)
    kspace = MultiCoilOperator(fft2, ifft2, sens, mask).fully_sampled(image)
    return {"kspace": kspace, "masked_kspace": kspace * mask, "sampling_mask": mask, "sensitivity_map": sens}


def test_complex_mse_loss_is_registered_with_the_plugin_losses():
    assert "complex_mse_loss" in PLUGIN_LOSSES


@pytest.mark.parametrize("member", FAMILY)
def test_every_family_engine_takes_complex_mse_loss_with_directs_losses(member):
    smoothed = engine(member, ["l2_loss", "complex_mse_loss"])
    fns = smoothed.build_loss()
    assert set(fns) == {"l2_loss", "complex_mse_loss"}
    data = batch()
    torch.manual_seed(5)
    output, _ = smoothed.forward_function(data)
    loss = fns["complex_mse_loss"](None, None)
    assert loss.ndim == 0 and loss > 0
    loss.backward()  # it trains the network
    assert all(p.grad is not None for p in smoothed.model.denoiser.parameters())
    assert output.shape == (2, 8, 8, 2)


@pytest.mark.parametrize("units", ["direct", "paper"])
@pytest.mark.parametrize("member", ["MoDL", "SMUG"])
def test_complex_mse_loss_is_the_two_channel_mse_of_the_complex_output(member, units):
    modl = engine(member, ["complex_mse_loss"], intensity_scale=units)
    data = batch()
    torch.manual_seed(5)
    output, _ = modl.forward_function(data)
    loss = modl._compute_plugin_loss("complex_mse_loss")

    operator = MultiCoilOperator(fft2, ifft2, data["sensitivity_map"], data["sampling_mask"])
    target = complex_target_image(data["kspace"], operator)
    if units == "direct":  # torch's MSELoss on the real and imaginary channels, as the journal's code
        expected = torch.nn.functional.mse_loss(output, target)
    else:  # the journal's MSE on each slice divided by s, weighted by s^2 per slice exactly as ustab_loss
        s = measured_intensity_scale(operator.adjoint(data["masked_kspace"]))
        per_slice = [
            s[i] ** 2 * torch.nn.functional.mse_loss(output[i] / s[i], target[i] / s[i]) for i in range(len(s))
        ]
        expected = torch.stack(per_slice).mean()
        assert s.min() > 1.5  # DIRECT-like units, or the test could not tell the two settings apart
    torch.testing.assert_close(loss, expected)


def test_complex_mse_loss_takes_the_mean_over_draws():
    draws = torch.tensor([[[[[1.0, 3.0]]]], [[[[3.0, 1.0]]]]])  # (K=2, N=1, 1, 1, 2)
    target = torch.tensor([[[[1.0, 1.0]]]])
    # Per draw: mean(0, 4) = 2 and mean(4, 0) = 2, whereas the mean of the draws (2, 2) would give 1.
    torch.testing.assert_close(complex_mse_loss(draws, target), torch.tensor(2.0))
    torch.testing.assert_close(complex_mse_loss(draws, target, torch.tensor([3.0])), torch.tensor(6.0))
