"""A fine-tuned run moved to another machine: `direct predict` and `direct train --resume` work although the YAML
still names a pre-training checkpoint that is not there (the run's own checkpoint holds the denoiser)."""

import pathlib
import shutil

import pytest
from conftest import ITERATIONS, PROJECTS_DIR, ProjectRuns, direct_command, run_command, shrink_project

COMMON = ["--device", "cpu", "--num-workers", "0"]


@pytest.mark.e2e
def test_a_fine_tuned_run_needs_no_pre_training_file(
    tmp_path: pathlib.Path, tiny_demo_data: pathlib.Path, project_runs: ProjectRuns
) -> None:
    project = PROJECTS_DIR / "demo" / "modl.yaml"
    trained = project_runs.train(project)
    gone = tmp_path / "pre_training_run_not_copied" / "model_5.pt"
    cfg = shrink_project(project, tmp_path / "modl.yaml", model_overrides={"denoiser_checkpoint": str(gone)})
    run = tmp_path / "runs" / cfg.stem  # DIRECT's run folder for this YAML, as copied to the other machine
    shutil.copytree(trained, run)

    predict = run_command(
        direct_command("predict", str(tmp_path / "predictions"), "--cfg", str(cfg))
        + ["--checkpoint", str(ProjectRuns.checkpoint(run)), "--data-root", str(tiny_demo_data / "test"), *COMMON],
        cwd=tmp_path,
    )
    assert predict.returncode == 0, predict.stdout[-5000:]
    assert list((tmp_path / "predictions").rglob("*.h5"))

    resume = run_command(
        direct_command("train", str(tmp_path / "runs"), "--cfg", str(cfg), "--resume", *COMMON)
        + ["--training-root", str(tiny_demo_data / "train"), "--validation-root", str(tiny_demo_data / "val")],
        cwd=tmp_path,
    )
    assert resume.returncode == 0, resume.stdout[-5000:]
    assert f"Starting from iteration: {ITERATIONS}" in resume.stdout
    assert "model.denoiser_checkpoint is not read" in resume.stdout
