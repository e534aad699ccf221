"""End-to-end tests of ``smug evaluate`` on freshly initialised DIRECT-native EndToEndVarNet and RIM checkpoints."""

import csv
import json
import pathlib
import shutil

import pytest
import torch
from robustness_fixtures import make_setup

from smug_plugin.cli.main import main
from smug_plugin.robustness.attacks import Budget
from smug_plugin.robustness.run.protocol import shipped_protocols

SMOKE = "smoke"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("robustness"))


def _run(setup, out: pathlib.Path, *extra: str, protocol: str | pathlib.Path = SMOKE, specs=None) -> int:
    models = sum([["--model", m] for m in (specs or setup["specs"])], [])
    args = ["evaluate", *models, "--protocol", str(protocol), "--data-root", str(setup["data"])]
    return main([*args, "--output-dir", str(out), "--batch-size", "2", "--max-slices", "4", "--no-progress", *extra])


def _records(out: pathlib.Path) -> dict:
    doc = json.loads((out / "robustness.json").read_text())
    return {(r["condition"], r["model"], r["file"], r["slice"]): r for r in doc["records"]}


@pytest.fixture(scope="module")
def full_run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    assert _run(setup, out) == 0
    return out


def test_outputs_exist_and_match_schema(full_run):
    doc = json.loads((full_run / "robustness.json").read_text())
    assert doc["schema_version"] == 1 and doc["run"]["complete"] is True
    assert {m["name"] for m in doc["models"]} == {"varnet", "rim"}
    assert doc["models"][0]["model_name"] == "varnet.varnet.EndToEndVarNet"
    assert doc["versions"]["direct-recon"] and doc["versions"]["torch"]
    assert "eps=0.05" in doc["budgets"]["pgd"] and "absolute" in doc["budgets"]["pgd"]
    conditions = {r["condition"] for r in doc["records"]}
    assert {"main/clean", "main/noise", "main/pgd", "main/pgd_l2", "main/pgd_image"} <= conditions
    assert {"acceleration=2/clean", "acceleration=8/clean", "budget=0.01/pgd", "budget=0.1/pgd"} <= conditions
    # 4 slices x 2 models for each condition.
    assert len(doc["records"]) == 4 * 2 * len(conditions)
    for r in doc["records"]:
        assert {"psnr", "ssim", "nmse", "rob_err", "seed", "eps", "file", "slice"} <= set(r)
        if r["perturbation"] == "pgd":
            assert r["delta_linf"] <= r["eps"] * (1 + 1e-5)
        if r["perturbation"] == "pgd_l2":
            assert r["delta_l2"] <= r["eps"] * (1 + 1e-4)
        if r["perturbation"] == "clean":
            assert r["rob_err"] == 0
    with open(full_run / "robustness.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and {"condition", "model", "psnr_mean", "psnr_ci95", "psnr_delta_ref", "description"} <= set(rows[0])
    for figure in ("psnr_vs_budget.png", "psnr_vs_acceleration.png", "panels.png"):
        assert (full_run / figure).read_bytes()[:4] == b"\x89PNG"
    md = (full_run / "robustness.md").read_text()
    assert "| varnet |" in md and "| rim |" in md and "pgd PSNR" in md


def test_attack_hurts_more_than_noise(full_run):
    rec = _records(full_run)
    for model in ("varnet", "rim"):
        keys = [k for k in rec if k[0] == "main/clean" and k[1] == model]
        drop_pgd = sum(rec[k]["psnr"] - rec[("main/pgd", *k[1:])]["psnr"] for k in keys)
        drop_noise = sum(rec[k]["psnr"] - rec[("main/noise", *k[1:])]["psnr"] for k in keys)
        assert drop_pgd > drop_noise


def test_same_seed_same_numbers(setup, full_run, tmp_path):
    assert _run(setup, tmp_path / "again") == 0
    a, b = _records(full_run), _records(tmp_path / "again")
    assert a.keys() == b.keys()
    assert all(a[k]["psnr"] == b[k]["psnr"] and a[k]["seed"] == b[k]["seed"] for k in a)


def test_resume_completes_an_interrupted_run(setup, full_run, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(full_run, out)
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    done = [i for i, line in enumerate(lines) if '"type": "done"' in line]
    # Keep three finished units plus half a record of the fourth, as a kill mid-write would leave.
    kept = "".join(lines[: done[2] + 1]) + lines[done[2] + 1][:25]
    (out / "records.jsonl").write_text(kept)
    for name in ("robustness.json", "robustness.csv", "robustness.md"):
        (out / name).unlink()
    assert _run(setup, out) == 2  # refuses to overwrite without --resume
    assert _run(setup, out, "--resume") == 0
    a, b = _records(full_run), _records(out)
    assert a.keys() == b.keys()
    assert all(a[k]["psnr"] == b[k]["psnr"] for k in a)
    assert _run(setup, out, "--resume", "--seed", "5") == 2  # different settings cannot resume


def test_transferred_perturbation_is_applied_unchanged(setup, tmp_path, monkeypatch):
    from smug_plugin.robustness.reconstructors.interface import NativeReconstructor

    protocol = tmp_path / "transfer.yaml"
    protocol.write_text(
        "perturbations:\n"
        "  - {name: clean, kind: clean}\n"
        "  - {name: pgd_from_varnet, kind: pgd, budget: 0.05, steps: 2, transfer_from: varnet}\n"
    )
    applied: dict[str, list[torch.Tensor]] = {}
    original = NativeReconstructor.reconstruct

    def spy(self, batch, kspace_delta, settings):
        if kspace_delta is not None and not torch.is_grad_enabled():
            applied.setdefault(self.name, []).append(kspace_delta.clone())
        return original(self, batch, kspace_delta, settings)

    monkeypatch.setattr(NativeReconstructor, "reconstruct", spy)
    assert _run(setup, tmp_path / "out", protocol=protocol) == 0
    # The final evaluation of each model (last no-grad call per batch) gets the source's delta, bit for bit.
    varnet_final = applied["varnet"][-1]
    assert torch.equal(applied["rim"][-1], varnet_final) and varnet_final.abs().sum() > 0
    rec = _records(tmp_path / "out")
    for (cond, _model, f, s), r in rec.items():
        if cond == "main/pgd_from_varnet":
            assert r["source"] == "varnet"
            assert r["delta_l2"] == rec[(cond, "varnet", f, s)]["delta_l2"]


def test_transfer_matrix_applies_each_models_attack_to_every_model(setup, tmp_path):
    protocol = tmp_path / "matrix.yaml"
    protocol.write_text(
        "perturbations:\n"
        "  - {name: clean, kind: clean}\n"
        "  - {name: pgd, kind: pgd, budget: 0.05, steps: 2, transfer_from: each}\n"
    )
    assert _run(setup, tmp_path / "out", protocol=protocol) == 0
    rec = _records(tmp_path / "out")
    sources = {r["source"] for (cond, *_), r in rec.items() if cond.startswith("main/pgd@")}
    assert sources == {"varnet", "rim"}
    md = (tmp_path / "out" / "robustness.md").read_text()
    assert "Transfer matrix, pgd" in md
    matrix = md.split("Transfer matrix, pgd")[1].split("\n## ")[0]  # up to the next section
    assert "| varnet |" in matrix and "| rim |" in matrix and "n/a" not in matrix
    # White-box cells (the diagonal) come from each model's own attack: the same delta as the source's.
    for (cond, _model, f, s), r in rec.items():
        if cond.startswith("main/pgd@"):
            source = cond.split("@")[1]
            assert r["delta_l2"] == rec[(cond, source, f, s)]["delta_l2"]


def test_unroll_sweep_is_na_for_native_models(setup, tmp_path):
    protocol = tmp_path / "unrolls.yaml"
    protocol.write_text("perturbations: [{name: clean, kind: clean}]\nsweeps: {unrolls: {values: [2, 4]}}\n")
    assert _run(setup, tmp_path / "out", protocol=protocol) == 0
    md = (tmp_path / "out" / "robustness.md").read_text()
    assert "unrolls sweep" in md and "| varnet | n/a | n/a |" in md


@pytest.mark.parametrize(
    "text, message",
    [
        ("perturbations: [{name: a, kind: fgsm, budget: 0.1}]", "Unknown perturbation kind"),
        ("perturbations: [{name: a, kind: pgd, budget: -0.1}]", "bad budget"),
        ("perturbations: [{name: a, kind: pgd, budget: 0.1, stepz: 3}]", "unknown keys"),
        ("perturbations: [{name: a, kind: clean}\n  - oops: [", "Could not parse"),
        ("perturbations: [{name: a, kind: clean}]\nsweeps: {budget: {perturbation: b, values: [1]}}", "not defined"),
    ],
)
def test_bad_protocol_gives_clear_error(setup, tmp_path, capsys, text, message):
    protocol = tmp_path / "bad.yaml"
    protocol.write_text(text)
    assert _run(setup, tmp_path / "out", protocol=protocol) == 2
    assert message in capsys.readouterr().err


def test_missing_checkpoint_gives_clear_error(setup, tmp_path, capsys):
    spec = setup["specs"][0].rsplit(":", 1)[0] + ":" + str(tmp_path / "model_404.pt")
    assert _run(setup, tmp_path / "out", specs=[spec]) == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "model_404.pt" in err


def test_nan_kspace_is_refused(setup):
    from smug_plugin.robustness.reconstructors.direct_engines import ModelSpec, load_reconstructor
    from smug_plugin.robustness.run.batches import build_dataset, iterate_batches, load_batch

    model = load_reconstructor(ModelSpec.parse(setup["specs"][0]), "cpu", setup["data"].parent / "logs")
    dataset = build_dataset(model, setup["data"], None, None)
    _, indices = next(iterate_batches(model, dataset, 2, None))
    batch = load_batch(dataset, indices, "cpu")
    assert torch.isfinite(batch["masked_kspace"]).all()

    class Poisoned:
        ndim = dataset.ndim

        def __getitem__(self, i):
            sample = dataset[i]
            sample["masked_kspace"][0, 0, 0, 0] = float("nan")
            return sample

    with pytest.raises(ValueError, match="NaN"):
        load_batch(Poisoned(), indices, "cpu")


class _ToyRandomized:
    """Stands in for a smoothed model under the attack: a linear zero-filled reconstruction plus output noise
    drawn from a generator seeded by the noise seed of each call."""

    name = "toy"
    is_randomized = True
    sigma = 0.1

    def __init__(self):
        self.seeds = []

    def reconstruct(self, batch, kspace_delta=None, noise_seed=None):
        self.seeds.append(noise_seed)
        y = batch["masked_kspace"] + (0 if kspace_delta is None else kspace_delta)
        g = torch.Generator().manual_seed(noise_seed)
        return y.sum(dim=(1, 4)) + self.sigma * torch.randn(y.shape[0], *y.shape[2:4], generator=g)


@pytest.mark.parametrize("eot", [1, 4])
def test_attack_draws_fresh_noise_per_step_or_per_eot_sample(eot):
    from smug_plugin.robustness.attacks import Targets
    from smug_plugin.robustness.attacks.pgd import PGD

    toy = _ToyRandomized()
    mask = torch.ones(2, 1, 4, 3, 1, dtype=torch.bool)
    batch = {"masked_kspace": torch.randn(2, 2, 4, 3, 2), "sampling_mask": mask}
    attack = PGD(budget=Budget(0.1), steps=3, eot_samples=eot)
    delta = attack(toy, batch, Targets(torch.zeros(2, 4, 3)), seed=100).kspace_delta
    seeds = toy.seeds
    # steps x eot gradient draws plus eot draws scoring the final iterate, all distinct.
    assert len(seeds) == (3 + 1) * eot and len(set(seeds)) == len(seeds)
    assert delta.abs().max() <= 0.1 + 1e-6


@pytest.mark.parametrize("name", sorted(shipped_protocols()))
def test_shipped_protocols_load(name):
    from smug_plugin.robustness.run.protocol import load_protocol

    protocol = load_protocol(name)
    assert protocol.conditions(), f"protocol '{name}' defines no condition to evaluate"


def test_table_shows_mean_std_and_paired_difference(full_run):
    doc = json.loads((full_run / "robustness.json").read_text())
    reference = doc["reference"]
    row = {(r["condition"], r["model"]): r for r in doc["summary"]}
    table = [line.split(" | ") for line in (full_run / "robustness.md").read_text().splitlines() if "|" in line]
    header = table[0]
    for cells in table[2 : 2 + len(doc["models"])]:  # the main table comes first
        model = cells[0].lstrip("| ")
        pgd = row[("main/pgd", model)]
        cell = cells[header.index("pgd PSNR")]
        assert cell.startswith(f"{pgd['psnr_mean']:.2f} ± {pgd['psnr_std']:.2f}")
        # A second model is shown with its paired difference; the reference with none.
        assert ("(" in cell) == (model != reference)
        if model != reference:
            assert cell.endswith(f"({pgd['psnr_delta_ref']:+.2f})")
