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
    assert "Figures: " in text and "(1 file: psnr_vs_*.png)" in text


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


LOG = """\
[2026-01-01 10:00:00,000][direct.environment][INFO] - Configuration:
  lr_warmup_iter: 20
[2026-01-01 10:00:01,000][CommonMetricPrinter][INFO] - eta: N/A  iter: 0    lr: N/A
[2026-01-01 10:00:09,000][CommonMetricPrinter][INFO] - eta: 0:01:26  iter: 20  loss: 0.143009  lr: 0.001000
[2026-01-01 10:00:20,000][MoDLEngine][INFO] - Evaluating: 4x...
"""


def _progress(tmp_path, log_text: str | None) -> list[str]:
    """The lines scripts/train_progress.sh prints within a second at a 0.2 s interval."""
    import subprocess

    log = tmp_path / "log_0_0.txt"
    if log_text is not None:
        log.write_text(log_text)
    script = REPO_ROOT / "scripts" / "train_progress.sh"
    process = subprocess.Popen(["bash", str(script), str(log), "modl", "200", "0.2"], stdout=subprocess.PIPE, text=True)
    try:
        process.wait(timeout=1)
    except subprocess.TimeoutExpired:
        process.kill()
    return process.communicate()[0].splitlines()


def test_training_progress_names_the_iteration_loss_and_phase(tmp_path):
    lines = _progress(tmp_path, None)
    assert len(lines) >= 2 and all("[modl 0:0" in line and "starting" in line for line in lines)
    lines = _progress(tmp_path, LOG)
    assert lines[-1].endswith("iteration 20/200, loss 0.143009, eta 0:01:26 (validating)"), lines
    lines = _progress(tmp_path, LOG.split("[2026-01-01 10:00:01")[0])  # the config's lr_warmup_iter is no iteration
    assert lines[-1].endswith("starting (first iteration not logged yet)"), lines


STAND_INS = {
    # direct train RUN --cfg CFG ...: a run of 3 logged iterations, 0.5 s apart, and a checkpoint.
    "direct": """#!/usr/bin/env bash
run=$2 name=$(basename "$4" .yaml)
mkdir -p "$run/$name"
for i in 0 20 40; do
  echo "[t][CommonMetricPrinter][INFO] - eta: 0:00:10  iter: $i  loss: 0.$((i + 1))" >> "$run/$name/log_0_0.txt"
  sleep 0.5
done
echo 40 > "$run/$name/last_model.txt"
""",
    # smug data demo / metrics / evaluate: the data's manifest, a line, the report of a synthetic evaluation.
    "smug": """#!/usr/bin/env bash
case $1 in
  data) mkdir -p "$4" && touch "$4/demo_manifest.json" ;;
  metrics) echo "validation metrics" ;;
  evaluate) out=$(echo "$@" | sed 's/.*--output-dir \\([^ ]*\\).*/\\1/'); mkdir -p "$out"
            cp "$SYNTHETIC_REPORT" "$out/robustness.json" ;;
esac
""",
}


def test_demo_script_shows_training_progress_and_ends_with_the_summary(tmp_path):
    """scripts/demo.sh with stand-ins for `direct` and `smug` (the real demo trains for about 25 minutes)."""
    import os
    import shutil
    import subprocess
    import sys

    for folder in ("scripts", "projects"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in STAND_INS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "python").write_text(f'#!/usr/bin/env bash\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    report = tmp_path / "synthetic.json"
    report.write_text(json.dumps(_report()))
    env = {**os.environ, "DEMO_PROGRESS_S": "0.4", "SYNTHETIC_REPORT": str(report)}
    result = subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for name in ("didn_pretrain", "modl", "smug"):
        assert f"direct train runs/demo/{name} --cfg projects/demo/{name}.yaml: 300 iterations" in out
        assert f"[{name} 0:0" in out and "/300, loss 0." in out
    assert out.rstrip().splitlines()[-1].startswith("Report: runs/demo/robustness/robustness.md")
    assert "SMUG - MoDL under the attack: +2.00 dB" in out
    assert "| Model |" not in out  # no wide markdown table
