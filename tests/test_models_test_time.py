"""The networks' test-time settings interface (``test_time``, ``supported_test_time_settings``) and the config keys
the networks take."""

import pytest
import torch
from conftest import multicoil_inputs
from direct.data.transforms import fft2, ifft2

from smug_plugin.models.modl import MoDL
from smug_plugin.models.rs_e2e import RSE2E
from smug_plugin.models.smug import SMUG, SMUGv0
from smug_plugin.models.unrolled import Smoothing, network_kwargs
from smug_plugin.models.weighted_smug import WeightedSMUG

TINY = dict(num_steps=2, cg_iters=3, denoiser_hidden_channels=8, denoiser_num_dubs=1, denoiser_num_convs_recon=2)
SMOOTHED = [SMUG, SMUGv0, WeightedSMUG, RSE2E]
SETTINGS = ("num_steps", "sigma", "num_samples", "noise_seed")


def make(cls, **overrides):
    torch.manual_seed(0)
    smoothing = {} if cls is MoDL else {"sigma": 0.05, "num_samples": 2}
    return cls(fft2, ifft2, **{**TINY, **smoothing, **overrides}).eval()


@pytest.fixture
def inputs():
    generator, mask, sens = multicoil_inputs(batch=1, coils=2, size=(8, 6))
    return torch.randn(sens.shape, generator=generator) * mask, mask, sens


def settings(model) -> tuple:
    return tuple(getattr(model, name) for name in SETTINGS)


def test_supported_settings_of_each_member():
    assert make(MoDL).supported_test_time_settings() == frozenset({"num_steps", "noise_seed", "attack_gradient"})
    for cls in SMOOTHED:
        assert make(cls).supported_test_time_settings() == frozenset({*SETTINGS, "attack_gradient"})


@pytest.mark.parametrize("cls", SMOOTHED)
def test_settings_apply_inside_the_block_as_if_built_with_them_and_are_restored(cls, inputs):
    chosen = {"num_steps": 3, "sigma": 0.02, "num_samples": 3, "noise_seed": 7}
    model = make(cls)
    before = settings(model)
    with model.test_time(**chosen) as inside:
        assert inside is model and settings(model) == tuple(chosen.values())
        output = model(*inputs)
    assert settings(model) == before
    assert torch.equal(output, make(cls, **chosen)(*inputs))


def test_none_keeps_a_setting_and_modl_takes_unrolls_and_seed(inputs):
    model = make(MoDL)
    with model.test_time(num_steps=4, noise_seed=3, sigma=None, num_samples=None):
        assert (model.num_steps, model.noise_seed, model.sigma) == (4, 3, 0.0)
        assert torch.equal(model(*inputs), make(MoDL, num_steps=4)(*inputs))
    assert model.num_steps == TINY["num_steps"]


def test_settings_are_restored_when_the_block_raises():
    model = make(SMUG)
    before = settings(model)
    with pytest.raises(RuntimeError, match="inside"), model.test_time(num_steps=5, sigma=0.0, num_samples=4):
        raise RuntimeError("inside")
    assert settings(model) == before


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"num_steps": 2.5}, "num_steps must be a positive integer, got 2.5"),
        ({"num_steps": 0}, "num_steps must be a positive integer"),
        ({"num_steps": True}, "num_steps must be a positive integer"),
        ({"num_samples": 0}, "num_samples"),
        ({"sigma": -0.1}, "sigma must be >= 0"),
        ({"sigma": float("nan")}, "sigma must be a finite number"),
        ({"noise_seed": 1.5}, "noise_seed must be an integer"),
    ],
)
def test_invalid_values_are_rejected_and_nothing_changes(request_, message):
    model = make(SMUG)
    before = settings(model)
    with pytest.raises(ValueError, match=message), model.test_time(**{"num_steps": 4, "sigma": 0.02, **request_}):
        pytest.fail("the block must not run")
    assert settings(model) == before


def test_whole_floats_count_as_integers():
    model = make(SMUG)
    with model.test_time(num_steps=3.0, num_samples=4.0):
        assert (model.num_steps, model.num_samples) == (3, 4)
        assert isinstance(model.num_steps, int) and isinstance(model.num_samples, int)


@pytest.mark.parametrize("setting", ["sigma", "num_samples"])
def test_modl_rejects_the_smoothing_settings_by_name(setting):
    model = make(MoDL)
    with pytest.raises(
        ValueError,
        match=rf"MoDL has no test-time setting {setting}; it supports attack_gradient, noise_seed, num_steps",
    ):
        with model.test_time(**{setting: 1}):
            pytest.fail("the block must not run")
    assert (model.sigma, model.num_samples) == (0.0, 1)


def test_network_takes_only_its_own_config_keys():
    config = {"num_steps": 2, "ustab_target": "target", "robust_validation_budget": 0.1, "some_future_engine_key": 1}
    assert network_kwargs(config, Smoothing.NONE) == {"num_steps": 2, "smoothing": Smoothing.NONE}
    model = MoDL(fft2, ifft2, **TINY, model_name="smug.modl.MoDL", some_future_engine_key=1)
    assert model.num_steps == TINY["num_steps"]
