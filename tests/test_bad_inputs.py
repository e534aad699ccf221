"""Bad inputs to ``smug evaluate``: exit status 2 with one line naming the file, the key and the fix, nothing executed
from a checkpoint, no result file written; or, for data DIRECT skips and configs that contradict the training run,
a complete report that says so."""

import csv
import json
import os
import pathlib
import shutil

import h5py
import numpy as np
import pytest
import torch
from conftest import restored_logging_and_threads
from omegaconf import OmegaConf
from robustness_fixtures import make_setup, write_direct_yaml

from smug_plugin.cli.main import main
from smug_plugin.robustness.reconstructors import direct_engines as checkpoints
from smug_plugin.robustness.reconstructors.direct_engines import save_fresh_checkpoint

CLEAN = "perturbations: [{name: clean, kind: clean}]\n"
RESULTS = ("robustness.json", "robustness.csv", "robustness.md", "records.jsonl", "manifest.json")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    with restored_logging_and_threads():
        setup = make_setup(root, ("varnet", "smug"))
    setup["protocol"] = root / "clean.yaml"
    setup["protocol"].write_text(CLEAN)
    for model in ("varnet", "smug"):  # make_setup's layout
        setup[f"{model}_config"] = root / model / "config.yaml"
        setup[f"{model}_checkpoint"] = root / model / "model_0.pt"
    setup["config"], setup["checkpoint"] = setup["varnet_config"], setup["varnet_checkpoint"]
    return setup


def evaluate(setup, out, *extra, config=None, checkpoint=None, protocol=None, data=None) -> int:
    """``smug evaluate`` of model ``m``, the varnet (or the given files), on 2 slices, in this process."""
    spec = f"m={config or setup['config']}:{checkpoint or setup['checkpoint']}"
    args = ["evaluate", "--model", spec, "--protocol", str(protocol or setup["protocol"])]
    args += ["--data-root", str(data or setup["data"]), "--output-dir", str(out), "--max-slices", "2", "--no-progress"]
    with restored_logging_and_threads():  # DIRECT binds its log handlers to this test's captured output
        return main([*args, *extra])


def assert_refused(status: int, stderr: str, out: pathlib.Path, *needles: str) -> None:
    """Exit 2, one error line naming every needle, no traceback, no result file."""
    errors = [line for line in stderr.splitlines() if line.startswith("smug evaluate: error:")]
    assert status == 2 and len(errors) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in: {errors[0]}"
    assert not any((out / name).exists() for name in RESULTS)


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fails the test if a model is loaded: the input must be refused before."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(checkpoints, "load_reconstructor", refuse)


# --- checkpoints ---------------------------------------------------------------------------------------------------


class _RunsCode:
    """A pickled object whose unpickling runs a shell command that creates ``marker``."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a_checkpoint_that_would_execute_code_is_refused_without_executing_it(
    setup, tmp_path, capsys, monkeypatch, zipped
):
    marker, evil = tmp_path / "executed", tmp_path / "model_9.pt"
    torch.save({"model": _RunsCode(marker)}, evil, _use_new_zipfile_serialization=zipped)
    # torch's escape hatch would turn DIRECT's plain torch.load into an unpickling that runs the command.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    status = evaluate(setup, tmp_path / "out", checkpoint=evil)
    assert_refused(status, capsys.readouterr().err, tmp_path / "out", str(evil), "would execute code", "weights_only")
    assert not marker.exists()


def _state(setup) -> dict:
    return torch.load(setup["checkpoint"], weights_only=True)["model"]


def _write(path: pathlib.Path, content) -> pathlib.Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


CHECKPOINTS = {
    "random bytes": (lambda s: bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), ["corrupt"]),
    "truncated": (lambda s: s["checkpoint"].read_bytes()[:2000], ["truncated", "zip archive"]),
    "empty": (lambda s: b"", ["an empty file"]),
    "an h5 file": (lambda s: (s["data"] / "file0.h5").read_bytes(), ["HDF5"]),
    "a YAML": (lambda s: s["config"].read_bytes(), ["a text file"]),
    "a tensor": (lambda s: torch.zeros(3), ["not a DIRECT checkpoint", "Tensor"]),
    "no model key": (lambda s: {"weights": _state(s)}, ["not a DIRECT checkpoint", "no weights under 'model'"]),
    "missing keys": (
        lambda s: {"model": {k: v for k, v in _state(s).items() if not k.startswith("layers_list.1.")}},
        ["does not fit", "missing, e.g. layers_list.1."],
    ),
    "unexpected keys": (
        lambda s: {"model": {**_state(s), "extra.weight": torch.zeros(1)}},
        ["does not fit", "1 tensor unexpected, e.g. extra.weight"],
    ),
    "size mismatch": (
        lambda s: {"model": {k: torch.zeros(1, *v.shape[1:]) if v.ndim == 4 else v for k, v in _state(s).items()}},
        ["does not fit", "of another shape", "in the checkpoint"],
    ),
    "another model": (
        lambda s: torch.load(s["smug_checkpoint"], weights_only=True),
        ["does not fit", "varnet.varnet.EndToEndVarNet", "unexpected, e.g. denoiser."],
    ),
}


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_corrupt_or_foreign_checkpoints_are_named_with_what_they_are(setup, tmp_path, capsys, kind):
    make, needles = CHECKPOINTS[kind]
    bad = _write(tmp_path / "model_7.pt", make(setup))
    status = evaluate(setup, tmp_path / "out", checkpoint=bad)
    assert_refused(status, capsys.readouterr().err, tmp_path / "out", str(bad), *needles)


def test_a_checkpoint_that_fits_is_loaded_bit_for_bit(setup, tmp_path):
    from smug_plugin.robustness.reconstructors.direct_engines import ModelSpec, load_reconstructor

    spec = ModelSpec.parse(setup["specs"][0])
    model = load_reconstructor(spec, "cpu", tmp_path / "logs")
    loaded, saved = model.module.state_dict(), _state(setup)
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)


# --- model YAMLs ---------------------------------------------------------------------------------------------------


def _yaml_variant(setup, kind: str, path: pathlib.Path) -> pathlib.Path:
    if kind == "malformed":
        path.write_text(setup["config"].read_text().replace("num_layers: 2", "num_layers: [2"))
        return path
    cfg = OmegaConf.load(setup["config"])
    if kind == "unknown key":
        cfg.model.num_layerz = cfg.model.pop("num_layers")
    elif kind == "bad value":
        cfg.model.num_layers = 2.5
    elif kind == "no model section":
        cfg.pop("model")
    elif kind == "no inference section":
        cfg.pop("inference")
    OmegaConf.save(cfg, path)
    return path


YAMLS = {
    "malformed": ["not valid YAML", "line ", "fix the file"],
    "unknown key": ["unknown key 'num_layerz'", "Did you mean", "num_layers", "Valid keys of EndToEndVarNetConfig"],
    "bad value": ["bad value for 'num_layers'", "2.5"],
    "no model section": ["no 'model:' section", "config.yaml"],
    "no inference section": ["no 'inference:' section"],
}


@pytest.mark.parametrize("kind", list(YAMLS))
def test_bad_model_yamls_are_one_line_errors_naming_the_key(setup, tmp_path, capsys, kind):
    bad = _yaml_variant(setup, kind, tmp_path / "model.yaml")
    status = evaluate(setup, tmp_path / "out", config=bad)
    assert_refused(status, capsys.readouterr().err, tmp_path / "out", str(bad), *YAMLS[kind])


# --- command line --------------------------------------------------------------------------------------------------


def test_cuda_without_a_gpu_is_refused_before_loading(setup, tmp_path, capsys, monkeypatch, no_model_loading):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status = evaluate(setup, tmp_path / "out", "--device", "cuda")
    assert_refused(status, capsys.readouterr().err, tmp_path / "out", "--device cuda", "no usable CUDA GPU", "cpu")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--device", "gpu"], ["--device 'gpu' is not a torch device"]),
        (["--batch-size", "0"], ["--batch-size must be positive"]),
        (["--threads", "-1"], ["--threads must be positive"]),
        (["--seed", "-3"], ["--seed must be in [0, 2**32 - 1]"]),
    ],
)
def test_bad_options_are_refused_before_loading(setup, tmp_path, capsys, no_model_loading, extra, needles):
    status = evaluate(setup, tmp_path / "out", *extra)
    assert_refused(status, capsys.readouterr().err, tmp_path / "out", *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("below", [False, True], ids=["the file", "a folder below it"])
def test_an_output_dir_that_is_a_file_is_refused(setup, tmp_path, capsys, no_model_loading, below):
    existing = tmp_path / "results"
    existing.write_text("not a folder")
    out = existing / "run" if below else existing
    assert_refused(evaluate(setup, out), capsys.readouterr().err, tmp_path, str(existing), "is a file, not a folder")
    assert existing.read_text() == "not a folder"


# --- protocols -----------------------------------------------------------------------------------------------------

PROTOCOLS = {
    "fractional unrolls": (CLEAN + "sweeps: {unrolls: {values: [1.5, 2]}}", ["'unrolls'", "whole", "1.5"]),
    "fractional num_samples": (CLEAN + "sweeps: {num_samples: {values: [2.5]}}", ["'num_samples'", "whole", "2.5"]),
    "fractional steps": ("perturbations: [{name: p, kind: pgd, budget: 0.1, steps: 1.5}]", ["'steps'", "integer"]),
    "fractional eot": ("perturbations: [{name: p, kind: pgd, budget: 0.1, eot_samples: 2.5}]", ["'eot_samples'"]),
    "boolean count": ("perturbations: [{name: p, kind: pgd, budget: 0.1, steps: true}]", ["'steps'", "integer"]),
    "unknown convention": (
        "perturbations: [{name: p, kind: pgd, budget: {value: 0.1, convention: percent}}]",
        ["Unknown budget convention 'percent'", "absolute, relative_max, relative_l2"],
    ),
    "unknown gradient": (
        "perturbations: [{name: p, kind: pgd, budget: 0.1, gradient: exact}]",
        ["Unknown gradient 'exact'", "full, published"],
    ),
    "unknown norm": ("perturbations: [{name: p, kind: pgd, budget: 0.1, norm: l1}]", ["Unknown norm 'l1'", "linf, l2"]),
    "boolean budget": ("perturbations: [{name: p, kind: gaussian, budget: true}]", ["Budget value", "True"]),
    "nan budget": ("perturbations: [{name: p, kind: gaussian, budget: .nan}]", ["Budget value", "finite"]),
    "nan step": ("perturbations: [{name: p, kind: pgd, budget: 0.1, step_fraction: .nan}]", ["finite number"]),
    "zero step": ("perturbations: [{name: p, kind: pgd, budget: 0.1, step_fraction: 0}]", ["step_fraction > 0"]),
    "nan sigma": (CLEAN + "sweeps: {sigma: {values: [.nan]}}", ["'sigma'", "non-negative numbers"]),
    "acceleration below 1": (CLEAN + "sweeps: {acceleration: {values: [0.2]}}", ["accelerations are >= 1"]),
    "bad centre product": (
        CLEAN + "sweeps: {acceleration: {values: [2], center_fraction_product: -1}}",
        ["'center_fraction_product' must be a number > 0"],
    ),
    "repeated value": (CLEAN + "sweeps: {unrolls: {values: [2, 2]}}", ["lists a value twice"]),
    "values not a list": (CLEAN + "sweeps: {unrolls: {values: 2}}", ["non-empty 'values' list"]),
    "perturbations not a list": (
        CLEAN + "sweeps: {unrolls: {values: [2], perturbations: clean}}",
        ["'perturbations' must be a list of names"],
    ),
    "negative budget sweep": (
        "perturbations: [{name: p, kind: pgd, budget: 0.1}]\nsweeps: {budget: {perturbation: p, values: [-1]}}",
        ["'budget'", "non-negative"],
    ),
    "fractional seed": ("seed: 1.5\n" + CLEAN, ["'seed' must be a whole number"]),
    "slash in a name": ("perturbations: [{name: a/b, kind: clean}]", ["without '/'"]),
    "unknown transfer source": (
        "perturbations: [{name: p, kind: pgd, budget: 0.1, transfer_from: vnet}]",
        ["transfers from 'vnet'", "not a --model (models: m;"],
    ),
    "unknown top-level key": ("perturbation: []\n" + CLEAN, ["unknown top-level keys ['perturbation']"]),
    "malformed": (CLEAN + "sweeps: {unrolls: [", ["Could not parse", "not valid YAML", "line"]),
}


@pytest.mark.parametrize("kind", list(PROTOCOLS))
def test_bad_protocols_are_refused_before_any_model_is_loaded(setup, tmp_path, capsys, no_model_loading, kind):
    text, needles = PROTOCOLS[kind]
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(text)
    status = evaluate(setup, tmp_path / "out", protocol=protocol)
    assert_refused(status, capsys.readouterr().err, tmp_path / "out", str(protocol), *needles)


# --- data ----------------------------------------------------------------------------------------------------------


def _edit_file0(data: pathlib.Path, kind: str) -> None:
    with h5py.File(data / "file0.h5", "r+") as f:
        if kind == "header contradicts k-space":
            header = f["ismrmrd_header"][()].decode()
            del f["ismrmrd_header"]
            f["ismrmrd_header"] = header.replace("<y>24</y>", "<y>32</y>", 1)
        elif kind == "header not XML":
            del f["ismrmrd_header"]
            f["ismrmrd_header"] = "matrix 32 x 24"
        elif kind == "no kspace":
            del f["kspace"]
        else:
            kspace = f["kspace"][()]
            del f["kspace"]
            f["kspace"] = kspace[:, 0] if kind == "3-D k-space" else np.abs(kspace).astype(np.float32)


DATA = {
    "header contradicts k-space": ["encodedSpace matrixSize y=32", "k-space width 24", "delete the 'ismrmrd_header'"],
    "header not XML": ["not an ISMRMRD XML header", "delete the 'ismrmrd_header'"],
    "3-D k-space": ["(3, 32, 24)", "no coil axis", "(slices, coils, H, W)"],
    "no kspace": ["no 'kspace' dataset", "reconstruction_rss", "(slices, coils, H, W)"],
    "real k-space": ["kspace is real (float32", "complex"],
}


@pytest.fixture
def data_copy(setup, tmp_path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(setup["data"], tmp_path / "data"))


@pytest.mark.parametrize("kind", list(DATA))
def test_data_that_direct_would_misread_is_refused(setup, tmp_path, capsys, no_model_loading, data_copy, kind):
    _edit_file0(data_copy, kind)
    status = evaluate(setup, tmp_path / "out", data=data_copy)
    assert_refused(status, capsys.readouterr().err, tmp_path / "out", str(data_copy / "file0.h5"), *DATA[kind])


PAPER_NOISE = "perturbations: [{name: n, kind: gaussian, budget: {value: 0.02, convention: paper}}]\n"


def _undersample_file0(data: pathlib.Path) -> None:
    """file0.h5 as fastMRI's test files: k-space of every other column and the 'mask' dataset saying which."""
    with h5py.File(data / "file0.h5", "r+") as f:
        mask = np.arange(f["kspace"].shape[-1]) % 2 == 0
        kspace = f["kspace"][()] * mask
        del f["kspace"]
        f["kspace"], f["mask"] = kspace, mask


def test_paper_budgets_on_undersampled_data_are_refused_before_loading(
    setup, tmp_path, capsys, no_model_loading, data_copy
):
    _undersample_file0(data_copy)
    protocol = tmp_path / "paper.yaml"
    protocol.write_text(PAPER_NOISE)
    status = evaluate(setup, tmp_path / "out", protocol=protocol, data=data_copy)
    needles = [str(data_copy / "file0.h5"), "'mask' dataset", "needs the fully sampled k-space", "convention: absolute"]
    assert_refused(status, capsys.readouterr().err, tmp_path / "out", *needles)


def test_absolute_budgets_still_run_on_undersampled_data(setup, tmp_path, data_copy):
    _undersample_file0(data_copy)
    protocol = tmp_path / "absolute.yaml"
    protocol.write_text(PAPER_NOISE.replace("paper", "absolute"))
    assert evaluate(setup, tmp_path / "out", protocol=protocol, data=data_copy) == 0
    doc = json.loads((tmp_path / "out" / "robustness.json").read_text())
    assert [r["eps"] for r in doc["records"]] == pytest.approx([0.02, 0.02])


def test_an_unreadable_data_root_is_refused(setup, tmp_path, capsys, no_model_loading, data_copy):
    for name in ("file0.h5", "file1.h5"):
        (data_copy / name).write_bytes((data_copy / name).read_bytes()[:1000])
    status = evaluate(setup, tmp_path / "out", data=data_copy)
    assert_refused(status, capsys.readouterr().err, tmp_path / "out", "None of the 2 h5 files", "truncated")
    for name in ("file0.h5", "file1.h5"):
        (data_copy / name).unlink()
    status = evaluate(setup, tmp_path / "out", data=data_copy)
    assert_refused(status, capsys.readouterr().err, tmp_path / "out", "No *.h5 files", str(data_copy))


def _strict_json(path: pathlib.Path) -> dict:
    def refuse(constant: str):
        raise ValueError(f"{path} holds {constant}, which strict JSON parsers reject")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_truncated_file_is_listed_in_the_report_and_left_out_of_the_numbers(setup, tmp_path, capsys, data_copy):
    content = (data_copy / "file0.h5").read_bytes()
    (data_copy / "file0.h5").write_bytes(content[: len(content) // 2])
    out = tmp_path / "out"
    assert evaluate(setup, out, "--max-slices", "3", data=data_copy) == 0
    assert "WARNING: file0.h5: skipped" in capsys.readouterr().err
    doc = _strict_json(out / "robustness.json")
    assert [issue["file"] for issue in doc["data_issues"]] == ["file0.h5"]
    assert "truncated" in doc["data_issues"][0]["problem"]
    assert {r["file"] for r in doc["records"]} == {"file1.h5"}
    head = (out / "robustness.md").read_text().split("Reference model")[0]
    assert "Data issues" in head and "`file0.h5`: skipped" in head


# --- reports -------------------------------------------------------------------------------------------------------


def test_reports_are_strict_json_say_na_and_follow_the_umask(setup, tmp_path):
    out = tmp_path / "out"
    previous = os.umask(0o027)
    try:
        # One slice: its confidence interval is undefined; a clean perturbation: its relative errors are 0 / 0.
        assert evaluate(setup, out, "--max-slices", "1") == 0
    finally:
        os.umask(previous)
    doc = _strict_json(out / "robustness.json")
    row = doc["summary"][0]
    assert row["psnr_ci95"] is None and doc["records"][0]["rob_ratio"] is None and row["psnr_mean"] is not None
    with open(out / "robustness.csv", newline="") as f:
        csv_row = next(csv.DictReader(f))
    assert csv_row["psnr_ci95"] == "n/a" and float(csv_row["psnr_mean"]) == pytest.approx(row["psnr_mean"])
    for name in ("robustness.json", "robustness.csv", "robustness.md", "records.jsonl", "panels.png"):
        assert (out / name).stat().st_mode & 0o777 == 0o640, name


# --- a checkpoint evaluated under another model's YAML -------------------------------------------------------------


def test_a_config_that_contradicts_the_training_run_is_warned_about_and_reported(setup, tmp_path, capsys):
    """A MoDL run (config.yaml and checkpoint as `direct train` leaves them) evaluated with a SMUG YAML: the weights
    fit (the networks are the same), so only the run's config.yaml can tell."""
    run = tmp_path / "modl_run"
    cfg = OmegaConf.load(setup["smug_config"])
    cfg.model.model_name = "smug.modl.MoDL"
    for key in ("sigma", "num_samples"):
        cfg.model.pop(key)
    run.mkdir()
    OmegaConf.save(cfg, run / "config.yaml")
    checkpoint = save_fresh_checkpoint(run / "config.yaml", run)
    out = tmp_path / "out"
    assert evaluate(setup, out, config=setup["smug_config"], checkpoint=checkpoint) == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "model_name=smug.smug.SMUG (trained: smug.modl.MoDL)" in err
    warnings = _strict_json(out / "robustness.json")["warnings"]
    assert len(warnings) == 1 and str(run / "config.yaml") in warnings[0] and "smug.modl.MoDL" in warnings[0]
    head = (out / "robustness.md").read_text().split("Reference model")[0]
    assert "Warnings" in head and "(trained: smug.modl.MoDL)" in head


def test_smoothing_settings_that_differ_from_the_training_run_are_warned_about(setup, tmp_path, capsys):
    run = tmp_path / "smug_run"
    shutil.copytree(setup["smug_checkpoint"].parent, run, ignore=shutil.ignore_patterns("logs"))
    evaluated = write_direct_yaml(tmp_path / "eval.yaml", "smug", sigma=0.2)
    assert evaluate(setup, tmp_path / "out", config=evaluated, checkpoint=run / "model_0.pt") == 0
    assert "sigma=0.2 (trained: 0.05)" in capsys.readouterr().err
    # A YAML that agrees with the run's gives no warning.
    agreeing = write_direct_yaml(tmp_path / "agree.yaml", "smug")
    assert evaluate(setup, tmp_path / "out2", config=agreeing, checkpoint=run / "model_0.pt") == 0
    assert "WARNING" not in capsys.readouterr().err
    assert _strict_json(tmp_path / "out2" / "robustness.json")["warnings"] == []
