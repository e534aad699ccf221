"""The attack classes, their registry and factory, on a toy linear reconstruction (no DIRECT engine needed)."""

import dataclasses
import pkgutil
import subprocess
import sys

import pytest
import torch
from direct.data.transforms import fft2, ifft2

from smug_plugin.operators import MultiCoilOperator
from smug_plugin.robustness import attacks
from smug_plugin.robustness.attacks import (
    ATTACKS,
    Attack,
    AttackOutcome,
    AttackSettings,
    Budget,
    Targets,
    Transfer,
    attack_class,
    build_attack,
    register_attack,
)
from smug_plugin.robustness.attacks import base as attacks_base
from smug_plugin.robustness.attacks.apgd import APGD
from smug_plugin.robustness.attacks.ball import vertex_norm
from smug_plugin.robustness.attacks.clean import Clean
from smug_plugin.robustness.attacks.gaussian import GaussianNoise
from smug_plugin.robustness.attacks.pgd import PGD
from smug_plugin.robustness.attacks.square import Square
from smug_plugin.robustness.run.protocol import PerturbationSpec, ProtocolError, load_protocol

B, C, H, W = 2, 3, 8, 6


class ToyModel:
    """A fixed random linear reconstruction with a multi-coil operator: the interface attacks see."""

    is_randomized = False

    def __init__(self, name: str = "toy", seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.name = name
        self.weight = torch.randn(H * W, C * H * W * 2, generator=g) / 20
        self.sens = torch.randn(B, C, H, W, 2, generator=g)
        self.calls = 0

    def reconstruct(self, batch, kspace_delta=None, noise_seed=None):
        self.calls += 1
        y = batch["masked_kspace"] if kspace_delta is None else batch["masked_kspace"] + kspace_delta
        return (y.reshape(y.shape[0], -1) @ self.weight.T).reshape(y.shape[0], H, W)

    def operator(self, batch):
        return MultiCoilOperator(fft2, ifft2, self.sens, batch["sampling_mask"])

    def with_reconstructor(self, reconstructor):
        return reconstructor


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(1)
    cols = torch.rand(W, generator=g) < 0.5
    cols[W // 2] = True
    mask = cols.view(1, 1, 1, W, 1).expand(B, 1, H, W, 1).clone()
    batch = {"masked_kspace": torch.randn(B, C, H, W, 2, generator=g) * mask, "sampling_mask": mask}
    model = ToyModel()
    targets = Targets(
        model.reconstruct(batch) + 0.1 * torch.randn(B, H, W, generator=g), lambda m: m.reconstruct(batch)
    )
    return model, batch, targets


def _linf(x):
    return x.flatten(1).abs().amax(1)


def _l2(x):
    return x.flatten(1).norm(dim=1)


ATTACK_CASES = {
    "clean": lambda: Clean(),
    "gaussian_linf": lambda: GaussianNoise(budget=Budget(0.05)),
    "gaussian_l2_relative": lambda: GaussianNoise(budget=Budget(0.1, "relative_l2", "l2")),
    "gaussian_image": lambda: GaussianNoise(budget=Budget(0.02), domain="image"),
    "pgd_linf": lambda: PGD(budget=Budget(0.05), steps=3),
    "pgd_l2_to_clean": lambda: PGD(budget=Budget(0.1, "relative_l2", "l2"), steps=3, target="clean"),
    "pgd_image": lambda: PGD(budget=Budget(0.5, "relative_max"), domain="image", steps=2),
    "pgd_eot_no_start": lambda: PGD(budget=Budget(0.05), steps=2, eot_samples=3, random_start=False, keep_best=False),
    "transfer": lambda: Transfer(ToyModel("source", seed=5), PGD(budget=Budget(0.05), steps=2)),
    "apgd_linf": lambda: APGD(budget=Budget(0.05), steps=3, restarts=2),
    "apgd_l2_to_clean": lambda: APGD(budget=Budget(0.1, "relative_l2", "l2"), steps=2, target="clean"),
    "square_linf": lambda: Square(budget=Budget(0.05), queries=5),
    "square_l2": lambda: Square(budget=Budget(0.1, "relative_l2", "l2"), queries=5),
    "square_image": lambda: Square(budget=Budget(0.5, "relative_max"), domain="image", queries=3),
}


@pytest.mark.parametrize("case", ATTACK_CASES)
def test_every_attack_is_called_alike_and_stays_on_acquired_entries(problem, case):
    model, batch, targets = problem
    attack = ATTACK_CASES[case]()
    outcome = attack(model, batch, targets, 7)
    assert isinstance(outcome, AttackOutcome) and len(outcome.eps) == B
    again = ATTACK_CASES[case]()(model, batch, targets, 7)
    if outcome.kspace_delta is None:
        assert case == "clean" and outcome.eps == [0.0] * B and again.kspace_delta is None
        return
    delta = outcome.kspace_delta
    assert delta.shape == batch["masked_kspace"].shape and delta.abs().sum() > 0
    assert torch.all(delta[~batch["sampling_mask"].expand_as(delta)] == 0)
    assert torch.equal(delta, again.kspace_delta)  # the seed makes it reproducible
    eps = torch.tensor(outcome.eps)
    settings = attack.settings
    if settings.domain == "kspace" and isinstance(attack, GaussianNoise):
        # Noise is not in the ball: it has the l2 norm of the ball's largest element.
        vertex = vertex_norm(eps, settings.budget.norm, batch["sampling_mask"] != 0, delta.shape)
        assert torch.allclose(_l2(delta), vertex, rtol=1e-4)
    elif settings.domain == "kspace" and settings.budget.norm == "linf":
        assert torch.all(_linf(delta) <= eps * (1 + 1e-6))
    elif settings.domain == "kspace":
        assert torch.all(_l2(delta) <= eps * (1 + 1e-5))
    if case.startswith("pgd"):
        assert outcome.objective is not None and len(outcome.history) == settings.steps + 1


def test_gaussian_noise_has_the_energy_of_the_balls_vertex(problem):
    model, batch, targets = problem
    outcome = GaussianNoise(budget=Budget(0.05))(model, batch, targets, 3)
    entries = batch["sampling_mask"].expand_as(batch["masked_kspace"]).flatten(1).sum(1)
    assert torch.allclose(_l2(outcome.kspace_delta), 0.05 * entries.sqrt(), rtol=1e-4)


def test_pgd_objective_is_that_of_the_returned_perturbation_and_beats_noise(problem):
    model, batch, targets = problem
    outcome = PGD(budget=Budget(0.05), steps=5)(model, batch, targets, 3)
    noise = GaussianNoise(budget=Budget(0.05))(model, batch, targets, 3)

    def error(delta):
        return ((model.reconstruct(batch, delta) - targets.ground_truth) ** 2).flatten(1).mean(1)

    assert torch.allclose(error(outcome.kspace_delta), torch.tensor(outcome.objective), rtol=1e-5)
    assert torch.all(error(outcome.kspace_delta) > error(noise.kspace_delta))


def test_transfer_computes_on_the_source_once_and_applies_the_same_perturbation(problem):
    model, batch, targets = problem
    source = ToyModel("source", seed=5)
    attack = Transfer(source, PGD(budget=Budget(0.05), steps=2))
    model_calls = model.calls
    first = attack(model, batch, targets, 11)
    source_calls = source.calls
    second = attack(ToyModel("other", seed=9), batch, targets, 11)
    assert source.calls == source_calls and model.calls == model_calls  # computed once, on the source only
    assert first.source == "source" and torch.equal(first.kspace_delta, second.kspace_delta)
    assert not torch.equal(attack(model, batch, targets, 12).kspace_delta, first.kspace_delta)


def test_factory_builds_the_registered_class_from_a_protocol_entry():
    spec = PerturbationSpec.from_entry({"name": "p", "kind": "pgd", "norm": "l2", "budget": 0.1, "steps": 4})
    attack = build_attack(spec.kind, spec.settings)
    assert type(attack) is PGD and attack.settings == spec.settings and attack.settings.budget.norm == "l2"
    source = ToyModel("source")
    transferred = build_attack(spec.kind, spec.settings, transfer_source=source)
    assert isinstance(transferred, Transfer) and transferred.source is source
    assert type(transferred.attack) is PGD
    assert {"clean", "gaussian", "pgd"} <= set(ATTACKS)
    with pytest.raises(
        ValueError,
        match="expected one of: apgd, clean, ensemble, gaussian, herringbone, pgd, square, unrolled_pgd, unsup",
    ):
        attack_class("fgsm")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"kind": "pgd", "budget": 0.1, "steps": -1}, "steps >= 0"),
        ({"kind": "pgd", "budget": 0.1, "steps": "3"}, "'steps' must be an integer"),
        ({"kind": "pgd", "budget": 0.1, "domain": "wavelet"}, "Unknown domain 'wavelet'"),
        ({"kind": "gaussian", "budget": 0.1, "steps": 3}, "unknown keys ['steps']"),
        ({"kind": "gaussian"}, "needs a budget"),
        ({"kind": "clean", "budget": 0.1}, "unknown keys ['budget']"),
    ],
)
def test_settings_validate_themselves(entry, message):
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]")):
        PerturbationSpec.from_entry({"name": "p", **entry})


def test_every_module_of_the_attacks_package_is_imported_and_its_attacks_registered():
    # In a fresh interpreter: this test file imports attack modules itself, which would hide a missing import.
    code = (
        "import pkgutil, sys; import smug_plugin.robustness.attacks as a; "
        "print([m.name for m in pkgutil.iter_modules(a.__path__) if f'{a.__name__}.{m.name}' not in sys.modules])"
    )
    missing = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert missing.strip() == "[]", f"not imported by smug_plugin.robustness.attacks: {missing}"
    for module in pkgutil.iter_modules(attacks.__path__):
        name = f"{attacks.__name__}.{module.name}"
        assert name in sys.modules, f"{name} is not imported by smug_plugin.robustness.attacks"
        for value in vars(sys.modules[name]).values():
            if (
                isinstance(value, type)
                and issubclass(value, Attack)
                and value.__module__ == name
                and value is not Transfer
            ):
                if not getattr(value, "__abstractmethods__", None):
                    assert ATTACKS.get(value.kind) is value


def test_a_registered_attack_is_available_to_protocols(monkeypatch, tmp_path):
    monkeypatch.setattr(attacks_base, "ATTACKS", dict(ATTACKS))

    @dataclasses.dataclass(frozen=True)
    class FlipSettings(AttackSettings):
        scale: float = 1.0

        def describe(self) -> str:
            return f"flip x{self.scale:g}"

    @register_attack
    class Flip(Attack):
        kind = "flip"
        Settings = FlipSettings

        def __call__(self, model, batch, targets, seed):
            return AttackOutcome(-self.settings.scale * batch["masked_kspace"], [0.0] * len(batch["masked_kspace"]))

    protocol = tmp_path / "flip.yaml"
    protocol.write_text("perturbations: [{name: f, kind: flip, scale: 2}]\n")
    spec = load_protocol(protocol).perturbations[0]
    assert spec.describe() == "flip x2" and spec.to_dict()["scale"] == 2
    assert isinstance(spec.attack({}), Flip)
