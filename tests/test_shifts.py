"""Distribution shifts on a constructed case: the OOD table, the linear fit and the adversarially filtered subset."""

import json
import pathlib

import pytest
from robustness_fixtures import model_entry, write_evaluation

from smug_plugin.cli.main import main


def write_run(folder: pathlib.Path, psnr: dict[str, list[float]], **kwargs) -> pathlib.Path:
    """A finished smug evaluate folder: one clean record per model and slice."""
    records = [
        {"condition": "main/clean", "model": model, "file": "a.h5", "slice": i, "psnr": v}
        for model, values in psnr.items()
        for i, v in enumerate(values)
    ]
    return write_evaluation(folder, records, **kwargs)


def test_ood_table_fit_and_filtered_subset(tmp_path):
    # Ten slices; the lowest 10 % for the filter model F is slice 3 alone.
    filter_psnr = [30, 31, 32, 20, 33, 34, 35, 25, 36, 37]
    in_distribution = write_run(
        tmp_path / "id",
        {"A": [30.0] * 10, "B": [32.0] * 9 + [22.0], "C": [34.0 + (i == 3) for i in range(10)], "F": filter_psnr},
    )
    # OOD = 0.5 * ID + 10 exactly for the three evaluated models.
    shifted = write_run(tmp_path / "ood", {"A": [25.0] * 4, "B": [25.5] * 4, "C": [27.05] * 4})
    out = tmp_path / "out"
    args = ["shifts", "--in-distribution", str(in_distribution), "--shifted", f"knee={shifted}"]
    assert main([*args, "--filter-model", "F", "--output-dir", str(out)]) == 0

    report = json.loads((out / "shifts.json").read_text())
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"A", "B", "C"}  # the filter model is not evaluated
    assert rows["B"]["in_distribution"] == pytest.approx(31.0) and rows["C"]["in_distribution"] == pytest.approx(34.1)
    assert rows["A"]["knee"] == 25.0
    assert report["fits"]["knee"]["slope"] == pytest.approx(0.5) and report["fits"]["knee"][
        "intercept"
    ] == pytest.approx(10.0)
    # The filtered set is slice 3 alone: each model's PSNR there.
    assert [rows[m]["adversarially filtered"] for m in "ABC"] == [30.0, 32.0, 35.0]
    assert (out / "shifts.png").stat().st_size > 0 and "| A | 30.000 |" in (out / "shifts.md").read_text()


def test_filter_model_without_records_is_a_one_line_error(tmp_path, capsys):
    in_distribution = write_run(tmp_path / "id", {"A": [30.0, 31.0]})
    args = ["shifts", "--in-distribution", str(in_distribution), "--filter-model", "nobody"]
    assert main([*args, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'nobody'" in err


def _shifts(tmp_path, capsys, *args: str) -> tuple[int, str]:
    code = main(["shifts", *args, "--output-dir", str(tmp_path / "out")])
    return code, capsys.readouterr().err


def _refused(code: int, err: str, tmp_path: pathlib.Path, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("smug shifts: error:"), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]}"
    assert not (tmp_path / "out").exists()


ID_PSNR = {"A": [30.0, 31.0], "B": [32.0, 33.0]}
OOD_PSNR = {"A": [25.0, 26.0], "B": [27.0, 28.0]}


def test_a_killed_run_is_refused(tmp_path, capsys):
    """A killed run's records are partial (here the ID run stopped after its first unit): never averaged."""
    in_distribution = write_run(tmp_path / "id", ID_PSNR)
    shifted = write_run(tmp_path / "ood", OOD_PSNR, complete=False)
    code, err = _shifts(tmp_path, capsys, "--in-distribution", str(in_distribution), "--shifted", f"knee={shifted}")
    _refused(code, err, tmp_path, str(shifted), "did not finish", "--resume")


def test_records_of_another_run_than_the_manifest_are_refused(tmp_path, capsys):
    in_distribution = write_run(tmp_path / "id", ID_PSNR)
    shifted = write_run(tmp_path / "ood", OOD_PSNR)
    manifest = json.loads((shifted / "manifest.json").read_text())
    (shifted / "manifest.json").write_text(json.dumps({**manifest, "seed": 9}))  # the manifest of another run
    code, err = _shifts(tmp_path, capsys, "--in-distribution", str(in_distribution), "--shifted", f"knee={shifted}")
    _refused(code, err, tmp_path, str(shifted), "belong to another run")


def test_one_perturbation_name_with_another_budget_is_refused(tmp_path, capsys):
    pgd = {"name": "pgd", "kind": "pgd", "budget": 0.01}
    records = [{"condition": "main/pgd", "model": "A", "file": "a.h5", "slice": 0, "psnr": 30.0}]
    in_distribution = write_evaluation(tmp_path / "id", records, perturbations=[pgd])
    shifted = write_evaluation(tmp_path / "ood", records, perturbations=[{**pgd, "budget": 0.02}])
    args = ["--in-distribution", str(in_distribution), "--shifted", f"knee={shifted}", "--perturbation", "pgd"]
    code, err = _shifts(tmp_path, capsys, *args)
    _refused(code, err, tmp_path, "perturbation 'pgd'", "differ in budget", str(shifted))


def test_a_model_of_one_name_with_other_settings_is_refused(tmp_path, capsys):
    in_distribution = write_run(tmp_path / "id", ID_PSNR, models=[model_entry("A", sigma=0.01), model_entry("B")])
    shifted = write_run(tmp_path / "ood", OOD_PSNR, models=[model_entry("A", sigma=0.5), model_entry("B")])
    code, err = _shifts(tmp_path, capsys, "--in-distribution", str(in_distribution), "--shifted", f"knee={shifted}")
    _refused(code, err, tmp_path, "model 'A'", "settings")


@pytest.mark.parametrize(
    "shifted, needles",
    [
        ([], ["Nothing to compare", "--shifted NAME=DIR"]),
        (["knee=ood", "knee=ood"], ["'knee' is taken"]),
        (["knee"], ["Expected --shifted NAME=DIR"]),
    ],
    ids=["no shifted set", "a set named twice", "no folder"],
)
def test_shifted_sets_must_be_given_once_each(tmp_path, capsys, shifted, needles):
    in_distribution = write_run(tmp_path / "id", ID_PSNR)
    write_run(tmp_path / "ood", OOD_PSNR)
    extra = [a for entry in shifted for a in ("--shifted", entry.replace("=ood", f"={tmp_path / 'ood'}"))]
    code, err = _shifts(tmp_path, capsys, "--in-distribution", str(in_distribution), *extra)
    _refused(code, err, tmp_path, *needles)
