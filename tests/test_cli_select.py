"""``smug select``: the robust checkpoint among those within a tolerance of the best clean one, and its errors."""

import json
import pathlib

import pytest

from smug_plugin.cli.main import main

# iteration: (clean PSNR, PSNR under PGD), each the mean of two volumes.
VALIDATIONS = {5: (28.0, 27.0), 10: (29.7, 25.0), 15: (30.0, 22.0), 20: (29.9, 24.0), 25: (29.8, 26.0)}


def write_run(root: pathlib.Path, validations=VALIDATIONS, kept=(5, 10, 15, 20), robust: bool = True) -> pathlib.Path:
    """A run folder as `direct train` leaves it: metrics_val_4x_<iteration>.json per validation, model_<it>.pt for
    the kept checkpoints."""
    run = root / "run" / "modl"
    run.mkdir(parents=True)
    for iteration, (clean, attacked) in validations.items():
        volumes = {}
        for name, offset in (("a.h5", -0.5), ("b.h5", 0.5)):
            volumes[name] = {"fastmri_psnr_metric": clean + offset, "fastmri_ssim_metric": 0.7}
            if robust:
                volumes[name]["fastmri_psnr_metric_pgd"] = attacked - offset
        (run / f"metrics_val_4x_{iteration}.json").write_text(json.dumps(volumes))
    for iteration in kept:
        (run / f"model_{iteration}.pt").write_bytes(b"")
    return root / "run"


def select(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["select", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("tolerance", "chosen"), [("0.5", 10), ("0", 15), ("2.5", 5), ("0.25", 20)])
def test_the_best_robust_checkpoint_within_the_tolerance_is_named(tmp_path, capsys, tolerance, chosen):
    run = write_run(tmp_path)
    code, out, err = select(capsys, str(run), "--tolerance-db", tolerance)
    assert code == 0 and err == ""
    assert out.rstrip().endswith(f"selected: {run / 'modl' / f'model_{chosen}.pt'}")
    rows = {
        line.split(" | ")[0].strip("| "): line
        for line in out.splitlines()
        if line.startswith("| ") and "|---" not in line
    }
    assert "**yes**" in rows[str(chosen)] and sum("**yes**" in row for row in rows.values()) == 1
    # Iteration 25 is the most robust within 0.5 dB, but direct train kept no checkpoint of it.
    assert "(none kept)" in rows["25"] and "**yes**" not in rows["25"]


def test_the_default_tolerance_is_half_a_db(tmp_path, capsys):
    code, out, _ = select(capsys, str(write_run(tmp_path)))
    assert code == 0 and out.rstrip().endswith("model_10.pt") and "tolerance 0.5 dB" in out


def _two_datasets(root: pathlib.Path) -> pathlib.Path:
    run = write_run(root)
    (run / "modl" / "metrics_val_8x_5.json").write_text((run / "modl" / "metrics_val_4x_5.json").read_text())
    return run


@pytest.mark.parametrize(
    ("make", "extra", "messages"),
    [
        (lambda root: root / "absent", [], ["absent", "has `direct train` validated this run yet?"]),
        (lambda root: write_run(root, robust=False), [], ["fastmri_psnr_metric_pgd", "robust_validation_budget"]),
        (lambda root: write_run(root), ["--tolerance-db", "-1"], ["--tolerance-db must be a finite number >= 0"]),
        (lambda root: write_run(root), ["--tolerance-db", "nan"], ["--tolerance-db must be a finite number >= 0"]),
        (lambda root: write_run(root, kept=()), [], ["direct train kept none of them"]),
        (_two_datasets, [], ["validates on 4x, 8x", "--dataset"]),
        (lambda root: write_run(root), ["--dataset", "2x"], ["no validation set '2x'"]),
    ],
    ids=[
        "missing-run",
        "no-robust-metric",
        "negative-tolerance",
        "nan-tolerance",
        "no-checkpoint",
        "two-sets",
        "bad-set",
    ],
)
def test_bad_input_gives_one_line_and_no_table(tmp_path, capsys, make, extra, messages):
    code, out, err = select(capsys, str(make(tmp_path)), *extra)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("smug select: error: ")
    for message in messages:
        assert message in err


def test_an_invalid_metrics_file_is_named(tmp_path, capsys):
    run = write_run(tmp_path)
    (run / "modl" / "metrics_val_4x_10.json").write_text('{"a.h5": {"fastmri_psnr_metric": 3')
    code, out, err = select(capsys, str(run))
    assert code == 2 and out == "" and "metrics_val_4x_10.json is not valid JSON" in err


def test_a_nan_robust_metric_never_wins(tmp_path, capsys):
    # Iteration 10 would win within 0.5 dB; its robust metric is NaN (a diverged attack), so 20 is the most robust.
    run = write_run(tmp_path, validations={**VALIDATIONS, 10: (29.7, float("nan"))})
    code, out, err = select(capsys, str(run))
    assert code == 0 and err == "" and out.rstrip().endswith("model_20.pt")


def test_a_nan_clean_metric_neither_wins_nor_sets_the_best(tmp_path, capsys):
    run = write_run(tmp_path, validations={**VALIDATIONS, 15: (float("nan"), 40.0)})
    code, out, _ = select(capsys, str(run), "--tolerance-db", "0")
    assert code == 0 and out.rstrip().endswith("model_20.pt") and "best clean 29.900" in out


def test_every_metric_nan_is_a_one_line_error(tmp_path, capsys):
    nan = float("nan")
    run = write_run(tmp_path, validations={it: (nan, nan) for it in VALIDATIONS})
    code, out, err = select(capsys, str(run))
    assert code == 2 and out == "" and err.count("\n") == 1 and "NaN or infinite" in err


def _nmse_run(root: pathlib.Path) -> pathlib.Path:
    """A run validated with fastmri_nmse_metric (lower is better): iteration 15 is best clean, 5 most robust."""
    run = root / "run" / "modl"
    run.mkdir(parents=True)
    for iteration, (clean, attacked) in {5: (0.030, 0.040), 10: (0.021, 0.090), 15: (0.020, 0.100)}.items():
        metrics = {"fastmri_nmse_metric": clean, "fastmri_nmse_metric_pgd": attacked}
        (run / f"metrics_val_4x_{iteration}.json").write_text(json.dumps({"a.h5": metrics}))
        (run / f"model_{iteration}.pt").write_bytes(b"")
    return root / "run"


@pytest.mark.parametrize(("tolerance", "chosen"), [("0", 15), ("0.005", 10), ("0.05", 5)])
def test_a_lower_is_better_metric_selects_the_lowest(tmp_path, capsys, tolerance, chosen):
    run = _nmse_run(tmp_path)
    code, out, err = select(capsys, str(run), "--metric", "fastmri_nmse_metric", "--tolerance", tolerance)
    assert code == 0 and err == "" and out.rstrip().endswith(f"model_{chosen}.pt")
    assert "lower is better" in out and "above the best clean 0.020" in out


def test_an_unknown_metric_needs_its_direction(tmp_path, capsys):
    run = _nmse_run(tmp_path)
    code, out, err = select(capsys, str(run), "--metric", "my_score")
    assert code == 2 and out == "" and "--metric my_score" in err and "--better" in err
    code, out, _ = select(capsys, str(run), "--metric", "fastmri_nmse_metric", "--better", "higher")
    assert code == 0 and out.rstrip().endswith("model_15.pt")  # told higher: 0.100 is the highest "robust"
