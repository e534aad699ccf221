"""The papers' units on the attack side: `paper` budgets (eps = value x s_ref per slice), the slices' intensity scale
in every record and report, and PGD with the published code's gradient."""

import json
import pathlib

import pytest
import torch
import yaml
from conftest import PROJECTS_DIR, restored_logging_and_threads
from direct.data.transforms import fft2, ifft2
from robustness_fixtures import loaded_setup, make_setup

from smug_plugin.cli.main import main
from smug_plugin.operators import MultiCoilOperator, apply_mask
from smug_plugin.robustness.attacks import Budget, Targets
from smug_plugin.robustness.attacks.gaussian import GaussianNoise
from smug_plugin.robustness.attacks.pgd import PGD
from smug_plugin.robustness.reconstructors.direct_engines import ModelSpec, load_reconstructor, save_fresh_checkpoint
from smug_plugin.robustness.reconstructors.interface import (
    ConfiguredModel,
    PluginReconstructor,
    TestTimeSettings,
    UnsupportedSettings,
)
from smug_plugin.robustness.run.batches import build_dataset, iterate_batches, load_batch, reference_scale
from smug_plugin.robustness.run.loop import CleanReconstructions, Evaluator, RunSettings
from smug_plugin.robustness.run.protocol import load_protocol

# Two slices whose complex images have max(|Re|, |Im|) = 3 (a real entry) and 5 (an imaginary one).
SCALES = [3.0, 5.0]


class OneCoilModel:
    """The attack interface on a single coil with a unit sensitivity map: A^H y is the image itself."""

    name = "one-coil"
    is_randomized = False

    def reconstruct(self, batch, kspace_delta=None, noise_seed=None):
        kspace = batch["masked_kspace"] if kspace_delta is None else batch["masked_kspace"] + kspace_delta
        return self.operator(batch).adjoint(kspace).norm(dim=-1)

    def operator(self, batch):
        maps = torch.zeros_like(batch["kspace"])
        maps[..., 0] = 1
        return MultiCoilOperator(fft2, ifft2, maps, batch["sampling_mask"])


@pytest.fixture
def hand_checkable():
    image = torch.zeros(2, 6, 4, 2)
    image[0, 1, 1, 0], image[0, 2, 2, 1] = 3.0, -2.0
    image[1, 3, 1, 1], image[1, 0, 0, 0] = -5.0, 4.0
    kspace = fft2(image.unsqueeze(1), dim=(2, 3))
    mask = torch.zeros(2, 1, 6, 4, 1, dtype=torch.bool)
    mask[..., ::2, :] = True
    batch = {"kspace": kspace, "masked_kspace": apply_mask(kspace, mask), "sampling_mask": mask}
    return OneCoilModel(), batch


def test_paper_budget_resolves_to_value_times_each_slices_reference_scale(hand_checkable):
    model, batch = hand_checkable
    scale = reference_scale(model, batch)
    assert torch.allclose(scale, torch.tensor(SCALES), rtol=1e-6)
    budget = Budget(0.02, "paper")
    expected = torch.tensor([0.06, 0.1])
    signal, support = batch["masked_kspace"], batch["sampling_mask"]
    assert torch.allclose(budget.resolve(signal, support, scale), expected)
    # Image-domain budgets in paper units are the same fraction of s_ref, per real/imaginary image entry.
    targets = Targets(model.reconstruct(batch), None, scale)
    for attack in (GaussianNoise(budget=budget), PGD(budget=budget, steps=2), PGD(budget=budget, domain="image")):
        assert torch.allclose(torch.tensor(attack(model, batch, targets, seed=3).eps), expected)
    delta = PGD(budget=budget, steps=2)(model, batch, targets, seed=3).kspace_delta
    assert torch.allclose(delta.flatten(1).abs().amax(dim=1), expected)  # sign steps end on the ball's surface
    with pytest.raises(ValueError, match="needs the fully sampled k-space.*convention: absolute"):
        budget.resolve(signal, support)


def test_the_reference_scale_needs_fully_sampled_kspace(hand_checkable):
    model, batch = hand_checkable
    assert reference_scale(model, {key: batch[key] for key in ("masked_kspace", "sampling_mask")}) is None
    # Undersampled k-space read as if fully sampled: zero wherever the mask is.
    assert reference_scale(model, {**batch, "kspace": batch["masked_kspace"]}) is None
    # A slice without signal has nothing to be undersampled; its scale is 1 (units.intensity_scale).
    blank = {key: value.clone() for key, value in batch.items()}
    blank["kspace"][1], blank["masked_kspace"][1] = 0, 0
    assert reference_scale(model, blank).tolist() == pytest.approx([3.0, 1.0])


def _paper_units_smug(root: pathlib.Path, intensity_scale: str) -> pathlib.Path:
    """A small YAML of projects/demo/smug.yaml (its data pipeline, masks and normalisation) in the given units."""
    cfg = yaml.safe_load((PROJECTS_DIR / "demo" / "smug.yaml").read_text())
    cfg["model"].update(
        denoiser_checkpoint=None,
        intensity_scale=intensity_scale,
        clamp_noisy_input=False,
        num_steps=2,
        num_samples=2,
        cg_iters=4,
        denoiser_hidden_channels=4,
        sigma=0.05,
    )
    path = root / intensity_scale / "smug.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def scaled_batches(tmp_path_factory):
    """The two models, the key and first batch of phantom data, and the batch with its k-spaces and target times c."""
    root = tmp_path_factory.mktemp("units_attacks")
    data = make_setup(root, models=())["data"]
    models = {}
    with restored_logging_and_threads():
        for units in ("paper", "direct"):
            cfg = _paper_units_smug(root, units)
            checkpoint = save_fresh_checkpoint(cfg, cfg.parent, seed=1)
            models[units] = load_reconstructor(ModelSpec.parse(f"{units}={cfg}:{checkpoint}"), "cpu", root / "logs")
    dataset = build_dataset(models["paper"], data, None, None)
    models["direct"].use_dimensionality(dataset.ndim)
    key, indices = next(iterate_batches(models["paper"], dataset, 2, None))
    batch = load_batch(dataset, indices, "cpu")

    def scaled(c: float) -> dict:
        return {**batch, **{name: c * batch[name] for name in ("masked_kspace", "kspace", "target")}}

    return models, key, batch, scaled, root


# PSNR tolerance (dB) per factor c. A power of two is exact in binary floating point: every operation of the chain
# (FFTs, the division by s, noise of std sigma s, the sign steps of PGD, fastMRI's PSNR with the target's peak)
# commutes with it, so a scale-equivariant model gives bit-identical PSNRs. Another c rounds differently in float32
# (~1e-7 relative per operation), about 1e-6 dB in the PSNR here; 1e-4 dB leaves room for a PGD sign step that
# flips where a gradient entry is near zero, and is still far below any effect of the units (> 0.01 dB below).
TOLERANCE_DB = {4.0: 0.0, 3.0: 1e-4}

UNITS_PROTOCOL = """
perturbations:
  - {name: clean, kind: clean}
  - {name: noise, kind: gaussian, budget: {value: 0.02, convention: paper}}
  - {name: pgd, kind: pgd, budget: {value: 0.02, convention: paper}, steps: 2}
"""


def _records(model, protocol_path, key, batch, root) -> dict:
    """Per-slice records of every condition of the protocol on ``batch``, as the evaluation loop makes them."""
    evaluator = Evaluator([model], load_protocol(protocol_path), RunSettings(root, root / "out", seed=0))
    scale = evaluator.reference_scale(batch)
    cleans = CleanReconstructions(batch, 0, "default", key)
    records = {}
    for condition in evaluator.protocol.conditions():
        unit_records, _ = evaluator.evaluate_unit(("default", condition.id, key), condition, batch, cleans, scale)
        records.update({(r["perturbation"], r["slice"]): r for r in unit_records})
    return records


def test_a_scale_equivariant_model_gives_the_same_psnr_under_the_same_paper_unit_attack(scaled_batches):
    models, key, batch, scaled, root = scaled_batches
    assert torch.equal(apply_mask(batch["kspace"], batch["sampling_mask"]), batch["masked_kspace"])  # same units
    protocol = root / "units.yaml"
    protocol.write_text(UNITS_PROTOCOL)
    plain = _records(models["paper"], protocol, key, batch, root)
    assert plain[("pgd", 0)]["psnr"] < plain[("clean", 0)]["psnr"]  # the attack did something
    for c, tolerance in TOLERANCE_DB.items():
        times_c = _records(models["paper"], protocol, key, scaled(c), root)
        assert plain.keys() == times_c.keys() and len(plain) == 3 * 2
        for name, record in plain.items():
            assert abs(times_c[name]["psnr"] - record["psnr"]) <= tolerance, (c, name)
            assert times_c[name]["intensity_scale"] == pytest.approx(c * record["intensity_scale"], rel=1e-6)
            assert times_c[name]["eps"] == pytest.approx(c * record["eps"], rel=1e-6)
    # The same attack on a model in DIRECT's units (not scale-equivariant) is not invariant: the test can fail.
    protocol.write_text("perturbations: [{name: clean, kind: clean}]\n")
    direct = _records(models["direct"], protocol, key, batch, root)
    direct_times_c = _records(models["direct"], protocol, key, scaled(4.0), root)
    assert any(abs(direct[k]["psnr"] - direct_times_c[k]["psnr"]) > 0.01 for k in direct)


def test_paper_unit_records_hold_the_intensity_scale_and_eps_in_both_units(scaled_batches):
    models, key, batch, _, root = scaled_batches
    protocol = root / "units_records.yaml"
    protocol.write_text(UNITS_PROTOCOL)
    records = _records(models["paper"], protocol, key, batch, root)
    scale = reference_scale(models["paper"], batch)
    for (perturbation, _), record in records.items():
        s = scale[batch["slice_no"].tolist().index(record["slice"])].item()
        assert record["intensity_scale"] == s and s > 1  # DIRECT's units: the image maximum is several units
        if perturbation == "clean":
            assert record["eps"] == 0 and record["eps_paper"] == 0
        else:
            assert record["eps"] == pytest.approx(0.02 * s, rel=1e-6)
            assert record["eps_paper"] == pytest.approx(0.02, rel=1e-6)
    # Undersampled k-space in the batch: the evaluation stops before any attack, naming the file and the fix.
    evaluator = Evaluator([models["paper"]], load_protocol(protocol), RunSettings(root, root / "out", seed=0))
    undersampled = {**batch, "kspace": batch["masked_kspace"]}
    with pytest.raises(ValueError, match=f"{batch['filename'][0]} holds no fully sampled k-space.*absolute"):
        evaluator.reference_scale(undersampled)


@pytest.fixture(scope="module")
def plugin_and_native(tmp_path_factory):
    with restored_logging_and_threads():
        return loaded_setup(tmp_path_factory.mktemp("published_gradient"), ("varnet", "smug"))


def test_the_published_gradient_differs_from_the_full_one_on_a_plugin_model_and_is_na_for_a_native_one(
    plugin_and_native, monkeypatch, tmp_path
):
    models, batch = plugin_and_native
    budget = Budget(0.05)
    targets = Targets(batch["target"])
    outcomes = {}
    for gradient in ("full", "published"):
        attack = PGD(budget=budget, steps=1, random_start=False, keep_best=False, gradient=gradient)
        outcomes[gradient] = attack(ConfiguredModel(models["smug"]), batch, targets, seed=5)
    full, published = outcomes["full"], outcomes["published"]
    # Forward values are the same either way (the objective at the start); only the gradient differs.
    assert torch.equal(full.history[0], published.history[0])
    assert not torch.equal(full.kspace_delta, published.kspace_delta)
    attack = PGD(budget=budget, steps=1, gradient="published")
    with pytest.raises(UnsupportedSettings, match="varnet.*attack_gradient"):
        attack(ConfiguredModel(models["varnet"]), batch, targets, seed=5)
    assert "published gradient" in attack.settings.describe() and "DIRECT-native models n/a" in (
        attack.settings.describe()
    )
    # In the loop: the native model's cell is n/a, and the plugin model's attacked k-space is evaluated under the
    # condition's own settings.
    settings_seen = []
    original = PluginReconstructor.reconstruct

    def spy(self, batch, kspace_delta, settings):
        settings_seen.append((torch.is_grad_enabled(), settings.attack_gradient))
        return original(self, batch, kspace_delta, settings)

    monkeypatch.setattr(PluginReconstructor, "reconstruct", spy)
    protocol = tmp_path / "published.yaml"
    protocol.write_text("perturbations: [{name: pgd_pub, kind: pgd, budget: 0.05, steps: 1, gradient: published}]")
    settings = RunSettings(tmp_path, tmp_path / "out", seed=0)
    evaluator = Evaluator(list(models.values()), load_protocol(protocol), settings)
    [condition] = evaluator.protocol.conditions()
    cleans = CleanReconstructions(batch, 0, "default", "0-1")
    records, _ = evaluator.evaluate_unit(("default", condition.id, "0-1"), condition, batch, cleans, None)
    assert {r["model"] for r in records} == {"smug"}
    assert ("published" in {g for _, g in settings_seen}) and settings_seen[-1] == (False, None)


def test_reports_state_paper_budgets_with_their_direct_unit_equivalent(tmp_path):
    with restored_logging_and_threads():
        setup = make_setup(tmp_path, ("varnet", "smug"))
    protocol = tmp_path / "report.yaml"
    protocol.write_text(
        "perturbations:\n"
        "  - {name: clean, kind: clean}\n"
        "  - {name: noise, kind: gaussian, budget: {value: 0.02, convention: paper}}\n"
        "  - {name: pgd_published, kind: pgd, budget: {value: 0.02, convention: paper}, steps: 1,\n"
        "     gradient: published}\n"
    )
    models = sum([["--model", spec] for spec in setup["specs"]], [])
    out = tmp_path / "out"
    args = [*models, "--protocol", str(protocol), "--data-root", str(setup["data"]), "--output-dir", str(out)]
    with restored_logging_and_threads():
        assert main(["evaluate", *args, "--max-slices", "2", "--batch-size", "2", "--no-progress"]) == 0
    doc = json.loads((out / "robustness.json").read_text())
    noise = doc["budget_equivalents"]["noise"]
    scales = [r["intensity_scale"] for r in doc["records"] if r["perturbation"] == "noise"]
    assert noise["n_slices"] == 2 and noise["eps_paper_mean"] == pytest.approx(0.02, rel=1e-6)
    assert noise["eps_min"] == pytest.approx(0.02 * min(scales), rel=1e-6)
    assert noise["eps_max"] == pytest.approx(0.02 * max(scales), rel=1e-6)
    md = (out / "robustness.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("- **noise**"))
    assert "paper units: x s_ref" in line and "in DIRECT's normalised units" in line
    assert f"{noise['eps_min']:.3g}-{noise['eps_max']:.3g}" in line
    assert "| varnet |" in md and "n/a" in md.split("| varnet |")[1].splitlines()[0]  # pgd_published: n/a
    rows = {(r["perturbation"], r["model"]): r for r in doc["summary"]}
    assert rows[("pgd_published", "varnet")]["status"] == "n/a" and rows[("pgd_published", "smug")]["status"] == "ok"


def test_test_time_settings_carry_the_attack_gradient_to_the_plugin_network(plugin_and_native):
    models, batch = plugin_and_native
    smug = models["smug"]
    delta = torch.zeros_like(batch["masked_kspace"], requires_grad=True)
    gradients = {}
    for gradient in ("full", "published"):
        output = smug.reconstruct(batch, delta, TestTimeSettings(noise_seed=2, attack_gradient=gradient))
        (gradients[gradient],) = torch.autograd.grad(output.sum(), delta)
    assert not torch.allclose(gradients["full"], gradients["published"])
    assert smug.module.attack_gradient == "full"  # restored after the call
