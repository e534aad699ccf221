"""Adversarial training (``model.adversarial_training_*``): the evaluation's k-space PGD on a share of the training
batches, under the evaluation's threat model, with the training loss taken on the attacked batch."""

import pytest
import torch
from conftest import PROJECTS_DIR, direct_command, run_command, shrink_project
from direct.data.transforms import fft2, ifft2
from direct.utils.events import EventStorage
from test_units_engines import DENOISER, batch, engine

from smug_plugin.models.config import MoDLConfig
from smug_plugin.models.modl import MoDL
from smug_plugin.models.smug_engine import MoDLEngine
from smug_plugin.operators import MultiCoilOperator
from smug_plugin.robustness.attacks.pgd import PGD
from smug_plugin.robustness.validation import AdversarialTraining
from smug_plugin.units import reference_intensity_scale

BUDGET = 0.05  # large enough on the tiny data that 3 steps change the loss clearly


def modl_engine(units: str = "direct", **adversarial) -> MoDLEngine:
    """A tiny MoDL engine in training mode (the same weights for every call), ``adversarial`` as YAML keys."""
    model_cfg = MoDLConfig(model_name="smug.modl.MoDL", num_steps=2, cg_iters=3, intensity_scale=units, **DENOISER)
    for key, value in adversarial.items():
        setattr(model_cfg, f"adversarial_training_{key}", value)
    modl = engine(MoDLEngine, MoDL, model_cfg, ["l2_loss"])
    modl.ndim = 2  # set by DIRECT's training loop from the data
    modl.model.train()
    return modl


def training_batch() -> dict[str, torch.Tensor]:
    data = batch()
    operator = MultiCoilOperator(fft2, ifft2, data["sensitivity_map"], data["sampling_mask"])
    data["target"] = torch.linalg.vector_norm(operator.coil_combine(data["kspace"]), dim=-1)
    return data


def step(modl: MoDLEngine, data: dict, iteration: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DIRECT's training iteration (forward, loss, backward) at DIRECT's iteration index: loss and gradients."""
    modl.model.zero_grad(set_to_none=True)
    with EventStorage(iteration):
        output = modl._do_iteration({k: v.clone() for k, v in data.items()}, modl.build_loss())
    grads = {name: p.grad.clone() for name, p in modl.model.named_parameters() if p.grad is not None}
    return output.data_dict["l2_loss"], grads


def recorded_attacks(modl: MoDLEngine) -> list[torch.Tensor]:
    """The attacked k-spaces the engine computes from now on."""
    seen = []
    original = modl._attacked_kspace

    def recording(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    modl._attacked_kspace = recording
    return seen


def test_the_adversarial_step_takes_the_loss_on_the_attacked_batch_and_no_gradient_of_the_attack():
    data = training_batch()
    clean_loss, _ = step(modl_engine(), data)
    adversarial = modl_engine(budget=BUDGET, steps=3)
    attacked = recorded_attacks(adversarial)
    adversarial_loss, adversarial_grads = step(adversarial, data)
    # The same weights: PGD raised the training loss of the batch.
    assert adversarial_loss > 1.05 * clean_loss, (adversarial_loss, clean_loss)
    # The gradients are exactly those of the plain step on the attacked k-space: the ascent's own backward passes
    # left nothing in the parameters' gradients.
    [attacked_kspace] = attacked
    _, expected = step(modl_engine(), {**data, "masked_kspace": attacked_kspace})
    assert adversarial_grads.keys() == expected.keys() and adversarial_grads
    assert all(torch.equal(adversarial_grads[name], expected[name]) for name in expected)


@pytest.mark.parametrize(
    "norm, convention", [("linf", "absolute"), ("linf", "paper"), ("l2", "absolute"), ("l2", "relative_zero_filled")]
)
def test_the_perturbation_stays_in_its_ball_on_the_acquired_entries(norm, convention):
    data = training_batch()
    modl = modl_engine(budget=BUDGET if norm == "linf" else 2.0, convention=convention, norm=norm, steps=3)
    attacked = recorded_attacks(modl)
    step(modl, data)
    [attacked_kspace] = attacked
    delta = attacked_kspace - data["masked_kspace"]
    mask = data["sampling_mask"].expand_as(delta) != 0
    assert torch.count_nonzero(delta[~mask]) == 0
    assert torch.count_nonzero(delta[mask]) > 0.9 * mask.sum()
    settings = modl._adversarial_training
    if convention == "paper":
        eps = settings.budget * reference_intensity_scale(modl._complex_target(data))
    elif convention == "relative_zero_filled":
        operator = modl.model.operator(data["sampling_mask"], data["sensitivity_map"])
        zero_filled = operator.adjoint(data["masked_kspace"])
        eps = settings.budget * zero_filled.norm(dim=-1).flatten(1).amax(1)
    else:
        eps = torch.full((2,), settings.budget)
    size = delta.flatten(1).abs().amax(1) if norm == "linf" else delta.flatten(1).norm(dim=1)
    assert torch.all(size <= eps * (1 + 1e-5)), (size, eps)
    assert torch.all(size >= 0.5 * eps)  # the attack used its ball (three steps of a third from a random start)


def test_the_networks_scale_is_held_at_its_clean_value_during_the_attack_and_the_loss(monkeypatch):
    data = training_batch()
    modl = modl_engine("paper", budget=BUDGET, convention="paper", steps=2)
    clean = MoDL.input_scale(
        modl.model, modl.model.operator(data["sampling_mask"], data["sensitivity_map"]).adjoint(data["masked_kspace"])
    )
    seen = []
    original = MoDL.input_scale

    def recorded(network, adjoint):
        seen.append(original(network, adjoint).detach().clone())
        return seen[-1]

    monkeypatch.setattr(MoDL, "input_scale", recorded)
    step(modl, data)
    assert len(seen) >= 4  # 2 ascent steps, the final score, the training forward
    assert all(torch.equal(scale, clean) for scale in seen)


def test_off_the_training_step_is_the_plain_one(monkeypatch):
    def no_attack(*args, **kwargs):
        raise AssertionError("PGD ran with adversarial training off")

    monkeypatch.setattr(PGD, "__call__", no_attack)
    data = training_batch()
    plain = modl_engine()
    # Outside DIRECT's training loop (no event storage) the forward is the network's own output, bit for bit.
    output, _ = plain.forward_function(dict(data))
    expected = plain.model(data["masked_kspace"], data["sampling_mask"], data["sensitivity_map"])
    assert torch.equal(output, expected)
    reference_loss, reference_grads = step(plain, data)
    for off in ({"budget": 0.0, "share": 0.5}, {"budget": BUDGET, "share": 0.0}):
        loss, grads = step(modl_engine(**off), data)
        assert torch.equal(loss, reference_loss)
        assert grads.keys() == reference_grads.keys()
        assert all(torch.equal(grads[name], reference_grads[name]) for name in grads)


@pytest.mark.parametrize("share, attacked", [(0.5, [1, 3, 5, 7]), (0.25, [3, 7]), (1.0, list(range(8))), (0.0, [])])
def test_the_attacked_batches_are_an_even_deterministic_share_of_the_iterations(share, attacked):
    settings = AdversarialTraining(budget=0.02, share=share)
    assert [i for i in range(8) if settings.attacks(i)] == attacked
    # 0.3 exactly: 3 of every 10 iterations, however far the run goes (no rounding drift).
    assert sum(AdversarialTraining(budget=0.02, share=0.3).attacks(i) for i in range(10_000)) == 3000


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"share": 1.5}, "adversarial_training_share"),
        ({"share": -0.1}, "adversarial_training_share"),
        ({"steps": -1}, "adversarial_training_steps"),
        ({"budget": -0.02}, "adversarial_training_budget"),
        ({"step_fraction": 0.0}, "adversarial_training_step_fraction"),
        ({"convention": "percent"}, "adversarial_training_convention"),
        ({"norm": "l1"}, "adversarial_training_norm"),
        ({"convention": "relative_l2", "norm": "linf"}, "adversarial_training_convention"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(settings, key):
    with pytest.raises(ValueError) as raised:
        AdversarialTraining(budget=settings.pop("budget", 0.02), **settings)
    message = str(raised.value)
    assert key in message and "\n" not in message, message


def test_the_settings_come_from_the_model_section():
    modl = modl_engine(budget=0.02, convention="paper", norm="l2", steps=7, share=0.5, random_start=False, seed=3)
    assert modl._adversarial_training == AdversarialTraining(
        budget=0.02, convention="paper", norm="l2", steps=7, share=0.5, random_start=False, seed=3
    )
    assert not modl_engine()._adversarial_training.enabled


ADVERSARIAL_KEYS = {
    "denoiser_checkpoint": None,
    "adversarial_training_budget": 0.02,
    "adversarial_training_convention": "paper",
    "adversarial_training_steps": 2,
    "adversarial_training_share": 0.5,
}


def direct_train(cfg, data, cwd):
    roots = ["--training-root", str(data / "train"), "--validation-root", str(data / "val")]
    command = direct_command("train", str(cwd / "runs"), "--cfg", str(cfg), *roots, "--device", "cpu")
    return run_command([*command, "--num-workers", "0"], cwd=cwd)


@pytest.mark.e2e
def test_direct_train_trains_adversarially(tiny_demo_data, tmp_path):
    cfg = shrink_project(
        PROJECTS_DIR / "demo" / "modl.yaml", tmp_path / "modl_adv.yaml", model_overrides=ADVERSARIAL_KEYS
    )
    result = direct_train(cfg, tiny_demo_data, tmp_path)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "Adversarial training: pgd kspace linf eps=0.02 (paper units" in result.stdout
    assert "on 0.5 of the training batches" in result.stdout
    assert (tmp_path / "runs" / "modl_adv" / "model_5.pt").is_file()


@pytest.mark.e2e
@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"adversarial_training_share": 1.5}, "adversarial_training_share"),
        ({"adversarial_training_steps": -1}, "adversarial_training_steps"),
        ({"adversarial_training_convention": "percent"}, "adversarial_training_convention"),
    ],
)
def test_direct_train_reports_a_bad_adversarial_setting_in_one_line(tiny_demo_data, tmp_path, overrides, key):
    cfg = shrink_project(
        PROJECTS_DIR / "demo" / "modl.yaml", tmp_path / "modl.yaml", model_overrides={**ADVERSARIAL_KEYS, **overrides}
    )
    result = direct_train(cfg, tiny_demo_data, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("direct: error: ") and key in last, last


def test_the_yaml_keys_default_to_the_settings_defaults() -> None:
    # The `model:` keys (DIRECT's dataclass config) and AdversarialTraining both declare the defaults: they must agree,
    # or a YAML without the keys and a direct AdversarialTraining() would attack differently.
    from dataclasses import fields

    settings = {field.name: field.default for field in fields(AdversarialTraining)}
    yaml_keys = {
        field.name.removeprefix("adversarial_training_"): field.default
        for field in fields(MoDLConfig)
        if field.name.startswith("adversarial_training_")
    }
    assert yaml_keys == settings
    assert AdversarialTraining.of_model(MoDLConfig(model_name="smug.modl.MoDL")) == AdversarialTraining()
