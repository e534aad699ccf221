"""Distribution shifts on a constructed case: the OOD table, the linear fit and the adversarially filtered subset."""

import json
import pathlib

import pytest

from smug_plugin.cli.main import main
from smug_plugin.robustness.records import RECORDS, RecordStore


def write_run(folder: pathlib.Path, psnr: dict[str, list[float]]) -> pathlib.Path:
    """A records file as smug evaluate writes it: one clean record per model and slice."""
    folder.mkdir(parents=True)
    store = RecordStore(folder / RECORDS)
    records = [
        {
            "data": "default",
            "condition": "main/clean",
            "batch": "0",
            "model": model,
            "file": "a.h5",
            "slice": i,
            "psnr": v,
        }
        for model, values in psnr.items()
        for i, v in enumerate(values)
    ]
    store.append_unit(("default", "main/clean", "0"), records)
    return folder


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
