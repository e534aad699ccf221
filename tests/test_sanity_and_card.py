"""Sanity checks and robustness cards from records: each check fires on a model built to fail it, and passes on
MoDL (SMUG for the EOT check); the card validates against its schema."""

import copy

import pytest
import torch
from attack_models import (
    HardThresholdModel,
    NetworkModel,
    NoisyGradientModel,
    ZeroGradientModel,
    tiny_batch,
    tiny_modl,
    tiny_smug,
)

from smug_plugin.provenance import package_versions
from smug_plugin.robustness.attacks import Targets
from smug_plugin.robustness.metrics import psnr_per_slice, robustness_errors, slice_metrics
from smug_plugin.robustness.reports.card import CARD_SCHEMA, build_card, card_markdown, schema_errors
from smug_plugin.robustness.reports.sanity import CHECKS, sanity_checks
from smug_plugin.robustness.run.loop import Measurement, scale_stability
from smug_plugin.robustness.run.protocol import PerturbationSpec

BUDGETS = (0.1, 0.4)  # the budget sweep; the ensemble's own budget 0.2 lies between
SUITE = {
    "name": "auto",
    "kind": "ensemble",
    "budget": 0.2,
    "members": [
        {"name": "noise", "kind": "gaussian"},
        {"name": "pgd", "kind": "pgd", "steps": 3},
        {"name": "apgd", "kind": "apgd", "steps": 3, "eot_samples": 2},
        {"name": "square", "kind": "square", "queries": 6},
        {"name": "transfer", "kind": "pgd", "steps": 3, "transfer_from": "each"},
    ],
}


class DetectorModel(NetworkModel):
    """MoDL that reconstructs the acquired k-space instead when a perturbation exceeds 0.15 per entry: larger
    budgets do less damage."""

    def reconstruct(self, batch, kspace_delta=None, noise_seed=None):
        if kspace_delta is not None:
            large = kspace_delta.flatten(1).abs().amax(1) > 0.15
            kspace_delta = torch.where(large.view(-1, 1, 1, 1, 1), torch.zeros_like(kspace_delta), kspace_delta)
        return super().reconstruct(batch, kspace_delta, noise_seed)


class NonFiniteGradientModel(NetworkModel):
    """MoDL plus 0 x sqrt|delta|: the same outputs, NaN gradients where an entry of the perturbation is zero."""

    def reconstruct(self, batch, kspace_delta=None, noise_seed=None):
        output = super().reconstruct(batch, kspace_delta, noise_seed)
        if kspace_delta is None:
            return output
        return output + 0 * kspace_delta.abs().sqrt().flatten(1).sum(1).view(-1, 1, 1)


def evaluate(models: dict, target: str, budgets: tuple[float, ...] = BUDGETS) -> tuple[list[dict], dict]:
    """Records, as `smug evaluate` writes them, of ``models[target]`` under the suite at its budget and the budget
    sweep over ``budgets``, and the protocol as robustness.json states it (transfers expanded to the models)."""
    batch, targets = tiny_batch(batch=3, seed=7)
    targets = Targets(targets.ground_truth, psnr=lambda output: psnr_per_slice(targets.ground_truth, output))
    spec = PerturbationSpec.from_entry(SUITE).with_sources(list(models))[0]
    model = models[target]
    with torch.no_grad():
        clean = model.reconstruct(batch)
    records = [
        {"condition": "main/clean", "group": "main", "sweep_value": None, "perturbation": "clean", "model": target}
        | {"file": "volume.h5", "slice": i, "eps": 0.0, "eps_paper": None, **metrics}
        for i, metrics in enumerate(slice_metrics(targets.ground_truth, clean))
    ]
    for condition, value in (("main", None), *((f"budget={b:g}", b) for b in budgets)):
        swept = spec if value is None else spec.with_budget(value)
        outcome = swept.attack(models)(model, batch, targets, 11)
        with torch.no_grad():
            output = model.reconstruct(batch, outcome.kspace_delta, noise_seed=11)
        metrics = slice_metrics(targets.ground_truth, output)
        errors = robustness_errors(output, clean, outcome.kspace_delta, batch["masked_kspace"])
        stability = scale_stability(Measurement(outcome, output, clean, outcome.kspace_delta, 0.0), "fixed")
        for i in range(3):
            records.append(
                {
                    "condition": f"{condition}/auto",
                    "group": condition.split("=")[0],
                    "sweep_value": value,
                    "perturbation": "auto",
                    "model": target,
                    "file": "volume.h5",
                    "slice": i,
                    **outcome.facts(i),
                    "eps_paper": None,
                    **metrics[i],
                    **errors[i],
                    **stability[i],
                }
            )
    protocol = {
        "name": "suite",
        "seed": 0,
        "perturbations": [{"name": "clean", "kind": "clean", "family": "none", "description": "clean"}, spec.to_dict()],
        "sweeps": {"budget": {"perturbation": "auto", "values": list(budgets)}} if budgets else {},
    }
    return records, protocol


def verdicts(models: dict, target: str, budgets: tuple[float, ...] = ()) -> dict[str, str]:
    """The verdict of every check on ``target`` (without a budget sweep unless ``budgets`` are given)."""
    records, protocol = evaluate(models, target, budgets)
    return {
        c["check"]: c["models"].get(target, {"verdict": "n/a"})["verdict"] for c in sanity_checks(records, protocol)
    }


def test_every_check_passes_on_modl_and_the_eot_check_on_smug():
    found = verdicts({"modl": tiny_modl(0), "other": tiny_modl(1)}, "modl", BUDGETS)
    # The tiny networks have no input-dependent normalisation: the scale check does not apply to them.
    assert found == {check: "pass" for check in CHECKS} | {"eot_converges": "n/a", "scale_steady": "n/a"}
    smug = verdicts({"smug": tiny_smug(0), "other": tiny_modl(1)}, "smug")
    assert smug["eot_converges"] == "pass" and smug["objective_rises"] == "pass"


def test_a_zeroed_gradient_fires_the_gradient_checks():
    modl = tiny_modl(0)
    found = verdicts({"masked": ZeroGradientModel(modl.network, "masked"), "modl": modl}, "masked")
    for check in (
        "objective_rises",
        "white_box_vs_transfer",
        "attack_vs_noise",
        "gradient_free_vs_gradient",
        "gradients_finite_nonzero",
    ):
        assert found[check] == "warn", (check, found)


def test_a_hard_threshold_fires_the_masking_checks():
    modl = tiny_modl(0)
    found = verdicts({"threshold": HardThresholdModel(modl.network, "threshold"), "modl": modl}, "threshold")
    for check in ("objective_rises", "gradient_free_vs_gradient", "gradients_finite_nonzero"):
        assert found[check] == "warn", (check, found)


def test_a_detector_fires_the_budget_check():
    modl = tiny_modl(0)
    found = verdicts({"detector": DetectorModel(modl.network, "detector"), "modl": modl}, "detector", BUDGETS)
    assert found["budget_monotone"] == "warn"


def test_noisy_gradients_fire_the_eot_check():
    modl = tiny_modl(0)
    found = verdicts({"noisy": NoisyGradientModel(modl.network, "noisy"), "modl": modl}, "noisy")
    assert found["eot_converges"] == "warn"


def test_non_finite_gradients_are_detected():
    modl = tiny_modl(0)
    found = verdicts({"nan": NonFiniteGradientModel(modl.network, "nan"), "modl": modl}, "nan")
    assert found["gradients_finite_nonzero"] == "warn"


@pytest.fixture(scope="module")
def document() -> dict:
    """A robustness.json document of MoDL under the suite."""
    records, protocol = evaluate({"modl": tiny_modl(0), "other": tiny_modl(1)}, "modl")
    return {
        "protocol": protocol,
        "records": records,
        "models": [{"name": "modl", "model_name": "smug.modl.MoDL", "config": "c.yaml", "checkpoint": "m.pt"}],
        "run": {"data_root": "data", "seed": 0, "protocol_seed": 0, "masking": {"name": "FastMRIRandom"}},
        "versions": package_versions(),
        "sanity": sanity_checks(records, protocol),
        "data_issues": [],
    }


def test_the_card_validates_and_states_the_worst_case(document):
    card = build_card(document, "modl")
    assert schema_errors(card, CARD_SCHEMA) == []
    main = [r for r in document["records"] if r["condition"] == "main/auto"]
    assert card["metrics"]["worst_case"]["psnr"]["mean"] == pytest.approx(sum(r["psnr"] for r in main) / 3)
    assert card["metrics"]["clean"]["psnr"]["n"] == 3 and card["metrics"]["noise"] is None
    assert card["worst_slice"]["psnr"] == min(r["psnr"] for r in main)
    assert card["budget"]["absolute"]["max"] == pytest.approx(0.2) and card["budget"]["paper"] is None
    assert card["budget"]["relative_l2"]["mean"] > 0
    assert [m["name"] for m in card["attack"]["members"]][-2:] == ["transfer@modl", "transfer@other"]
    assert sum(card["winners"].values()) == 3
    assert {s["check"]: s["verdict"] for s in card["sanity"]}["objective_rises"] == "pass"
    markdown = card_markdown(card)
    assert (
        markdown.startswith("# Robustness card: modl") and "relative l2" in markdown and "| apgd | apgd |" in markdown
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda card: card.pop("budget"), "card: missing 'budget'"),
        (lambda card: card["metrics"]["clean"]["psnr"].update(mean="high"), "card.metrics.clean.psnr.mean"),
        (lambda card: card.update(card_version=1), "card.card_version: 1 is not one of [2]"),
        (lambda card: card["sanity"][0].update(verdict="ok"), "is not one of ['pass', 'warn', 'n/a']"),
        (lambda card: card["data"].update(slices=-1), "below the minimum"),
        (lambda card: card["model"].update(colour="red"), "card.model: unexpected 'colour'"),
    ],
)
def test_a_card_that_breaks_the_schema_is_named(document, change, message):
    card = copy.deepcopy(build_card(document, "modl"))
    change(card)
    assert any(message in error for error in schema_errors(card, CARD_SCHEMA)), schema_errors(card, CARD_SCHEMA)
