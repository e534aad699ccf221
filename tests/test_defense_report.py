"""The defense study's report (`reports.defense_report`, scripts/defense_report.py) on a small synthetic
robustness.json, and the defense and protocol YAMLs that scripts/beyond.py writes, read by the package's own loaders.

The synthetic run: a model and the model behind the defense on 4 slices; the defense costs 0.5 dB clean, gains
1, 2, 3, 2 dB blind and 0 dB (BPDA) on the slices, and its clean reconstruction takes 40 times as long.
"""

import json
import pathlib
import sys

import pytest
import yaml
from conftest import REPO_ROOT

from smug_plugin.robustness.defenses.cyclic_consistency import DefenseSettings, read_defense_settings
from smug_plugin.robustness.reports.defense_report import markdown_table, summarise, write_report
from smug_plugin.robustness.run.protocol import load_protocol

UNDEFENDED = {"clean": [30.0, 31.0, 32.0, 33.0], "pgd": [20.0, 21.0, 22.0, 23.0]}
DEFENDED = {
    "clean": [29.5, 30.5, 31.5, 32.5],
    "pgd": [20.0, 21.0, 22.0, 23.0],  # the adaptive attack takes the whole gain back
    "pgd_blind": [21.0, 23.0, 25.0, 25.0],
}


def synthetic_run(name: str = "VarNet") -> dict:
    settings = DefenseSettings.published(name, iterations=5, stages=1, extra_masks=2)
    defense = {key: getattr(value, "value", value) for key, value in vars(settings).items()}
    records = []
    for model, cells, seconds in ((name, UNDEFENDED, 0.1), (f"{name}+defense", DEFENDED, 4.0)):
        for perturbation, values in cells.items():
            for i, psnr in enumerate(values):
                records.append(
                    {
                        "condition": f"main/{perturbation}",
                        "model": model,
                        "file": "a.h5",
                        "slice": i,
                        "psnr": psnr,
                        "seconds": seconds if perturbation == "clean" else 10 * seconds,
                    }
                )
    # the undefended model under the blind attack is its own PGD: in the run, not in the table
    records += [{**r, "condition": "main/pgd_blind"} for r in records if r["model"] == name and "pgd" in r["condition"]]
    return {
        "models": [
            {"name": name},
            {"name": f"{name}+defense", "defense": defense, "model_calls_per_slice": settings.model_calls()},
        ],
        "budgets": {"pgd": "pgd linf eps 0.02 (paper), 10 steps"},
        "records": records,
    }


def test_summary_has_the_cells_gains_and_cost() -> None:
    row = summarise(synthetic_run())
    assert (row["model"], row["defended"], row["slices"]) == ("VarNet", "VarNet+defense", 4)
    assert row["psnr_db"] == pytest.approx(
        {
            "clean_undefended": 31.5,
            "clean_defended": 31.0,
            "pgd_undefended": 21.5,
            "blind_defended": 23.5,
            "adaptive_defended": 21.5,
        }
    )
    gains = row["gains_db"]
    assert set(gains) == {"clean", "blind", "adaptive"}  # no unrolled attack in this run
    assert gains["clean"]["mean"] == pytest.approx(-0.5)
    assert gains["clean"]["low"] == pytest.approx(-0.5) and gains["clean"]["high"] == pytest.approx(-0.5)
    blind = gains["blind"]
    assert blind["mean"] == pytest.approx(2.0) and blind["slices"] == 4 and blind["above"] == 4
    assert 1.0 <= blind["low"] < 2.0 < blind["high"] <= 3.0  # a bootstrap of the slice means of 1, 2, 3, 2
    assert gains["adaptive"]["mean"] == pytest.approx(0.0)
    assert row["cost_multiple"] == pytest.approx(40.0)
    assert row["model_calls_per_slice"]["total_reconstructions"] == 50  # 5 forward + 3 x 15 forward-backward


def test_table_states_units_and_intervals() -> None:
    row = summarise(synthetic_run())
    table = markdown_table([row])
    header, rule, line = table.splitlines()
    assert "clean, undefended (dB)" in header and "gain, blind (dB)" in header and "gain, adaptive BPDA (dB)" in header
    assert "cost multiple (wall-clock, x)" in header and "unrolled" not in header
    assert rule.count("---") == header.count("|") - 1
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[:7] == ["VarNet", "4", "31.50", "31.00", "21.50", "23.50", "21.50"]
    assert cells[8].startswith("+2.00 [") and cells[-2:] == ["40", "50"]


def test_a_run_without_the_undefended_attack_is_refused() -> None:
    run = synthetic_run()
    run["records"] = [r for r in run["records"] if not (r["condition"] == "main/pgd" and r["model"] == "VarNet")]
    with pytest.raises(ValueError, match="pgd_undefended"):
        summarise(run)


def test_report_files_and_the_stated_cut(tmp_path: pathlib.Path) -> None:
    runs = {}
    for name in ("MoDL", "RIM"):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        (runs[name] / "robustness.json").write_text(json.dumps(synthetic_run(name)))
    document = write_report(runs, tmp_path / "defense")
    assert [row["model"] for row in document["models"]] == ["MoDL", "RIM"]
    assert json.loads((tmp_path / "defense" / "defense.json").read_text()) == json.loads(json.dumps(document))
    readme = (tmp_path / "defense" / "README.md").read_text()
    assert "iterations 5 (paper: 100)" in readme and "stages 1 (paper: 2)" in readme
    assert "extra_masks 2 (paper: 3)" in readme and "noise_scale" not in readme  # only what was cut
    assert "50 reconstructions per slice" in readme and "the paper's sizes: 2109 reconstructions" in readme
    assert "was not run: BPDA only" in readme
    assert "| MoDL |" in readme and "| RIM |" in readme
    assert (tmp_path / "defense" / "defense.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_beyond_writes_yamls_the_package_reads(tmp_path: pathlib.Path) -> None:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import beyond

    defense = tmp_path / "defense.yaml"
    defense.write_text(beyond.defense_yaml("Recurrent-VarNet"))

    assert "(published: iterations 100, stages 2, extra_masks 3)" in defense.read_text()
    settings = read_defense_settings(defense, yaml.safe_load(defense.read_text())["defense"])
    assert settings == DefenseSettings.published("Recurrent-VarNet", **beyond.DEFENSE_CUT, seed=0)
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(beyond.defense_protocol_yaml("Recurrent-VarNet"))
    parsed = load_protocol(protocol)
    specs = {spec.name: spec for spec in parsed.perturbations}
    assert list(specs) == ["clean", "pgd", "pgd_blind"]
    assert specs["pgd_blind"].transfer_from == "Recurrent-VarNet" and specs["pgd"].transfer_from is None
    assert specs["pgd"].settings == specs["pgd_blind"].settings  # the same PGD, white-box and blind


def test_beyond_keeps_the_timed_record_of_a_step_a_later_invocation_skipped() -> None:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import beyond

    earlier = [{"step": "cs-tune", "seconds": 12.0}, {"step": "bound", "seconds": 20.0}]
    earlier.append({"step": "old", "seconds": 1.0})
    now = [{"step": "cs-tune", "seconds": None}, {"step": "bound", "seconds": 25.0}, {"step": "new", "seconds": None}]
    merged = {step["step"]: step["seconds"] for step in beyond.merged_steps(earlier, now)}
    assert merged == {"old": 1.0, "cs-tune": 12.0, "bound": 25.0, "new": None}
