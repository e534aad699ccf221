"""The ensemble: per slice the worst case over its members, the members in protocols, and `smug evaluate` with it."""

import json
import pathlib

import pytest
import torch
from attack_models import tiny_batch, tiny_modl
from robustness_fixtures import make_setup

from smug_plugin.cli.main import main
from smug_plugin.robustness.attacks import Budget, Targets
from smug_plugin.robustness.attacks.apgd import APGD
from smug_plugin.robustness.attacks.ensemble import Ensemble
from smug_plugin.robustness.attacks.gaussian import GaussianNoise
from smug_plugin.robustness.attacks.pgd import PGD
from smug_plugin.robustness.attacks.square import Square
from smug_plugin.robustness.metrics import psnr_per_slice
from smug_plugin.robustness.run.protocol import PerturbationSpec, ProtocolError, load_protocol
from smug_plugin.robustness.seeds import derive_seed

BUDGET = Budget(0.2)
MEMBERS = {
    "noise": lambda: GaussianNoise(budget=BUDGET),
    "pgd": lambda: PGD(budget=BUDGET, steps=2),
    "square": lambda: Square(budget=BUDGET, queries=6),
    "apgd": lambda: APGD(budget=BUDGET, steps=2),
}


def _psnr_targets(model, batch, targets) -> Targets:
    return Targets(targets.ground_truth, psnr=lambda output: psnr_per_slice(targets.ground_truth, output))


def _ensemble(*names: str) -> Ensemble:
    return Ensemble(members=tuple((name, MEMBERS[name]()) for name in names), budget=BUDGET)


def test_the_ensemble_keeps_per_slice_the_member_with_the_lowest_psnr():
    model = tiny_modl()
    batch, targets = tiny_batch(batch=3)
    targets = _psnr_targets(model, batch, targets)
    outcome = _ensemble("noise", "pgd", "square")(model, batch, targets, 9)
    # Each member alone, with the seed the ensemble gives it, scored by the evaluation's PSNR.
    alone = {}
    for name in ("noise", "pgd", "square"):
        delta = MEMBERS[name]()(model, batch, targets, derive_seed(9, name)).kspace_delta
        alone[name] = targets.psnr(model.reconstruct(batch, delta)).tolist()
    with torch.no_grad():
        attacked = targets.psnr(model.reconstruct(batch, outcome.kspace_delta)).tolist()
    for i in range(3):
        worst = min(alone, key=lambda name: alone[name][i])
        assert outcome.winners[i] == worst
        assert attacked[i] == pytest.approx(alone[worst][i], abs=1e-9)
        assert all(outcome.member_psnr[name] == pytest.approx(alone[name]) for name in alone)
        facts = outcome.facts(i)
        assert facts["winner"] == worst and facts["members"][worst]["psnr"] == pytest.approx(alone[worst][i])
        assert facts["eps"] == pytest.approx(0.2)
    # The gradient attack beats noise on a smooth model.
    assert all(alone["pgd"][i] < alone["noise"][i] for i in range(3))


def test_more_members_never_make_a_slice_better():
    model = tiny_modl()
    batch, targets = tiny_batch(batch=3, seed=5)
    targets = _psnr_targets(model, batch, targets)

    def value(*names):
        delta = _ensemble(*names)(model, batch, targets, 4).kspace_delta
        return targets.psnr(model.reconstruct(batch, delta))

    few, more = value("noise", "square"), value("noise", "square", "pgd", "apgd")
    assert torch.all(more <= few + 1e-9) and torch.any(more < few)


def _entry(**changes):
    entry = {
        "name": "auto",
        "kind": "ensemble",
        "budget": {"value": 0.02, "convention": "paper"},
        "members": [{"name": "noise", "kind": "gaussian"}, {"name": "pgd", "kind": "pgd", "steps": 3}],
    }
    return {**entry, **changes}


def test_members_inherit_the_ensembles_budget_and_follow_the_budget_sweep():
    spec = PerturbationSpec.from_entry(_entry())
    assert [m.settings.budget for m in spec.members] == [spec.settings.budget] * 2
    swept = spec.with_budget(0.05)
    assert {m.settings.budget.value for m in swept.members} == {0.05} and swept.settings.budget.value == 0.05
    assert [m["name"] for m in spec.to_dict()["members"]] == ["noise", "pgd"]
    assert spec.to_dict()["family"] == "ensemble" and spec.to_dict()["members"][1]["family"] == "gradient"


def test_transfer_members_are_expanded_per_source_model_and_checked(tmp_path):
    text = (
        "perturbations:\n  - name: auto\n    kind: ensemble\n    budget: 0.1\n    members:\n"
        "      - {name: pgd, kind: pgd, steps: 1}\n      - {name: transfer, kind: pgd, steps: 1, transfer_from: each}\n"
    )
    (tmp_path / "p.yaml").write_text(text)
    protocol = load_protocol(tmp_path / "p.yaml")
    expanded = protocol.for_models(["a", "b"]).perturbations[0]
    assert [m.name for m in expanded.members] == ["pgd", "transfer@a", "transfer@b"]
    protocol.check_models(["a", "b"])
    (tmp_path / "q.yaml").write_text(text.replace("each", "c"))
    with pytest.raises(ProtocolError, match="perturbation 'transfer' transfers from 'c', which is not a --model"):
        load_protocol(tmp_path / "q.yaml").check_models(["a", "b"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"members": [{"name": "x", "kind": "fgsm"}]}, "Member of ensemble 'auto' 'x': Unknown perturbation kind"),
        ({"members": []}, "needs a non-empty 'members' list"),
        ({"members": [{"name": "n", "kind": "gaussian", "budget": 0.5}]}, "every member attacks within"),
        ({"members": [{"name": "c", "kind": "clean"}]}, "is of kind 'clean', which perturbs within no budget"),
        ({"members": [{"name": "e", "kind": "ensemble"}]}, "cannot be a member"),
        ({"members": [{"name": "n", "kind": "gaussian"}, {"name": "n", "kind": "pgd"}]}, "must be unique"),
        ({"kind": "pgd"}, "'members' belongs to an ensemble"),
    ],
)
def test_bad_members_are_refused_with_one_line(changes, message):
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]")) as error:
        PerturbationSpec.from_entry(_entry(**changes))
    assert "\n" not in str(error.value)


def test_an_unknown_member_stops_smug_evaluate_with_one_line(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text(
        "perturbations:\n  - {name: auto, kind: ensemble, budget: 0.1, members: [{name: x, kind: fgsm}]}\n"
    )
    args = ["evaluate", "--model", "m=a.yaml:b.pt", "--protocol", str(tmp_path / "p.yaml")]
    assert main([*args, "--data-root", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Unknown perturbation kind (attack name) 'fgsm'" in err and "p.yaml" in err


ENSEMBLE_PROTOCOL = """
perturbations:
  - name: clean
    kind: clean
  - name: auto
    kind: ensemble
    budget: 0.05
    members:
      - {name: noise, kind: gaussian}
      - {name: pgd, kind: pgd, steps: 2}
      - {name: apgd, kind: apgd, steps: 2, eot_samples: 2}
      - {name: square, kind: square, queries: 4}
      - {name: transfer, kind: pgd, steps: 1, transfer_from: each}
sweeps:
  budget: {perturbation: auto, values: [0.01]}
"""


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("ensemble")
    setup = make_setup(root, ("varnet", "smug"))
    (root / "p.yaml").write_text(ENSEMBLE_PROTOCOL)
    models = sum([["--model", m] for m in setup["specs"]], [])
    out = root / "out"
    args = ["evaluate", *models, "--protocol", str(root / "p.yaml"), "--data-root", str(setup["data"])]
    options = ["--output-dir", str(out), "--batch-size", "2", "--max-slices", "2", "--no-progress", "--threads", "1"]
    assert main([*args, *options]) == 0
    return out


def test_each_ensemble_record_is_its_worst_member_and_names_it(ensemble_run):
    records = json.loads((ensemble_run / "robustness.json").read_text())["records"]
    ensemble = [r for r in records if r["perturbation"] == "auto"]
    assert len(ensemble) == 2 * 2 * 2  # main and one budget, 2 models, 2 slices
    for record in ensemble:
        members = record["members"]
        expected = {"noise", "pgd", "apgd", "square", "transfer@varnet", "transfer@smug"}
        assert set(members) == expected
        worst = min(members, key=lambda name: members[name]["psnr"])
        assert record["winner"] == worst
        assert record["psnr"] == pytest.approx(min(m["psnr"] for m in members.values()), abs=1e-6)
        assert members["transfer@varnet"]["source"] == "varnet"
        assert all(len(members[m]["objective_trace"]) == 3 for m in ("pgd", "apgd"))
        assert record["delta_linf"] <= record["eps"] * (1 + 1e-5)
    # The randomized model's APGD averaged its draws (EOT) and recorded how the average settled.
    smug = [r for r in ensemble if r["model"] == "smug"]
    assert all(len(r["members"]["apgd"]["eot_convergence"]) == 1 for r in smug)
    markdown = (ensemble_run / "robustness.md").read_text()
    assert "## Ensemble auto" in markdown and "| varnet |" in markdown
