"""The classical CS baseline (l1-wavelet SENSE by FISTA): better than zero-filled, differentiable for attacks,
chosen on validation data by `smug cs-tune`, evaluated by `smug evaluate` as ``--model NAME=cs.yaml``."""

import json
import os

import pytest
import torch
import yaml

from smug_plugin.cli.main import main
from smug_plugin.cs.config import load_cs_settings, write_cs_yaml
from smug_plugin.cs.wavelet_sense import L1WaveletSettings
from smug_plugin.robustness.reconstructors.cs_baseline import CSReconstructor
from smug_plugin.robustness.reconstructors.interface import TestTimeSettings

SETTINGS = L1WaveletSettings(weight=0.1, iterations=30, wavelet="db2", levels=2)
PROTOCOL = """name: cs
seed: 0
perturbations:
  - {name: clean, kind: clean}
  - {name: pgd, kind: pgd, norm: linf, budget: {value: 0.05, convention: absolute}, steps: 2}
"""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A fresh VarNet as the data model, and the first batch of 64 x 48, 8-coil phantoms (at the 32 x 24, 4-coil
    size of the other tests, 4x leaves 6 of 24 columns: no method beats zero-filled reliably there)."""
    from robustness_fixtures import write_direct_yaml

    from smug_plugin.data.phantom import write_phantom_h5
    from smug_plugin.robustness.reconstructors.direct_engines import (
        ModelSpec,
        load_reconstructor,
        save_fresh_checkpoint,
    )
    from smug_plugin.robustness.run.batches import build_dataset, iterate_batches, load_batch

    root = tmp_path_factory.mktemp("cs")
    data = write_phantom_h5(root / "data", num_files=1, shape=(64, 48), coils=8, slices=2)
    config = write_direct_yaml(root / "varnet" / "config.yaml", "varnet")
    checkpoint = save_fresh_checkpoint(config, root / "varnet")
    varnet = load_reconstructor(ModelSpec.parse(f"varnet={config}:{checkpoint}"), "cpu", root / "logs")
    # DIRECT seeds each mask with the file's path as the dataset holds it: a path relative to the temporary folder
    # gives every run the same mask, whatever folder pytest numbered.
    cwd = os.getcwd()
    os.chdir(root)
    try:
        dataset = build_dataset(varnet, data.relative_to(root), None, None)
        _, indices = next(iterate_batches(varnet, dataset, 2, None))
        return root, varnet, load_batch(dataset, indices, "cpu")
    finally:
        os.chdir(cwd)


def test_cs_beats_zero_filled(loaded):
    """With its weight chosen from a small grid, as `smug cs-tune` chooses it."""
    from dataclasses import replace

    _, varnet, batch = loaded
    target = batch["target"]  # the coil-combined magnitude image, in the normalised units of the outputs
    with torch.no_grad():
        zero_filled = varnet.operator(batch).adjoint(batch["masked_kspace"]).norm(dim=-1)
        errors = []
        for weight in (0.01, 0.03, 0.1):
            cs = CSReconstructor("CS", replace(SETTINGS, weight=weight, iterations=50), varnet)
            image = cs.reconstruct(batch, None, TestTimeSettings())
            assert image.shape == target.shape
            errors.append(float(((image - target) ** 2).mean()))
    assert min(errors) < 0.95 * float(((zero_filled - target) ** 2).mean())


def test_cs_gradient_wrt_kspace_is_finite(loaded):
    _, varnet, batch = loaded
    cs = CSReconstructor("CS", SETTINGS, varnet)
    delta = torch.zeros_like(batch["masked_kspace"], requires_grad=True)
    cs.reconstruct(batch, delta, TestTimeSettings()).pow(2).sum().backward()
    assert torch.isfinite(delta.grad).all() and delta.grad.abs().max() > 0


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("cs: [1, 2\n", "not valid YAML"),
        ("weight: 0.1\n", "no 'cs:' section"),
        ("cs: {weight: 0.1, step: 2}\n", "unknown key(s) ['step']"),
        ("cs: {weight: -1}\n", "'weight' must be a number >= 0"),
        ("cs: {wavelet: bior2.2}\n", "not orthogonal"),
    ],
)
def test_bad_cs_yaml_gives_a_one_line_error(loaded, tmp_path, capsys, text, named):
    root, _, _ = loaded
    bad = tmp_path / "cs.yaml"
    bad.write_text(text)
    spec = f"varnet={root / 'varnet' / 'config.yaml'}:{root / 'varnet' / 'model_0.pt'}"
    args = ["evaluate", "--model", spec, "--model", f"CS={bad}", "--protocol", "smoke", "--data-root", str(root)]
    assert main([*args, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and named in err
    assert not (tmp_path / "out" / "robustness.json").exists()


def test_cs_yaml_round_trip(tmp_path):
    path = tmp_path / "cs.yaml"
    write_cs_yaml(path, SETTINGS, "a header", {"psnr_by_weight": {0.001: 30.0}})
    assert load_cs_settings(path) == SETTINGS and path.read_text().startswith("# a header\n")


def test_cs_tune_then_evaluate_the_cs_model_under_pgd(loaded, tmp_path):
    root, _, _ = loaded
    data_model = f"{root / 'varnet' / 'config.yaml'}:{root / 'varnet' / 'model_0.pt'}"
    cs_yaml = tmp_path / "cs.yaml"
    tune = ["cs-tune", "--data-model", data_model, "--data-root", str(root / "data"), "--output", str(cs_yaml)]
    options = ["--weights", "1e-4", "1e-2", "--iterations", "10", "--wavelet", "db2", "--levels", "2"]
    assert main([*tune, *options, "--max-slices", "2", "--threads", "1"]) == 0
    tuning = yaml.safe_load(cs_yaml.read_text())["tuning"]
    chosen = load_cs_settings(cs_yaml).weight
    assert chosen == max(tuning["psnr_by_weight"], key=lambda w: tuning["psnr_by_weight"][w])

    protocol = tmp_path / "cs_protocol.yaml"
    protocol.write_text(PROTOCOL)
    out = tmp_path / "out"
    models = ["--model", f"CS={cs_yaml}", "--model", f"varnet={data_model}"]
    args = ["evaluate", *models, "--protocol", str(protocol), "--data-root", str(root / "data"), "--no-progress"]
    assert main([*args, "--output-dir", str(out), "--max-slices", "2", "--batch-size", "2", "--threads", "1"]) == 0
    report = json.loads((out / "robustness.json").read_text())
    cs = {(r["condition"], r["slice"]): r for r in report["records"] if r["model"] == "CS"}
    assert len(cs) == 4 and report["reference"] == "CS"
    for i in range(2):
        assert cs[("main/pgd", i)]["delta_linf"] > 0 and cs[("main/pgd", i)]["psnr"] < cs[("main/clean", i)]["psnr"]
