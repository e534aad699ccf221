"""The cyclic-consistency defense: it never leaves its ball, keeps a clean reconstruction within a stated tolerance,
and runs in `smug evaluate` around a DIRECT model under the blind (transferred) and the adaptive (BPDA) attack."""

import json

import pytest
import torch

from smug_plugin.robustness.defenses.cyclic_consistency import (
    DefendedReconstructor,
    DefenseSettings,
    _centre_run,
    extra_masks,
)
from smug_plugin.robustness.reconstructors.interface import TestTimeSettings

CLEAN_TOLERANCE_DB = 1.0  # the defense may cost a clean reconstruction at most this much PSNR on the tiny model
PROTOCOL = """name: defense
seed: 0
perturbations:
  - {name: clean, kind: clean}
  - {name: pgd, kind: pgd, norm: linf, budget: {value: 0.05, convention: absolute}, steps: 2}
  - name: pgd_blind
    kind: pgd
    norm: linf
    budget: {value: 0.05, convention: absolute}
    steps: 2
    transfer_from: varnet
"""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from robustness_fixtures import loaded_setup

    root = tmp_path_factory.mktemp("defense")
    models, batch = loaded_setup(root, ("varnet",))
    return root, models["varnet"], batch


def psnr(image: torch.Tensor, target: torch.Tensor) -> float:
    return float(10 * torch.log10(target.max() ** 2 / ((image - target) ** 2).mean()))


def test_extra_masks_keep_the_column_count_and_the_centre():
    mask = torch.zeros(2, 1, 4, 16, 1)
    mask[0, :, :, [0, 6, 7, 8, 9, 13]] = 1
    mask[1, :, :, [2, 7, 8, 9, 11]] = 1
    for drawn in extra_masks(mask, 3, seed=0):
        assert drawn.shape == mask.shape
        for original, new in zip(mask[:, 0, 0, :, 0], drawn[:, 0, 0, :, 0]):
            assert new.sum() == original.sum()
            assert new[_centre_run(original.bool())].all()


def test_the_defense_never_leaves_its_ball_and_keeps_the_clean_image(loaded):
    _, varnet, batch = loaded
    settings = DefenseSettings.reduced("varnet", radius=0.02, extra_masks=2, iterations=4, step_fraction=0.5)
    defended = DefendedReconstructor("defended", settings, varnet)
    delta = 0.05 * torch.randn_like(batch["masked_kspace"]) * (batch["sampling_mask"] != 0)
    shift = defended.purification(batch, delta, TestTimeSettings())
    assert shift.abs().max() <= settings.radius * (1 + 1e-6) and shift.abs().max() > 0
    assert (shift[(batch["sampling_mask"] == 0).expand_as(shift)] == 0).all()  # only acquired entries move

    with torch.no_grad():
        clean = varnet.reconstruct(batch, None, TestTimeSettings())
        purified = defended.reconstruct(batch, None, TestTimeSettings())
    target = batch["target"]
    for i in range(len(target)):
        assert psnr(purified[i], target[i]) >= psnr(clean[i], target[i]) - CLEAN_TOLERANCE_DB


def test_adaptive_gradient_goes_through_the_defense(loaded):
    _, varnet, batch = loaded
    defended = DefendedReconstructor(
        "defended", DefenseSettings(wraps="varnet", iterations=1, extra_masks=1, stages=1), varnet
    )
    delta = torch.zeros_like(batch["masked_kspace"], requires_grad=True)
    defended.reconstruct(batch, delta, TestTimeSettings()).pow(2).sum().backward()
    assert torch.isfinite(delta.grad).all() and delta.grad.abs().max() > 0


def test_defense_in_smug_evaluate_under_blind_and_adaptive_attacks(loaded, tmp_path, capsys):
    from smug_plugin.cli.main import main

    root, _, _ = loaded
    spec = f"varnet={root / 'varnet' / 'config.yaml'}:{root / 'varnet' / 'model_0.pt'}"
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PROTOCOL)
    bad = tmp_path / "bad.yaml"
    bad.write_text("defense: {wraps: nobody}\n")
    args = ["evaluate", "--model", spec, "--protocol", str(protocol), "--data-root", str(root / "data")]
    options = ["--max-slices", "2", "--batch-size", "2", "--threads", "1", "--no-progress"]
    assert main([*args, "--model", f"d={bad}", "--output-dir", str(tmp_path / "bad"), *options]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'nobody'" in err and str(bad) in err

    defense = tmp_path / "defense.yaml"
    defense.write_text("defense: {wraps: varnet, radius: 0.02, extra_masks: 1, iterations: 2}\n")
    out = tmp_path / "out"
    assert main([*args, "--model", f"defended={defense}", "--output-dir", str(out), *options]) == 0
    report = json.loads((out / "robustness.json").read_text())
    records = {(r["condition"], r["model"], r["slice"]): r for r in report["records"]}
    for i in range(2):
        blind, undefended = records[("main/pgd_blind", "defended", i)], records[("main/pgd_blind", "varnet", i)]
        assert blind["source"] == "varnet" and blind["delta_l2"] == pytest.approx(undefended["delta_l2"])
        assert records[("main/pgd", "defended", i)]["delta_linf"] > 0
