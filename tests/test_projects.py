"""The generated project YAMLs: up to date, and each one trains and validates in DIRECT on tiny demo data.

Every YAML is shrunken by :func:`conftest.shrink_project` (6 iterations of batch 1, validation and checkpoint at the
end). The paper-size projects (knee, brain) keep their networks but unroll once with 2 noise samples
(``conftest.PAPER_SHRINK``): the full 8 unrolls x 10 samples of DIDN-64 take minutes per iteration on one CPU thread.
Projects whose content is identical apart from the ``denoiser_checkpoint`` path (knee and brain) are trained once;
the twin is still loaded into DIRECT's configuration and engine.
"""

import json
import math
import pathlib
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import (
    PROJECTS_DIR,
    REPO_ROOT,
    ProjectRuns,
    direct_command,
    project_name,
    restored_logging_and_threads,
    run_command,
    shrink_project,
)

PROJECTS = sorted(PROJECTS_DIR.rglob("*.yaml"))
# Trained with the real `direct train` command in a subprocess; all others through DIRECT's setup_train in-process.
CLI_PROJECTS = {"demo/smug", "demo/weighted_smug"}
PRETRAINED_FAMILY = ("smug.modl.", "smug.smug.", "smug.weighted_smug.", "smug.rs_e2e.")


def test_generated_projects_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/generate_projects.py", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_study_has_its_projects() -> None:
    names = {project_name(p) for p in PROJECTS}
    for study in ("{}_knee", "{}_brain", "demo/{}"):
        for model in ("didn_pretrain", "modl", "smug", "weighted_smug", "rs_e2e", "varnet", "rim"):
            assert study.format(model) in names


def build_model(cfg: pathlib.Path) -> torch.nn.Module:
    """Build the ``model:`` of a YAML with DIRECT's own functions, as ``direct train`` does before training."""
    import direct.config.defaults  # noqa: F401
    from direct.data import transforms as T
    from direct.environment import initialize_models_from_config, load_models_into_environment_config
    from omegaconf import OmegaConf

    models, models_config = load_models_into_environment_config(OmegaConf.load(cfg))
    merged = OmegaConf.create({"model": models_config.model, "additional_models": {}})
    with restored_logging_and_threads():
        model, _ = initialize_models_from_config(merged, models, T.fft2, T.ifft2, "cpu")
    return model


def assert_denoiser_starts_pretrained(runs: ProjectRuns, project: pathlib.Path) -> None:
    """The fine-tuning model built from the shrunken YAML holds the pre-trained denoiser, not a fresh one."""
    cfg = runs.shrunken(project)
    checkpoint = yaml.safe_load(cfg.read_text())["model"]["denoiser_checkpoint"]
    pretrained = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    pretrained = {k.removeprefix("denoiser."): v for k, v in pretrained.items() if k.startswith("denoiser.")}
    model = build_model(cfg)
    assert model.load_pretrained_denoiser()  # what UnrolledEngine.train does when `direct train` starts
    initial = model.denoiser.state_dict()
    assert initial.keys() == pretrained.keys()
    assert [k for k, v in pretrained.items() if not torch.equal(initial[k], v)] == []

    fresh_cfg = shrink_project(
        project, cfg.with_name(cfg.stem + "_fresh.yaml"), model_overrides={"denoiser_checkpoint": None}
    )
    fresh = build_model(fresh_cfg).denoiser.state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in pretrained.items() if v.is_floating_point())


@pytest.mark.e2e
@pytest.mark.parametrize("project", PROJECTS, ids=project_name)
def test_project_trains_and_validates(project: pathlib.Path, project_runs: ProjectRuns) -> None:
    model = yaml.safe_load(project.read_text())["model"]
    twin = project_runs.twin(project)
    if twin is not None:
        # Same content as a project trained earlier: load it into DIRECT's config and build model and engine only.
        from direct.environment import setup_training_environment

        cfg = project_runs.shrunken(project)
        with restored_logging_and_threads():
            env = setup_training_environment(cfg.stem, project_runs.work_dir / "twins", cfg, "cpu", 0, False)
        assert f"{type(env.engine.model).__module__}.{type(env.engine.model).__name__}".endswith(
            model["model_name"].rsplit(".", 1)[-1]
        )
        run = twin
    else:
        run = project_runs.train(project, subprocess_cli=project_name(project) in CLI_PROJECTS)

    assert ProjectRuns.checkpoint(run).is_file()
    checkpoint = torch.load(ProjectRuns.checkpoint(run), map_location="cpu", weights_only=True)
    if model["model_name"].startswith("smug."):
        assert checkpoint["__model_name__"] == model["model_name"]  # a copied checkpoint still says what it is
    weights = [v.flatten() for v in checkpoint["model"].values() if v.is_floating_point()]
    assert weights and torch.cat(weights).isfinite().all()
    descriptions = [d["text_description"] for d in yaml.safe_load(project.read_text())["validation"]["datasets"]]
    for description in descriptions:
        [metrics_file] = run.glob(f"metrics_val_{description}_*.json")
        metrics = json.loads(metrics_file.read_text())
        psnr = [volume["fastmri_psnr_metric"] for volume in metrics.values()]
        assert psnr and all(math.isfinite(v) for v in psnr), metrics
    if model.get("denoiser_checkpoint") and model["model_name"].startswith(PRETRAINED_FAMILY):
        assert_denoiser_starts_pretrained(project_runs, project)


def test_unknown_plugin_model_lists_the_available_models(tmp_path: pathlib.Path, tiny_demo_data: pathlib.Path) -> None:
    cfg = shrink_project(
        PROJECTS_DIR / "demo" / "varnet.yaml", tmp_path / "nope.yaml", model_overrides={"model_name": "smug.nope.Nope"}
    )
    result = run_command(
        direct_command("train", str(tmp_path / "runs"), "--cfg", str(cfg), "--device", "cpu", "--num-workers", "0")
        + ["--training-root", str(tiny_demo_data / "train"), "--validation-root", str(tiny_demo_data / "val")],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode != 0
    assert "direct.nn.smug.nope" in result.stdout
    assert "Available plugin models" in result.stdout
    assert "smug.modl.MoDL" in result.stdout and "smug.weighted_smug.WeightedSMUG" in result.stdout
    assert "Traceback" not in result.stdout  # DIRECT reports and exits; no crash


def test_unknown_plugin_class_is_reported(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    import direct.config.defaults  # noqa: F401
    from direct.environment import load_models_into_environment_config
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"model": {"model_name": "smug.modl.Nope"}})
    with pytest.raises(SystemExit) as exit_info:
        load_models_into_environment_config(cfg)
    assert exit_info.value.code == -1
    # The module exists, the class does not: DIRECT's message carries the plugin's list of models.
    assert "'Nope'" in caplog.text
    assert "Available plugin models" in caplog.text and "smug.smug.SMUG" in caplog.text


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("model:\n  model_name: smug.modl.MoDL\n  num_stepz: 3\n", "num_stepz"),  # typo in the model section
        ("model:\n  model_name: smug.modl.MoDL\n  num_steps: [3\n", "while parsing"),  # not YAML
    ],
    ids=["unknown-key", "syntax-error"],
)
def test_malformed_yaml_is_reported(tmp_path: pathlib.Path, edit: str, expected: str) -> None:
    from direct.environment import setup_training_environment

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(edit)
    with restored_logging_and_threads(), pytest.raises(Exception) as error_info:
        setup_training_environment("bad", tmp_path, cfg, "cpu", 0, False)
    assert expected in str(error_info.value)


def test_investigation_configs_change_only_what_they_name(tmp_path: pathlib.Path) -> None:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from investigate import derived_config

    project = PROJECTS_DIR / "reproduce" / "smug_lambda10.yaml"
    longer = derived_config("smug_lambda10", tmp_path, {"training.num_iterations": 1200})
    assert longer.name == project.name  # DIRECT names the experiment folder after the file: resuming needs it
    smoother = derived_config("smug_lambda10", tmp_path, {"model.sigma": 0.05}, "smug_sigma.yaml")
    original = yaml.safe_load(project.read_text())
    for path, section, key, value in ((longer, "training", "num_iterations", 1200), (smoother, "model", "sigma", 0.05)):
        changed = yaml.safe_load(path.read_text())
        assert changed[section][key] == value != original[section][key]
        changed[section][key] = original[section][key]
        assert changed == original
    with pytest.raises(KeyError, match="model.sigmaa"):
        derived_config("smug_lambda10", tmp_path, {"model.sigmaa": 0.05})
