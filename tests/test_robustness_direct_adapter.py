"""What `smug_plugin.direct_adapter` relies on in DIRECT's private functions: fails when DIRECT changes."""

import inspect

import pytest
import torch
from robustness_fixtures import loaded_setup

from smug_plugin import direct_adapter


def test_private_direct_functions_keep_the_signatures_relied_on():
    from direct.nn.mri_models import MRIModelEngine, _compute_resolution, _process_output
    from direct.nn.rim.rim_engine import RIMEngine

    for engine in (MRIModelEngine, RIMEngine):  # RIM overrides the iteration
        assert list(inspect.signature(engine._do_iteration).parameters)[:3] == ["self", "data", "loss_fns"]
    assert list(inspect.signature(_process_output).parameters)[:3] == ["data", "scaling_factors", "resolution"]
    assert list(inspect.signature(_compute_resolution).parameters) == ["key", "reconstruction_size"]


def test_output_postprocessing_behaves_as_relied_on():
    batch = {
        "scaling_factor": torch.tensor([2.0, 3.0]),
        "reconstruction_size": [torch.tensor([4, 4]), torch.tensor([2, 2]), torch.tensor([1, 1])],
    }
    assert direct_adapter.output_resolution(None, batch) is None
    assert direct_adapter.output_resolution("header", batch) == [4, 2]
    image = torch.randn(2, 6, 4, 2)
    magnitude = (image**2).sum(-1).sqrt()
    scale = batch["scaling_factor"].view(-1, 1, 1)
    assert torch.allclose(direct_adapter.scaled_image(image, batch, [4, 2]), (magnitude * scale)[:, 1:5, 1:3])
    assert torch.allclose(direct_adapter.scaled_image(magnitude, batch, None), magnitude * scale)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return loaded_setup(tmp_path_factory.mktemp("adapter"), ("varnet", "rim"))


@pytest.mark.parametrize("name", ["varnet", "rim"])
def test_engine_iteration_gives_a_differentiable_magnitude_image(loaded, name):
    models, batch = loaded
    engine = models[name].engine
    iteration = engine._do_iteration(dict(batch), loss_fns=None)
    assert hasattr(iteration, "output_image")
    delta = torch.zeros_like(batch["masked_kspace"], requires_grad=True)
    output = direct_adapter.engine_magnitude(engine, {**batch, "masked_kspace": batch["masked_kspace"] + delta})
    assert output.shape == batch["target"].shape and torch.all(output >= 0)
    (grad,) = torch.autograd.grad(output.sum(), delta)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_header_parsing_gives_what_the_data_checks_compare():
    from smug_plugin.data.fastmri_h5 import ismrmrd_header

    parsed = direct_adapter.parse_fastmri_header(ismrmrd_header((32, 24), (32.0, 24.0), 1.0, 3, 4).encode())
    assert parsed["encoding_size"] == (32, 24, 1) and parsed["reconstruction_size"] == (32, 24, 1)
    assert (parsed["padding_left"], parsed["padding_right"]) == (0, 24)
