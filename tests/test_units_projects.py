"""The generated projects state the papers' settings in the papers' units; the demo keeps DIRECT's units."""

import pytest
import yaml
from conftest import PROJECTS_DIR, project_name

PROJECTS = {project_name(path): path for path in sorted(PROJECTS_DIR.rglob("*.yaml"))}
PAPER_STUDIES = [name for name in PROJECTS if not name.startswith("demo/")]
SMOOTHED = ("smug.smug.SMUG", "smug.weighted_smug.WeightedSMUG", "smug.rs_e2e.RSE2E")


def model_section(name: str) -> dict:
    return yaml.safe_load(PROJECTS[name].read_text())["model"]


def losses(name: str) -> dict[str, float]:
    cfg = yaml.safe_load(PROJECTS[name].read_text())
    return {loss["function"]: loss["multiplier"] for loss in cfg["training"]["loss"]["losses"]}


@pytest.mark.parametrize("name", PAPER_STUDIES)
def test_knee_brain_and_reproduce_use_the_papers_values_in_the_papers_units(name: str) -> None:
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
    if "ustab_loss" in losses(name) and not name.endswith("_lambda10"):
        assert losses(name) == {"l2_loss": 1.0, "ustab_loss": 1.0}  # lambda_l = 1, as published


def test_the_demo_keeps_directs_units() -> None:
    for name in PROJECTS:
        if name.startswith("demo/"):
            model = model_section(name)
            assert "intensity_scale" not in model and "clamp_noisy_input" not in model


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
