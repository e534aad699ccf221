"""Issue 24, parts 1-2: the published cyclic-consistency defense (CycMit-MRI) and the paper's attacks, on tiny tensors.

Each new attack stays inside its ball or support, the unsupervised objective equals a hand computation, the published
defense with 0 iterations is the identity, jittering has the estimated per-coil level, the zero-filled budget
convention resolves to eps x max |A^H y| per slice, and the defense's stated cost counts its model calls.
"""

import math

import pytest
import torch
from attack_models import tiny_batch, tiny_modl
from direct.data.transforms import fft2, ifft2

from smug_plugin.operators import MultiCoilOperator
from smug_plugin.robustness.attacks import Budget, attack_class
from smug_plugin.robustness.attacks.herringbone import Herringbone
from smug_plugin.robustness.attacks.unsupervised import UnsupervisedPGD
from smug_plugin.robustness.defenses.cyclic_consistency import (
    DefendedReconstructor,
    DefenseSettings,
    jitter,
    noise_level,
    read_defense_settings,
)
from smug_plugin.robustness.reconstructors.interface import (
    ConfiguredModel,
    Reconstructor,
    TestTimeSettings,
    UnsupportedSettings,
)


class TinyReconstructor(Reconstructor):
    """A twice-differentiable tiny model: the zero-filled image plus a small convolution of it, in magnitude."""

    name = "tiny"

    def __init__(self):
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1)
        self.calls = 0

    def supported_settings(self) -> frozenset[str]:
        return frozenset()

    def operator(self, batch: dict) -> MultiCoilOperator:
        return MultiCoilOperator(fft2, ifft2, batch["sensitivity_map"], batch["sampling_mask"])

    def reconstruct(self, batch: dict, kspace_delta, settings: TestTimeSettings) -> torch.Tensor:
        self.applicable(settings)
        self.calls += 1
        kspace = batch["masked_kspace"] if kspace_delta is None else batch["masked_kspace"] + kspace_delta
        image = self.operator(batch).adjoint(kspace)
        image = image + 0.1 * torch.tanh(self.conv(image.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        return image.norm(dim=-1)

    def is_randomized(self, settings: TestTimeSettings) -> bool:
        return False

    def describe(self) -> dict:
        return {"name": self.name, "model_name": "tiny"}


def zero_filled_max(batch: dict) -> torch.Tensor:
    image = MultiCoilOperator(fft2, ifft2, batch["sensitivity_map"], batch["sampling_mask"]).adjoint(
        batch["masked_kspace"]
    )
    return torch.stack([(slice_[..., 0] ** 2 + slice_[..., 1] ** 2).sqrt().max() for slice_ in image])


def test_relative_zero_filled_resolves_to_eps_times_the_zero_filled_maximum_per_slice():
    batch, targets = tiny_batch()
    expected = 0.01 * zero_filled_max(batch)
    assert expected[0] != expected[1]
    image = MultiCoilOperator(fft2, ifft2, batch["sensitivity_map"], batch["sampling_mask"]).adjoint(
        batch["masked_kspace"]
    )
    budget = Budget.parse({"value": 0.01, "convention": "relative_zero_filled"})
    assert torch.allclose(budget.resolve(batch["masked_kspace"], batch["sampling_mask"], None, image), expected)
    with pytest.raises(ValueError, match="zero-filled"):
        budget.resolve(batch["masked_kspace"], batch["sampling_mask"])
    assert "max |A^H y|" in budget.describe()
    outcome = UnsupervisedPGD(steps=0)(tiny_modl(), batch, targets, seed=0)  # the paper's budget by default
    assert torch.allclose(torch.tensor(outcome.eps), expected)


def test_unsupervised_objective_is_the_relative_distance_to_the_clean_reconstruction_by_hand():
    model, (batch, targets) = tiny_modl(), tiny_batch()
    outcome = UnsupervisedPGD(steps=1)(model, batch, targets, seed=0)
    with torch.no_grad():
        clean = model.reconstruct(batch)
        attacked = model.reconstruct(batch, outcome.kspace_delta)
    for i in range(2):
        by_hand = math.sqrt(((attacked[i] - clean[i]) ** 2).sum()) / math.sqrt((clean[i] ** 2).sum())
        assert outcome.objective[i] == pytest.approx(by_hand, rel=1e-4)
        assert outcome.objective[i] > 0
    settings = attack_class("unsupervised_pgd").Settings.from_entry({})
    assert (settings.steps, settings.step_fraction, settings.start_scale) == (10, 0.2, pytest.approx(2**-0.5))
    assert settings.budget.to_dict() == {"value": 0.01, "convention": "relative_zero_filled", "norm": "linf"}


def test_unsupervised_attack_stays_in_its_ball():
    batch, targets = tiny_batch()
    acquired = (batch["sampling_mask"] != 0).expand_as(batch["masked_kspace"])
    budget = {"value": 0.05, "convention": "relative_max"}
    settings = attack_class("unsupervised_pgd").Settings.from_entry({"budget": budget, "domain": "kspace", "steps": 1})
    outcome = UnsupervisedPGD(**settings.fields())(tiny_modl(), batch, targets, seed=1)
    delta = outcome.kspace_delta
    assert (delta[~acquired] == 0).all()
    for i in range(2):
        assert 0 < delta[i].abs().max() <= outcome.eps[i] * (1 + 1e-6)


def test_herringbone_changes_at_most_k_acquired_entries_within_its_amplitude():
    batch, targets = tiny_batch()
    acquired = (batch["sampling_mask"] != 0).expand_as(batch["masked_kspace"])[..., 0]
    outcome = Herringbone(entries=4, steps=1)(tiny_modl(), batch, targets, seed=0)
    delta = outcome.kspace_delta
    changed = delta.abs().amax(dim=-1) > 0  # complex entries (coil, row, column)
    assert not changed[~acquired].any()
    for i in range(2):
        assert 0 < changed[i].sum() <= 4 and outcome.diagnostics["changed_entries"][i] == 4
        assert delta[i].abs().max() <= outcome.eps[i] * (1 + 1e-6)
        assert outcome.eps[i] == pytest.approx(0.5 * float(batch["masked_kspace"][i].abs().max()), rel=1e-6)
    assert "at most 4 acquired complex entries" in Herringbone(entries=4).settings.describe()
    with pytest.raises(ValueError, match="linf"):
        Herringbone(budget=Budget(0.1, norm="l2"))


def test_published_defense_with_zero_iterations_is_the_identity():
    batch, _ = tiny_batch()
    inner = TinyReconstructor()
    defended = DefendedReconstructor("d", DefenseSettings.published("tiny", iterations=0), inner)
    delta = 0.1 * torch.randn_like(batch["masked_kspace"]) * batch["sampling_mask"]
    with torch.no_grad():
        assert torch.equal(
            defended.reconstruct(batch, delta, TestTimeSettings()), inner.reconstruct(batch, delta, TestTimeSettings())
        )


def test_jittering_noise_has_the_estimated_per_coil_level():
    generator = torch.Generator().manual_seed(0)
    levels = torch.tensor([[0.1, 0.5, 2.0], [1.0, 0.2, 0.05]])
    mask = torch.zeros(2, 1, 64, 64, 1)
    mask[..., ::2, :] = 1
    residual = torch.randn(2, 3, 64, 64, 2, generator=generator) * levels[:, :, None, None, None] * mask
    residual = residual + 100 * (1 - mask)  # what is not acquired never counts
    estimate = noise_level(residual, mask)
    assert torch.allclose(estimate, levels, rtol=0.03)
    noise = jitter(6 * estimate, residual, generator)
    assert torch.allclose(noise.std(dim=(2, 3, 4)), 6 * levels, rtol=0.03)


def test_published_defense_stays_on_the_acquired_entries_and_states_its_cost_in_model_calls():
    batch, _ = tiny_batch()
    inner = TinyReconstructor()
    settings = DefenseSettings.published("tiny", iterations=2, extra_masks=1)
    assert (settings.radius, settings.convention.value, settings.stages, settings.noise_scale) == (
        0.01,
        "relative_zero_filled",
        2,
        6.0,
    )
    defended = DefendedReconstructor("d", settings, inner)
    delta = 0.1 * torch.randn_like(batch["masked_kspace"]) * batch["sampling_mask"]
    with torch.no_grad():
        defended.reconstruct(batch, delta, TestTimeSettings())
    calls = settings.model_calls()
    assert inner.calls == calls["forward"] + calls["forward_backward"] == 5 + 6
    assert calls["total_reconstructions"] == 5 + 3 * 6
    paper = DefenseSettings.published("tiny").model_calls()
    assert paper == {"forward": 9, "forward_backward": 700, "total_reconstructions": 2109}
    assert (
        "2109 reconstructions per slice"
        in DefendedReconstructor("d", DefenseSettings("tiny"), inner).describe()["cost"]
    )
    shift = defended.purification(batch, delta, TestTimeSettings())
    assert (shift * (1 - batch["sampling_mask"]) == 0).all()  # the lift A d of the image shift: acquired entries


def test_published_defense_keeps_the_iterate_with_the_lowest_loss(monkeypatch):
    """With a loss that is lowest after the first step, the kept iterate is that step's, not the last."""
    from smug_plugin.robustness.defenses import cyclic_consistency

    batch, _ = tiny_batch()
    inner = TinyReconstructor()
    settings = DefenseSettings.published("tiny", iterations=3, extra_masks=1)
    radius = 0.01 * zero_filled_max(batch)
    first_step = inner.operator(batch)(0.5 * radius.view(-1, 1, 1, 1) * torch.ones(2, 16, 12, 2))

    def loss(model, batch_, kspace, *args):  # lowest at y + A (step_0 ones): the first step along -sign(grad)
        return ((kspace - batch["masked_kspace"] - first_step) ** 2).flatten(1).sum(1)

    monkeypatch.setattr(cyclic_consistency, "published_loss", loss)
    calls = []
    monkeypatch.setattr(cyclic_consistency, "_signed", lambda g, u: calls.append(1) or -torch.ones_like(g))
    shift = DefendedReconstructor("d", settings, inner).purification(batch, None, TestTimeSettings())
    assert len(calls) == 3
    assert torch.allclose(shift, first_step, atol=1e-6)


def test_defense_yaml_keeps_its_old_form_and_names_the_variant(tmp_path):
    old = read_defense_settings(tmp_path / "d.yaml", {"wraps": "m", "radius": 0.02, "extra_masks": 1, "iterations": 2})
    assert old.variant.value == "published" and old.step_fraction == 0.5
    reduced = read_defense_settings(tmp_path / "d.yaml", {"wraps": "m", "variant": "reduced"})
    assert (reduced.convention.value, reduced.iterations, reduced.extra_masks, reduced.stages) == ("absolute", 10, 2, 1)
    with pytest.raises(ValueError, match="d.yaml.*one stage"):
        read_defense_settings(tmp_path / "d.yaml", {"wraps": "m", "variant": "reduced", "stages": 2})
    with pytest.raises(ValueError, match="relative_zero_filled"):
        DefenseSettings("m", convention="paper")


@pytest.mark.parametrize("variant", ["published", "reduced"])
def test_the_unrolled_gradient_goes_through_the_purification(variant):
    batch, targets = tiny_batch()
    settings = DefenseSettings(
        "tiny", variant, iterations=2, extra_masks=1, radius=0.05, convention="relative_zero_filled"
    )
    defended = ConfiguredModel(DefendedReconstructor("d", settings, TinyReconstructor()))
    gradients = {}
    for name, model in (("bpda", defended), ("unrolled", defended.with_settings(defense_gradient="unrolled"))):
        delta = torch.zeros_like(batch["masked_kspace"], requires_grad=True)
        model.reconstruct(batch, delta).pow(2).sum().backward()
        gradients[name] = delta.grad
    assert torch.isfinite(gradients["unrolled"]).all()
    assert not torch.allclose(gradients["unrolled"], gradients["bpda"])

    outcome = attack_class("unrolled_pgd")(budget=Budget(0.05, "relative_max"), steps=1)(defended, batch, targets, 0)
    assert all(outcome.kspace_delta[i].abs().max() <= outcome.eps[i] * (1 + 1e-6) for i in range(2))
    with pytest.raises(UnsupportedSettings):  # an undefended model has no purification to unroll
        attack_class("unrolled_pgd")(budget=Budget(0.05), steps=1)(
            ConfiguredModel(TinyReconstructor()), batch, targets, 0
        )


def test_the_paper_attacks_load_from_a_protocol(tmp_path):
    from smug_plugin.robustness.run.protocol import load_protocol

    protocol = tmp_path / "p.yaml"
    protocol.write_text(
        "perturbations:\n"
        "  - {name: u, kind: unsupervised_pgd}\n"
        "  - {name: h, kind: herringbone, entries: 20, budget: {value: 0.3, convention: relative_max}}\n"
        "  - {name: a, kind: unrolled_pgd, budget: {value: 0.01, convention: relative_zero_filled}, steps: 2}\n"
    )
    specs = {spec.name: spec for spec in load_protocol(protocol).perturbations}
    assert "relative_zero_filled" in specs["u"].to_dict()["budget"]["convention"]
    assert "at most 20" in specs["h"].describe() and specs["a"].describe().startswith("unrolled")
