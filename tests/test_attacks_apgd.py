"""APGD on the reconstruction error: its schedule, its ball, its strength against PGD, restarts, EOT and SSIM loss."""

import pytest
import torch
from attack_models import ZeroGradientModel, tiny_batch, tiny_modl, tiny_smug

from smug_plugin.robustness.attacks import Budget
from smug_plugin.robustness.attacks.apgd import APGD, checkpoint_periods
from smug_plugin.robustness.attacks.objective import reconstruction_error, structural_dissimilarity
from smug_plugin.robustness.attacks.pgd import PGD


def test_checkpoints_follow_the_reference_schedule():
    # AutoAttack's APGD: 22 % of the steps, 3 % fewer each time, never fewer than 6 %.
    assert checkpoint_periods(100) == [22, 19, 16, 13, 10, 7, 6, 6, 6]
    assert checkpoint_periods(10) == [2, 1, 1, 1, 1, 1, 1, 1, 1]
    assert checkpoint_periods(1) == [1]


@pytest.mark.parametrize(("value", "norm"), [(0.1, "linf"), (0.3, "linf"), (3.0, "l2")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_steps_on_modl(value, norm, seed):
    model = tiny_modl()
    batch, targets = tiny_batch(seed=seed + 1)
    budget = Budget(value, norm=norm)
    pgd = PGD(budget=budget, steps=5)(model, batch, targets, seed)
    apgd = APGD(budget=budget, steps=5)(model, batch, targets, seed)
    assert all(a >= p for a, p in zip(apgd.objective, pgd.objective)), (apgd.objective, pgd.objective)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_stays_in_the_ball_on_the_acquired_entries_and_reports_its_objective(norm):
    model = tiny_modl()
    batch, targets = tiny_batch()
    outcome = APGD(budget=Budget(0.2, norm=norm), steps=4)(model, batch, targets, 0)
    delta = outcome.kspace_delta
    size = delta.flatten(1).abs().amax(1) if norm == "linf" else delta.flatten(1).norm(dim=1)
    assert torch.all(size <= 0.2 * (1 + 1e-5))
    assert torch.all(delta[~batch["sampling_mask"].expand_as(delta).bool()] == 0)
    with torch.no_grad():
        scored = reconstruction_error(model.reconstruct(batch, delta), targets.ground_truth)
    torch.testing.assert_close(scored, torch.tensor(outcome.objective), rtol=1e-5, atol=1e-7)
    clean = reconstruction_error(model.reconstruct(batch), targets.ground_truth)
    assert torch.all(scored > clean)
    # The trace holds the start and every step; the reported objective is its maximum.
    assert len(outcome.history) == 5
    assert torch.allclose(torch.stack(outcome.history).amax(0), scored, rtol=1e-5)


def test_image_domain_apgd_perturbs_through_the_forward_operator():
    model = tiny_modl()
    batch, targets = tiny_batch()
    outcome = APGD(budget=Budget(0.05), domain="image", steps=3)(model, batch, targets, 0)
    delta = outcome.kspace_delta
    assert delta.shape == batch["masked_kspace"].shape and delta.abs().max() > 0
    assert torch.all(delta[~batch["sampling_mask"].expand_as(delta).bool()] == 0)


def test_more_restarts_are_never_weaker_and_the_first_restart_is_the_single_run():
    model = tiny_modl()
    batch, targets = tiny_batch(seed=4)
    one = APGD(budget=Budget(0.3), steps=3)(model, batch, targets, 5)
    three = APGD(budget=Budget(0.3), steps=3, restarts=3)(model, batch, targets, 5)
    assert all(t >= o for t, o in zip(three.objective, one.objective))
    assert len(three.history) == 3 * len(one.history)
    assert all(torch.equal(a, b) for a, b in zip(three.history, one.history))


def test_ssim_loss_is_ascended_and_reported():
    model = tiny_modl()
    batch, targets = tiny_batch()
    outcome = APGD(budget=Budget(0.3), steps=3, loss="ssim")(model, batch, targets, 0)
    with torch.no_grad():
        attacked = structural_dissimilarity(model.reconstruct(batch, outcome.kspace_delta), targets.ground_truth)
        clean = structural_dissimilarity(model.reconstruct(batch), targets.ground_truth)
    torch.testing.assert_close(attacked, torch.tensor(outcome.objective), rtol=1e-5, atol=1e-7)
    assert torch.all(attacked > clean)


def test_eot_apgd_averages_draws_on_randomized_models_and_records_how_the_average_settles():
    smug = tiny_smug()
    batch, targets = tiny_batch()
    outcome = APGD(budget=Budget(0.1), steps=2, eot_samples=4)(smug, batch, targets, 0)
    # Two doublings (1 -> 2 -> 4 draws) at the first gradient; the gradient was never zero.
    assert [len(curve) for curve in outcome.diagnostics["eot_convergence"]] == [2, 2]
    assert outcome.diagnostics["zero_gradient_steps"] == [0, 0]
    assert outcome.diagnostics["gradient_evaluations"] == [2, 2]
    # A deterministic model takes one draw whatever eot_samples says, and has no EOT curve.
    modl = APGD(budget=Budget(0.1), steps=2, eot_samples=4)(tiny_modl(), batch, targets, 0)
    assert "eot_convergence" not in modl.diagnostics


def test_a_zero_gradient_is_counted_at_every_step():
    model = ZeroGradientModel(tiny_modl().network)
    batch, targets = tiny_batch()
    outcome = APGD(budget=Budget(0.1), steps=3)(model, batch, targets, 0)
    assert outcome.diagnostics["zero_gradient_steps"] == [3, 3]
    assert outcome.facts(0)["zero_gradient_steps"] == 3


@pytest.mark.parametrize(("entry", "message"), [({"steps": 0}, "steps >= 1"), ({"restarts": 0}, "restarts >= 1")])
def test_bad_settings_are_refused(entry, message):
    with pytest.raises(ValueError, match=message):
        APGD.Settings.from_entry({"budget": 0.1, **entry})
