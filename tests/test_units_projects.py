"""The generated projects, the demo's included, state the papers' settings in the papers' units."""

import pytest
import yaml
from conftest import PROJECTS_DIR, project_name

PROJECTS = {project_name(path): path for path in sorted(PROJECTS_DIR.rglob("*.yaml"))}
SMOOTHED = ("smug.smug.SMUG", "smug.weighted_smug.WeightedSMUG", "smug.rs_e2e.RSE2E")


def model_section(name: str) -> dict:
    return yaml.safe_load(PROJECTS[name].read_text())["model"]


def losses(name: str) -> dict[str, float]:
    cfg = yaml.safe_load(PROJECTS[name].read_text())
    return {loss["function"]: loss["multiplier"] for loss in cfg["training"]["loss"]["losses"]}


@pytest.mark.parametrize("name", list(PROJECTS))
def test_every_project_uses_the_papers_values_in_the_papers_units(name: str) -> None:
    model = model_section(name)
    if not model["model_name"].startswith("smug."):
        assert "intensity_scale" not in model  # DIRECT's own models (VarNet, RIM) have no such setting
        return
    assert model["intensity_scale"] == "paper"
    if model["model_name"] == "smug.modl.MoDL":
        assert "clamp_noisy_input" not in model and "sigma" not in model
    else:
        assert model["sigma"] == 0.01 and model["clamp_noisy_input"] is True
    if model["model_name"] != "smug.didn.DIDN":
        assert model["cg_tol"] == 1e-6
    if model.get("robust_validation_budget"):
        assert model["robust_validation_units"] == "paper"  # one convention with the evaluation's eps
    if model.get("adversarial_training_budget"):
        assert model["adversarial_training_convention"] == "paper"  # the evaluation's eps 0.02 x s_ref
        assert model["adversarial_training_budget"] == 0.02 and model["adversarial_training_norm"] == "linf"
    if "ustab_loss" in losses(name):
        # The journal's complex MSE, weighted so that lambda_l means the journal's: lambda_l x N unroll terms / 8.
        # The demo and the adversarially trained SMUG use the lambda_l the study chose (100); the paper-size projects
        # the papers' 1.
        local = name.startswith(("demo/", "reproduce/"))
        lambda_l = float(name.rsplit("_lambda", 1)[1]) if "_lambda" in name else 100.0 if local else 1.0
        expected = round(lambda_l * model["num_steps"] / 8, 6)
        assert losses(name) == {"complex_mse_loss": expected, "ustab_loss": 1.0}
    elif model["model_name"] != "smug.didn.DIDN":
        assert losses(name) == {"complex_mse_loss": 1.0}


@pytest.mark.parametrize("name", [n for n in PROJECTS if "rs_e2e" in n])
def test_rs_e2e_is_trained_as_published(name: str) -> None:
    model = model_section(name)
    assert model["rs_e2e_dc_input"] == "clean" and model["rs_e2e_target"] == "teacher"
    # The teacher is the last checkpoint `direct train` writes for the study's MoDL (it counts from 0).
    modl = name.replace("rs_e2e", "modl")
    iterations = yaml.safe_load(PROJECTS[modl].read_text())["training"]["num_iterations"]
    run = f"runs/{modl}/{modl.split('/')[-1]}" if "/" in modl else f"runs/{modl}/{modl}"
    assert model["rs_e2e_teacher_checkpoint"] == f"{run}/model_{iterations - 1}.pt"


@pytest.mark.parametrize("study", ["{}_knee", "{}_brain", "demo/{}", "reproduce/{}"])
def test_every_study_has_modl_from_scratch_next_to_modl_from_the_pretrained_denoiser(study: str) -> None:
    scratch, pretrained = model_section(study.format("modl_scratch")), model_section(study.format("modl"))
    assert scratch["model_name"] == pretrained["model_name"] == "smug.modl.MoDL"
    assert scratch["denoiser_checkpoint"] is None and pretrained["denoiser_checkpoint"]
    scratch.pop("denoiser_checkpoint"), pretrained.pop("denoiser_checkpoint")
    assert scratch == pretrained


def test_the_smoothed_projects_say_what_their_units_are() -> None:
    for name, path in PROJECTS.items():
        if model_section(name)["model_name"] in SMOOTHED:
            header = [line for line in path.read_text().splitlines() if line.startswith("#")]
            assert any(line.startswith("# Units:") for line in header), name
