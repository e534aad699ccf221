"""Robust validation inside training and the `smug metrics` summary of `direct train` runs."""

import json

import pytest
import torch
from conftest import multicoil_inputs
from direct.data.transforms import fft2, ifft2

from smug_plugin.cli.main import main as smug_main
from smug_plugin.cli.metrics import last_validation_metrics
from smug_plugin.models.modl import MoDL
from smug_plugin.robustness.validation import RobustValidation, attacked_kspace


@pytest.fixture
def batch():
    generator, mask, sens = multicoil_inputs(seed=0)
    model = MoDL(fft2, ifft2, num_steps=2, cg_iters=4, denoiser_hidden_channels=8, denoiser_num_dubs=1).eval()
    image = torch.randn(2, 16, 12, 2, generator=generator)
    kspace = model.forward_project(image, mask, sens)
    return model, kspace, mask, sens, torch.linalg.vector_norm(image, dim=-1)


def test_attack_stays_in_the_ball_on_acquired_entries_and_hurts(batch):
    model, kspace, mask, sens, target = batch
    settings = RobustValidation(budget=0.05, steps=3, seed=1)
    attacked = attacked_kspace(lambda k: model(k, mask, sens), kspace, mask, target, settings)
    delta = attacked - kspace
    assert delta.abs().max() <= 0.05 + 1e-6
    assert torch.all(delta * (1 - mask) == 0)

    def error(k):
        return ((torch.linalg.vector_norm(model(k, mask, sens), dim=-1) - target) ** 2).mean()

    assert error(attacked) > error(kspace)
    again = attacked_kspace(lambda k: model(k, mask, sens), kspace, mask, target, settings)
    assert torch.equal(again, attacked)  # the seed makes validations comparable across iterations


def test_paper_units_budget_is_a_fraction_of_each_slices_reference_scale(batch):
    model, kspace, mask, sens, target = batch
    settings = RobustValidation(budget=0.05, units="paper", steps=3, seed=1)
    reference_scale = torch.tensor([2.0, 8.0])
    attacked = attacked_kspace(lambda k: model(k, mask, sens), kspace, mask, target, settings, reference_scale)
    largest = (attacked - kspace).abs().flatten(1).amax(dim=1)
    assert torch.all(largest <= 0.05 * reference_scale + 1e-6)
    assert largest[1] > 0.05 * 2.0  # the second slice's radius is 4 x the first's, beyond an absolute 0.05
    with pytest.raises(ValueError, match="fully sampled"):
        attacked_kspace(lambda k: model(k, mask, sens), kspace, mask, target, settings)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"budget": -1.0, "steps": 3}, "budget"),
        ({"budget": 0.1, "steps": 0}, "steps"),
        ({"budget": 0.1, "units": "percent"}, "robust_validation_units"),
    ],
)
def test_bad_robust_validation_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        RobustValidation(**settings)


def test_metrics_summary_reads_the_last_iteration(tmp_path, capsys):
    run = tmp_path / "modl" / "modl"
    run.mkdir(parents=True)
    for iteration, psnr in ((9, 20.0), (19, 30.0)):
        values = {"fastmri_psnr_metric": psnr, "fastmri_ssim_metric": 0.5, "fastmri_nmse_metric": 0.1}
        (run / f"metrics_val_4x_{iteration}.json").write_text(json.dumps({"a.h5": values, "b.h5": values}))
    assert last_validation_metrics(tmp_path / "modl")["4x"]["fastmri_psnr"] == 30.0
    assert smug_main(["metrics", str(tmp_path / "modl")]) == 0
    assert "| modl | 4x | 19 | 30.00 | 0.5000 | 0.1000 |" in capsys.readouterr().out
    assert smug_main(["metrics", str(tmp_path / "absent")]) == 2
    assert "has `direct train` validated this run yet?" in capsys.readouterr().err
