"""`make demo`'s closing summary (scripts/demo_summary.py) on a small synthetic robustness.json: per-model means,
the paired difference under the attack with its t-interval, the reading, and where the files are."""

import importlib.util
import json
import math

import pytest
from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("demo_summary", REPO_ROOT / "scripts" / "demo_summary.py")
demo_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo_summary)

# (clean, attacked) PSNR per slice: SMUG gains 1, 2, 3, 2 dB over MoDL under the attack.
PSNR = {
    "MoDL": [(30.0, 20.0), (31.0, 21.0), (32.0, 22.0), (33.0, 23.0)],
    "SMUG": [(30.5, 21.0), (31.5, 23.0), (32.5, 25.0), (33.5, 25.0)],
}


def _report(psnr=PSNR, extra=()) -> dict:
    records = [
        {"condition": condition, "model": model, "file": "vol.h5", "slice": i, "psnr": value}
        for model, values in psnr.items()
        for i, pair in enumerate(values)
        for condition, value in zip(("main/clean", "main/pgd"), pair)
    ]
    records += list(extra)
    return {"reference": "MoDL", "models": [{"name": m} for m in psnr], "records": records}


def test_summary_reads_means_difference_interval_and_files(tmp_path):
    (tmp_path / "psnr_vs_budget.png").write_bytes(b"")
    (tmp_path / "cards").mkdir()
    # Other conditions, and a record without a value, are left out.
    extra = [
        {"condition": "main/noise", "model": "MoDL", "file": "vol.h5", "slice": 0, "psnr": 0.0},
        {"condition": "main/pgd", "model": "SMUG", "file": "other.h5", "slice": 0, "psnr": None},
    ]
    text = demo_summary.summary(_report(extra=extra), tmp_path)
    lines = text.splitlines()
    assert len(lines) <= 8 and max(len(line.replace(str(tmp_path), "runs/demo/robustness")) for line in lines) <= 120
    assert "mean over 4 test slices" in lines[0]
    assert lines[2].split() == ["MoDL", "31.50", "21.50"]
    assert lines[3].split() == ["SMUG", "32.00", "23.50"]
    # differences 1, 2, 3, 2: mean 2, sd 0.8165, t(0.975, 3) = 3.1824 -> half-width 1.299
    assert "SMUG - MoDL under the attack: +2.00 dB, 95 % t-interval [+0.70, +3.30]" in text
    assert "n = 4 slices, one training seed: not a finding" in text
    assert "SMUG keeps more of the image than MoDL" in text
    assert f"Report: {tmp_path / 'robustness.md'}" in text and f"cards: {tmp_path / 'cards'}/" in text
    assert "psnr_vs_budget.png" in text


@pytest.mark.parametrize(
    ("gains", "reading"),
    [([-1.0, -2.0, -3.0, -2.0], "loses more of the image"), ([1.0, -1.0, 2.0, -2.0], "cannot be told apart")],
)
def test_reading_follows_the_interval(tmp_path, gains, reading):
    smug = [(c, a + g) for (c, a), g in zip(PSNR["MoDL"], gains)]
    assert reading in demo_summary.summary(_report({"MoDL": PSNR["MoDL"], "SMUG": smug}), tmp_path)


def test_t_interval_and_the_command_line(tmp_path, capsys):
    mean, low, high = demo_summary.t_interval([2.0])
    assert mean == 2.0 and math.isnan(low) and math.isnan(high)
    path = tmp_path / "robustness.json"
    path.write_text(json.dumps(_report()))
    assert demo_summary.main([str(path)]) == 0
    assert "SMUG - MoDL" in capsys.readouterr().out
    assert demo_summary.main([str(tmp_path / "missing.json")]) == 2
