"""The threat model: the intensity normalisation a model computes from its measurements is fixed from the clean
measurement by default (exactly), moves with the attack only under ``normalisation: attacked``, and the sanity check
`scale_steady` fires when an attack moves it."""

import pytest
import torch
from attack_models import TINY, tiny_batch
from direct.data.transforms import fft2, ifft2
from robustness_fixtures import loaded_setup

from smug_plugin.models.modl import MoDL
from smug_plugin.robustness.reconstructors.interface import TestTimeSettings
from smug_plugin.robustness.reports.sanity import observations, scale_steady
from smug_plugin.robustness.run.loop import Measurement, scale_stability
from smug_plugin.robustness.run.protocol import ProtocolError, load_protocol
from smug_plugin.robustness.threat_model import direct_scaling_factor

FIXED, ATTACKED = TestTimeSettings(normalisation="fixed"), TestTimeSettings(normalisation="attacked")


def spike(operator, batch: dict, factor: float) -> torch.Tensor:
    """A k-space perturbation A(delta_img) whose image is one bright pixel, ``factor`` times the slice's s: the lever
    the old behaviour gave PGD (it raises s = max(|Re|, |Im|) of A^H y)."""
    adjoint = operator.adjoint(batch["masked_kspace"])
    real = adjoint[..., 0].flatten(1)
    image = torch.zeros_like(adjoint)
    for i, pixel in enumerate(real.abs().argmax(dim=1).tolist()):  # on top of the brightest pixel
        row, column = divmod(pixel, adjoint.shape[2])
        image[i, row, column, 0] = factor * real[i, pixel]
    return operator.forward(image)


def test_scale_from_the_clean_measurement_is_exactly_the_clean_scale():
    torch.manual_seed(0)
    network = MoDL(fft2, ifft2, **TINY, intensity_scale="paper").eval()
    batch, _ = tiny_batch(batch=2)
    clean, mask, maps = batch["masked_kspace"], batch["sampling_mask"], batch["sensitivity_map"]
    attacked = clean + spike(network.operator(mask, maps), batch, 6.0)
    with torch.no_grad():
        _, plain = network(clean, mask, maps, return_details=True)
        _, moved = network(attacked, mask, maps, return_details=True)
        with network.scale_from(clean):
            _, held = network(attacked, mask, maps, return_details=True)
    assert torch.equal(held.scale, plain.scale)
    assert (moved.scale > 1.5 * plain.scale).all()  # without it the spike rescales the slice
    # The held scale is a constant for the gradient: only the image path carries it.
    delta = torch.zeros_like(clean, requires_grad=True)
    with network.scale_from(clean):
        _, details = network(clean + delta, mask, maps, return_details=True)
    assert not details.scale.requires_grad


def test_a_quantile_scale_is_not_moved_by_one_bright_pixel():
    torch.manual_seed(0)
    batch, _ = tiny_batch(batch=2)
    clean, mask, maps = batch["masked_kspace"], batch["sampling_mask"], batch["sensitivity_map"]
    scales = {}
    for statistic in ("max", "quantile"):
        network = MoDL(fft2, ifft2, **TINY, intensity_scale="paper", intensity_scale_statistic=statistic).eval()
        attacked = clean + spike(network.operator(mask, maps), batch, 6.0)
        with torch.no_grad():
            _, plain = network(clean, mask, maps, return_details=True)
            _, moved = network(attacked, mask, maps, return_details=True)
        scales[statistic] = moved.scale / plain.scale
    # On these tiny images the spike's aliases reach a few of the pixels above the 99th percentile: the quantile
    # moves, but by a small part of what the maximum does.
    assert (scales["max"] > 1.5).all() and (scales["quantile"] - 1 < (scales["max"] - 1) / 3).all(), scales


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return loaded_setup(tmp_path_factory.mktemp("threat"), ("modl_paper", "varnet"))


def test_default_is_fixed_and_the_old_behaviour_needs_the_explicit_setting(loaded, monkeypatch):
    models, batch = loaded
    modl = models["modl_paper"]
    delta = spike(modl.operator(batch), batch, 12.0)
    # The scale the network divides by in each call (a fresh network is nearly linear, so its outputs barely show it).
    seen, original = [], MoDL.input_scale
    monkeypatch.setattr(MoDL, "input_scale", lambda net, adjoint: seen.append(original(net, adjoint)) or seen[-1])
    with torch.no_grad():
        clean = modl.reconstruct(batch, None, TestTimeSettings())
        clean_scale = seen[-1]
        default = modl.reconstruct(batch, delta, TestTimeSettings())
        fixed = modl.reconstruct(batch, delta, FIXED)
        assert torch.equal(seen[-1], clean_scale) and torch.equal(seen[-2], clean_scale)
        attacked = modl.reconstruct(batch, delta, ATTACKED)
        assert (seen[-1] > 1.3 * clean_scale).all()  # the spike lifts the max (the data's masks vary by path)
        assert torch.equal(default, fixed) and not torch.equal(fixed, attacked) and not torch.equal(clean, fixed)
        # The network's own s is what moves: the reconstructor's facts say by how much.
        assert torch.equal(modl.normalisation_shift(batch, delta, FIXED), torch.ones(2))
        assert (modl.normalisation_shift(batch, delta, ATTACKED) > 1.3).all()
        assert torch.equal(modl.normalisation_shift(batch, None, ATTACKED), torch.ones(2))


def test_direct_native_normalisation_follows_the_attack_only_when_attacked(loaded):
    models, batch = loaded
    varnet = models["varnet"]
    # Raise every acquired entry: DIRECT's 99th percentile of |masked k-space| moves with it.
    delta = 0.5 * batch["masked_kspace"]
    ratio = direct_scaling_factor(batch["masked_kspace"] + delta, 0.99) / direct_scaling_factor(
        batch["masked_kspace"], 0.99
    )
    torch.testing.assert_close(ratio, torch.full((2,), 1.5))
    with torch.no_grad():
        fixed = varnet.reconstruct(batch, delta, FIXED)
        attacked = varnet.reconstruct(batch, delta, ATTACKED)
        # Under `attacked` DIRECT renormalises the perturbed k-space (back to the clean one here) and the output
        # comes back times the ratio: 1.5 x the clean reconstruction.
        clean = varnet.reconstruct(batch, None, FIXED)
    torch.testing.assert_close(attacked, 1.5 * clean, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(fixed, attacked)
    torch.testing.assert_close(varnet.normalisation_shift(batch, delta, ATTACKED), ratio)


def _records(model, batch, delta, settings) -> list[dict]:
    with torch.no_grad():
        clean = model.reconstruct(batch, None, settings)
        output = model.reconstruct(batch, delta, settings)
    shift = model.normalisation_shift(batch, delta, settings)
    measurement = Measurement(None, output, clean, delta, 0.0, shift)
    return [
        {"condition": "main/spike", "group": "main", "perturbation": "spike", "model": model.name, "file": "f.h5"}
        | {"slice": i, **facts}
        for i, facts in enumerate(scale_stability(measurement, settings.threat_normalisation.value))
    ]


def test_scale_check_fires_on_a_moved_normalisation_and_passes_when_it_is_fixed(loaded):
    models, batch = loaded
    modl = models["modl_paper"]
    delta = spike(modl.operator(batch), batch, 6.0)
    protocol = {"perturbations": [{"name": "spike", "kind": "pgd", "family": "gradient"}]}
    for settings, verdict in ((ATTACKED, "warn"), (FIXED, "pass")):
        check = scale_steady(observations(_records(modl, batch, delta, settings), protocol))
        assert check["models"][modl.name]["verdict"] == verdict, check["models"]
    assert check["figure"] == "sanity_scale_steady.png"


def test_protocols_declare_the_threat_model(tmp_path):
    protocol = load_protocol("reproduce")
    assert protocol.normalisation == "fixed"
    assert protocol.to_dict()["threat_model"] == {"normalisation": "fixed"}
    names = {p.name: p.normalisation for p in protocol.perturbations}
    assert names.get("pgd_normalisation") == "attacked"
    bad = tmp_path / "bad.yaml"
    bad.write_text("threat_model: {normalisation: sometimes}\nperturbations: [{name: clean, kind: clean}]\n")
    with pytest.raises(ProtocolError, match="normalisation must be one of fixed, attacked"):
        load_protocol(bad)
