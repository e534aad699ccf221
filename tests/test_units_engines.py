"""The training losses in the papers' units: UStab and the denoiser pre-training on slices divided by their scale."""

import pytest
import torch
from conftest import multicoil_inputs
from direct.config.defaults import DefaultConfig, FunctionConfig, LossConfig, TrainingConfig, ValidationConfig
from direct.data.transforms import fft2, ifft2
from omegaconf import OmegaConf

from smug_plugin.models.config import DIDNConfig, SMUGConfig
from smug_plugin.models.didn import DIDN
from smug_plugin.models.smug import SMUG
from smug_plugin.models.smug_engine import DIDNEngine, SMUGEngine
from smug_plugin.operators import MultiCoilOperator
from smug_plugin.units import measured_intensity_scale

DENOISER = dict(denoiser_hidden_channels=8, denoiser_num_dubs=1, denoiser_num_convs_recon=2)


def engine(engine_class, model_class, model_cfg, losses: list[str]):
    cfg = OmegaConf.structured(
        DefaultConfig(
            model=model_cfg,
            training=TrainingConfig(loss=LossConfig(losses=[FunctionConfig(name) for name in losses])),
            validation=ValidationConfig(crop=None),
        )
    )
    torch.manual_seed(0)
    settings = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k not in ("model_name", "engine_name")}
    return engine_class(cfg, model_class(fft2, ifft2, **settings), "cpu", fft2, ifft2)


def batch(scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Fully sampled k-space of images of maximum about 5 (DIRECT-like units), its 4x-ish masked copy."""
    generator, mask, sens = multicoil_inputs()
    image = 5 * torch.rand(2, 16, 12, 2, generator=generator)
    kspace = scale * MultiCoilOperator(fft2, ifft2, sens, mask).fully_sampled(image)
    return {"kspace": kspace, "masked_kspace": kspace * mask, "sampling_mask": mask, "sensitivity_map": sens}


def smug_engine(units: str) -> SMUGEngine:
    model_cfg = SMUGConfig(model_name="smug.smug.SMUG", num_steps=2, cg_iters=3, sigma=0.05, num_samples=2, **DENOISER)
    model_cfg.intensity_scale = units
    smug = engine(SMUGEngine, SMUG, model_cfg, ["l2_loss", "ustab_loss"])
    smug.model.train()
    return smug


def ustab(smug: SMUGEngine, data: dict[str, torch.Tensor]) -> torch.Tensor:
    torch.manual_seed(5)  # the same training noise for every call
    smug.forward_function(data)
    return smug._compute_plugin_loss("ustab_loss")


def test_ustab_in_paper_units_scales_like_directs_reconstruction_loss():
    # With intensity_scale paper the unrolls run in units of s: UStab must divide the target by s (else D(t) would
    # not scale along) and weigh each slice by s^2, so that data scaled by c = 4 give the same iterates and a loss
    # exactly c^2 times larger, as DIRECT's l2_loss next to it: lambda_l then weighs the two terms as published.
    smug = smug_engine("paper")
    assert torch.equal(ustab(smug, batch(4.0)), 16 * ustab(smug, batch(1.0)))


def test_ustab_in_paper_units_is_s_squared_times_ustab_on_the_unit_scale_slice():
    data = {name: value[:1] for name, value in batch().items()}  # one slice: one s
    operator = MultiCoilOperator(fft2, ifft2, data["sensitivity_map"], data["sampling_mask"])
    s = measured_intensity_scale(operator.adjoint(data["masked_kspace"]))
    assert s.item() > 2  # DIRECT-like units, or the test could not tell s from 1
    unit_data = {**data, "kspace": data["kspace"] / s.item(), "masked_kspace": data["masked_kspace"] / s.item()}
    expected = s.square() * ustab(smug_engine("direct"), unit_data)
    torch.testing.assert_close(ustab(smug_engine("paper"), data), expected[0], rtol=1e-5, atol=0)


@pytest.mark.parametrize("units", ["direct", "paper"])
def test_pretraining_in_paper_units_divides_each_target_by_its_own_scale(units):
    model_cfg = DIDNConfig(model_name="smug.didn.DIDN", sigma=0.05, intensity_scale=units, **DENOISER)
    didn = engine(DIDNEngine, DIDN, model_cfg, ["denoiser_loss"])
    didn.model.eval()  # seeded noise
    outputs, losses, target_maxima = [], [], []
    for scale in (1.0, 4.0):
        outputs.append(didn.forward_function(batch(scale))[0])
        losses.append(didn._compute_plugin_loss("denoiser_loss"))
        target_maxima.append(didn._loss_inputs["denoiser_loss"][1].abs().flatten(1).amax(1))
    if units == "paper":
        # The papers' definition: each target's max(|Re|, |Im|) is 1, so the denoiser sees the same input at any
        # data scale: the loss is unchanged and the output scales with the data.
        assert torch.equal(target_maxima[0], torch.ones(2)) and torch.equal(target_maxima[1], torch.ones(2))
        assert torch.equal(losses[1], losses[0])
        assert torch.equal(outputs[1], 4.0 * outputs[0])
    else:
        assert not torch.allclose(outputs[1], 4.0 * outputs[0], rtol=1e-2)


def test_robust_validation_holds_the_networks_scale_at_its_clean_value(monkeypatch):
    # The training engine's PGD validation (`<metric>_pgd`) attacks under the evaluation's default threat model: the
    # network's intensity scale s comes from the clean measurement in every call of the attack and of the attacked
    # reconstruction, never from the attacked k-space.
    model_cfg = SMUGConfig(model_name="smug.smug.SMUG", num_steps=2, cg_iters=3, sigma=0.05, num_samples=2, **DENOISER)
    model_cfg.intensity_scale = "paper"
    model_cfg.robust_validation_budget = 0.5
    model_cfg.robust_validation_steps = 2
    smug = engine(SMUGEngine, SMUG, model_cfg, ["l2_loss"])
    smug.model.eval()
    data = batch()
    data["target"] = torch.linalg.vector_norm(
        smug.model.operator(data["sampling_mask"], data["sensitivity_map"]).coil_combine(data["kspace"]), dim=-1
    )
    clean = measured_intensity_scale(
        smug.model.operator(data["sampling_mask"], data["sensitivity_map"]).adjoint(data["masked_kspace"])
    )
    seen = []
    original = SMUG.input_scale

    def recorded(network, adjoint):
        scale = original(network, adjoint)
        seen.append(scale.detach().clone())
        return scale

    monkeypatch.setattr(SMUG, "input_scale", recorded)
    smug._attacking = True
    with torch.no_grad():
        smug.forward_function(dict(data))
    assert seen and all(torch.equal(scale, clean) for scale in seen)
    # Without the attack flag the scale follows the input it gets (the network's own behaviour).
    seen.clear()
    smug._attacking = False
    with torch.no_grad():
        smug.forward_function({**data, "masked_kspace": 3 * data["masked_kspace"]})
    assert torch.allclose(seen[-1], 3 * clean)
