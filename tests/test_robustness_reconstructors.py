"""The reconstructor interface on a DIRECT-native engine (VarNet) and a plugin engine (SMUG), fresh weights."""

import pytest
import torch
from robustness_fixtures import loaded_setup

from smug_plugin.operators import MultiCoilOperator
from smug_plugin.robustness.reconstructors.interface import (
    ConfiguredModel,
    NativeReconstructor,
    PluginReconstructor,
    TestTimeSettings,
    UnsupportedSettings,
)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return loaded_setup(tmp_path_factory.mktemp("reconstructors"), ("varnet", "smug"))


def test_native_engine_reports_the_settings_it_does_not_support(loaded):
    models, batch = loaded
    varnet = models["varnet"]
    assert isinstance(varnet, NativeReconstructor) and varnet.supported_settings() == frozenset()
    shifted = TestTimeSettings(num_steps=2, sigma=0.1, noise_seed=3)
    assert varnet.unsupported(shifted) == {"num_steps", "sigma"}
    with pytest.raises(UnsupportedSettings, match="varnet.*num_steps, sigma"):
        varnet.reconstruct(batch, None, shifted)
    with pytest.raises(UnsupportedSettings):
        ConfiguredModel(models["smug"], TestTimeSettings(num_steps=1)).with_reconstructor(varnet)
    # A noise seed is no shift: a deterministic model runs unchanged under any.
    with torch.no_grad():
        plain = varnet.reconstruct(batch, None, TestTimeSettings())
        seeded = varnet.reconstruct(batch, None, TestTimeSettings(noise_seed=3))
    assert plain.shape == batch["target"].shape and torch.equal(plain, seeded)
    assert not varnet.is_randomized(TestTimeSettings()) and varnet.describe()["randomized"] is False


def test_plugin_model_applies_its_settings_for_one_call_only(loaded):
    models, batch = loaded
    smug = models["smug"]
    assert isinstance(smug, PluginReconstructor)
    assert smug.supported_settings() == {"num_steps", "sigma", "num_samples", "noise_seed", "attack_gradient"}
    assert smug.unsupported(TestTimeSettings(num_steps=1, sigma=0.0, num_samples=3)) == frozenset()

    def run(**settings):
        with torch.no_grad():
            return smug.reconstruct(batch, None, TestTimeSettings(**settings))

    configured = run(noise_seed=5)
    assert not torch.equal(run(noise_seed=5, num_steps=1), configured)
    assert torch.equal(run(noise_seed=5), configured)  # restored after the call
    assert not torch.equal(run(noise_seed=6), configured)
    assert smug.is_randomized(TestTimeSettings()) and not smug.is_randomized(TestTimeSettings(sigma=0.0))
    model = ConfiguredModel(smug, TestTimeSettings(num_steps=1))
    with torch.no_grad():
        assert torch.equal(model.reconstruct(batch, None, noise_seed=5), run(noise_seed=5, num_steps=1))


def test_perturbation_reaches_the_model_and_gradients_flow(loaded):
    models, batch = loaded
    before = {key: batch[key].clone() for key in ("masked_kspace", "sensitivity_map")}
    for model in models.values():
        delta = torch.zeros_like(batch["masked_kspace"], requires_grad=True)
        output = model.reconstruct(batch, delta, TestTimeSettings(noise_seed=1))
        (grad,) = torch.autograd.grad(output.sum(), delta)
        assert grad.abs().sum() > 0, model.name
    # The engines overwrite the sensitivity map of the dict they get: the caller's batch stays as it was.
    assert all(torch.equal(batch[key], value) for key, value in before.items())


def test_operator_is_the_engines_multicoil_operator(loaded):
    models, batch = loaded
    operator = models["varnet"].operator(batch)
    assert isinstance(operator, MultiCoilOperator)
    image = operator.adjoint(batch["masked_kspace"])
    assert image.shape == (*batch["masked_kspace"].shape[:1], *batch["masked_kspace"].shape[2:])
    # The engine normalises the maps: sum_c |S_c|^2 = 1 wherever the maps are nonzero.
    energy = (operator.sensitivity_map**2).sum(dim=(1, 4))
    assert torch.allclose(energy[energy > 0.5], torch.ones(()), atol=1e-4)
    kspace = operator.forward(image)
    assert torch.all(kspace[~batch["sampling_mask"].expand_as(kspace).bool()] == 0)
