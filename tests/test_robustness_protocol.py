"""Protocols: shipped ones by short name, conditions and their seeds, and the sweep registry."""

import pathlib

import pytest
from conftest import REPO_ROOT

from smug_plugin.cli.main import main
from smug_plugin.robustness.reconstructors.interface import TestTimeSettings
from smug_plugin.robustness.run.protocol import ProtocolError, load_protocol, shipped_protocols
from smug_plugin.robustness.run.sweeps import SWEEPS, SweepKind, register_sweep

SWEEP_PROTOCOL = """
perturbations:
  - {name: clean, kind: clean}
  - {name: pgd, kind: pgd, budget: {value: 0.02, convention: relative_max}, steps: 1}
sweeps:
  acceleration: {values: [2, 8], center_fraction_product: 0.16, perturbations: [clean, pgd]}
  unrolls: {values: [3]}
  sigma: {values: [0, 0.05], perturbations: [pgd]}
  num_samples: {values: [2]}
  budget: {perturbation: pgd, values: [0.1]}
"""


def _protocol(tmp_path: pathlib.Path, text: str):
    path = tmp_path / "protocol.yaml"
    path.write_text(text)
    return load_protocol(path)


def test_shipped_protocols_load_by_short_name_and_as_files(tmp_path):
    assert {"paper", "smoke", "reproduce"} <= set(shipped_protocols())
    smoke = load_protocol("smoke")
    assert smoke.name == "smoke" and smoke.perturbations[0].kind == "clean"
    copy = tmp_path / "my_smoke.yaml"
    copy.write_text(shipped_protocols()["smoke"].read_text())
    assert [c.id for c in load_protocol(copy).conditions()] == [c.id for c in smoke.conditions()]
    assert load_protocol(str(copy)).perturbations == smoke.perturbations
    # One copy, in the top-level configs/robustness/ (mapped into the wheel as package data by setup.py).
    paper = pathlib.Path(str(shipped_protocols()["paper"])).resolve()
    assert paper == REPO_ROOT / "configs" / "robustness" / "paper.yaml"


def test_unknown_protocol_lists_the_shipped_ones(tmp_path, capsys):
    with pytest.raises(ProtocolError, match=r"Unknown robustness protocol 'papr'.*shipped: .*paper.*smoke"):
        load_protocol("papr")
    args = ["evaluate", "--model", "a=a.yaml:a.pt", "--protocol", "papr", "--data-root", str(tmp_path)]
    assert main([*args, "--output-dir", str(tmp_path / "out")]) == 2
    assert "shipped: auto, paper" in capsys.readouterr().err


def test_sweeps_map_values_to_condition_overrides(tmp_path):
    conditions = {c.id: c for c in _protocol(tmp_path, SWEEP_PROTOCOL).conditions()}
    assert list(conditions)[:2] == ["main/clean", "main/pgd"]
    acc = conditions["acceleration=8/pgd"]
    assert (acc.acceleration, acc.center_fraction, acc.data_key) == (8, 0.02, (8, 0.02))
    assert conditions["unrolls=3/clean"].settings == TestTimeSettings(num_steps=3, normalisation="fixed")
    assert conditions["sigma=0/pgd"].settings == TestTimeSettings(sigma=0.0, normalisation="fixed")
    assert conditions["num_samples=2/clean"].settings == TestTimeSettings(num_samples=2, normalisation="fixed")
    budget = conditions["budget=0.1/pgd"].perturbation
    assert (budget.name, budget.settings.budget.value, budget.settings.budget.convention) == (
        "pgd",
        0.1,
        "relative_max",
    )
    assert budget.settings.steps == 1 and conditions["main/pgd"].perturbation.settings.budget.value == 0.02
    # Seeds depend on the condition and the batch only.
    assert conditions["unrolls=3/clean"].seed(0, "0-1") != conditions["main/clean"].seed(0, "0-1")
    assert conditions["main/clean"].seed(0, "0-1") == conditions["main/clean"].seed(0, "0-1")


def test_adding_a_sweep_is_one_registration(tmp_path):
    kind = SweepKind(
        "center_fraction",
        "centre fraction",
        lambda value, sweep: {"acceleration": sweep.get("acceleration", 4), "center_fraction": value},
        options=frozenset({"acceleration"}),
    )
    register_sweep(kind)
    try:
        text = "perturbations: [{name: clean, kind: clean}]\nsweeps: {center_fraction: {values: [0.04, 0.08]}}\n"
        conditions = _protocol(tmp_path, text).conditions()
        assert [(c.id, c.data_key) for c in conditions[1:]] == [
            ("center_fraction=0.04/clean", (4, 0.04)),
            ("center_fraction=0.08/clean", (4, 0.08)),
        ]
        with pytest.raises(ValueError, match="registered twice"):
            register_sweep(kind)
    finally:
        SWEEPS.pop("center_fraction")


@pytest.mark.parametrize(
    "sweeps, message",
    [
        ("{unroll: {values: [1]}}", r"unknown sweeps \['unroll'\]; known: \['acceleration', 'budget'"),
        ("{unrolls: {values: []}}", "needs a non-empty 'values' list"),
        ("{unrolls: {values: [0]}}", "values must be positive numbers"),
        ("{sigma: {values: [-1]}}", "values must be non-negative numbers"),
        ("{budget: {values: [0.1]}}", "names the 'perturbation'"),
        ("{budget: {perturbation: clean, values: [0.1]}}", "needs a perturbation with a budget"),
        ("{unrolls: {values: [1], perturbation: clean}}", "unknown keys"),
    ],
)
def test_bad_sweeps_are_refused(tmp_path, sweeps, message):
    with pytest.raises(ProtocolError, match=message):
        _protocol(tmp_path, f"perturbations: [{{name: clean, kind: clean}}]\nsweeps: {sweeps}\n")


def _budgets(protocol) -> dict:
    return {p.name: p.settings.budget for p in protocol.perturbations if hasattr(p.settings, "budget")}


def test_the_papers_protocols_state_their_values_in_paper_units_and_the_old_regime_stays_available():
    protocol = load_protocol("paper")
    budgets = _budgets(protocol)
    assert {"noise", "pgd", "pgd_published", "pgd_eot"} <= set(budgets)
    assert all((b.value, b.convention) == (0.02, "paper") for b in budgets.values())
    pgd = {p.name: p for p in protocol.perturbations}
    assert (pgd["pgd"].settings.gradient, pgd["pgd_published"].settings.gradient) == ("full", "published")
    assert protocol.sweeps["budget"]["values"] == [0.005, 0.01, 0.02, 0.05]
    assert protocol.sweeps["sigma"]["values"] == [0.005, 0.01, 0.02, 0.05]
    assert protocol.sweeps["num_samples"]["values"] == [1, 2, 4, 8, 10]
    assert protocol.needs_reference_scale
    # The study's protocol: the journal's PGD under the declared threat model, the normalisation attack and the 2023
    # published attack (image domain, 2/255 of s_ref, truncated gradient, on the unsmoothed network).
    study = {p.name: p for p in load_protocol("reproduce").perturbations}
    assert list(study) == ["clean", "noise", "pgd", "pgd_normalisation", "pgd_2023"]
    assert (study["pgd"].normalisation, study["pgd_normalisation"].normalisation) == (None, "attacked")
    settings = study["pgd_2023"].settings
    assert (settings.domain, settings.gradient, settings.surrogate) == ("image", "published", "unsmoothed")
    assert settings.budget.value == pytest.approx(2 / 255) and settings.budget.convention == "paper"
    assert len(load_protocol("reproduce").conditions()) == 5 + 3 + 6
    old = load_protocol("reproduce_direct_units")
    assert all(b.convention == "absolute" for b in _budgets(old).values()) and not old.needs_reference_scale
    assert [c.id for c in old.conditions()][:4] == ["main/clean", "main/noise", "main/pgd", "main/pgd_eot"]
    smoke = load_protocol("smoke")
    assert [p.name for p in smoke.perturbations if p.settings.to_dict().get("gradient") == "published"] == [
        "pgd_published"
    ]
    assert sum(b.convention == "paper" for b in _budgets(smoke).values()) == 2  # noise_paper, pgd_published


def test_the_pgd_gradient_is_validated(tmp_path):
    with pytest.raises(ProtocolError, match=r"Perturbation 'p': Unknown gradient 'partial'; expected one of: full, "):
        _protocol(tmp_path, "perturbations: [{name: p, kind: pgd, budget: 0.1, gradient: partial}]\n")


def test_an_ensemble_member_without_a_budget_is_one_clear_line(tmp_path):
    path = tmp_path / "ensemble.yaml"
    path.write_text(
        "perturbations:\n  - name: auto\n    kind: ensemble\n    budget: 0.1\n    members:\n"
        "      - {name: c, kind: clean}\n      - {name: p, kind: pgd, steps: 2}\n"
    )
    with pytest.raises(ProtocolError, match=r"Member 'c' of ensemble 'auto' is of kind 'clean'.*remove the member"):
        load_protocol(path)
