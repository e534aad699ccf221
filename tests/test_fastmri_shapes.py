"""fastMRI-shaped files (:mod:`smug_plugin.data.fastmri_shaped`): shapes, header and padding as DIRECT reads them,
and the knee and brain projects' data path (crop to the reconstruction size, ESPIRiT maps, mask, normalisation).

The end-to-end runs of every knee and brain project on these files (``direct train``, ``direct predict``,
``smug evaluate``, networks shrunk) run in CI with the projects' data path and two deviations: a two-condition
protocol (``CI_PROTOCOL``) instead of ``paper``, and the sensitivity maps are DIRECT's ``rss_estimate`` instead of
ESPIRiT, which costs 15-25 s per slice and load at 320 x 320 x 15 coils on one
thread (a training sample is loaded once per iteration: minutes per project). ESPIRiT itself is tested on both
anatomies' shapes by the data-path test below; ``SMUG_FASTMRI_E2E=1`` (``make test-fastmri``) runs the end-to-end
tests with the projects exactly as shipped, ESPIRiT included, and ``smug evaluate --protocol paper``.
"""

import concurrent.futures
import json
import os
import pathlib

import h5py
import numpy as np
import pytest
import yaml
from conftest import PROJECTS_DIR, direct_command, run_command, shrink_project, smug_command

from smug_plugin.data.fastmri_shaped import make_fastmri_shaped

FASTMRI_E2E = os.environ.get("SMUG_FASTMRI_E2E") == "1"
# Networks shrunk for the end-to-end runs; the data path stays as shipped.
TINY_NETWORK = {
    "denoiser_hidden_channels": 8,
    "denoiser_num_dubs": 1,
    "denoiser_num_convs_recon": 2,
    "num_steps": 1,
    "num_samples": 2,
    "cg_iters": 2,  # at 320 x 320 x 15 coils the CG's FFTs, not the tiny denoiser, dominate the evaluation
    "denoiser_checkpoint": None,
    "ustab_frozen_denoiser_checkpoint": None,
    # DIRECT's VarNet and RIM
    "num_layers": 2,
    "num_filters": 8,
    "num_pull_layers": 1,
    "length": 2,
    "depth": 1,
    "hidden_channels": 8,
}


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("fastmri_shaped")
    make_fastmri_shaped(root / "knee", "knee", volumes={"train": 1}, slices=1)
    make_fastmri_shaped(root / "brain", "brain", volumes={"train": 1}, slices=1)
    return {"knee": root / "knee", "brain": root / "brain"}


def test_the_files_have_fastmris_shapes_header_and_padding(shaped: dict[str, pathlib.Path]) -> None:
    from direct.data.datasets import FastMRIDataset, _parse_fastmri_header

    expected = {
        "CORPDFS_FBK": (15, 640, 368, 17, 351),
        "AXT2": (16, 640, 320, 0, 320),
        "AXFLAIR": (20, 768, 396, 0, 396),  # the second brain size: validation files of the end-to-end runs
    }
    files = sorted(p for root in shaped.values() for p in (root / "train").glob("*.h5"))
    assert len(files) == 2
    for path in files:
        with h5py.File(path) as h5:
            acquisition = h5.attrs["acquisition"]
            coils, height, width, left, right = expected[acquisition]
            assert h5["kspace"].shape == (1, coils, height, width) and h5["kspace"].dtype == np.complex64
            assert h5["reconstruction_rss"].shape == (1, 320, 320)
            assert {"acquisition", "max", "norm", "patient_id"} <= set(h5.attrs)
            assert 1e-4 < h5.attrs["max"] < 1e-3  # fastMRI's order of magnitude
            header = _parse_fastmri_header(h5["ismrmrd_header"][()])
            kspace = h5["kspace"][0]
        assert header["encoding_size"] == (height, width, 1) and header["reconstruction_size"] == (320, 320, 1)
        assert (header["padding_left"], header["padding_right"]) == (left, right)
        columns = np.abs(kspace).sum(axis=(0, 1))
        assert (columns[:left] == 0).all() and (columns[right:] == 0).all() and (columns[left:right] > 0).all()
        [sample] = FastMRIDataset(path.parent, transform=None)
        assert sample["kspace"].shape == (coils, height, width)


@pytest.mark.parametrize("anatomy", ["knee", "brain"])
def test_the_projects_data_path_crops_and_estimates_espirit_maps(shaped: dict[str, pathlib.Path], anatomy: str) -> None:
    import direct.config.defaults  # noqa: F401
    import torch
    from direct.common.subsample import build_masking_function
    from direct.data.datasets import FastMRIDataset
    from direct.data.mri_transforms import build_mri_transforms
    from direct.data.transforms import fft2, ifft2
    from direct.utils import dict_flatten, remove_keys
    from omegaconf import OmegaConf

    torch.set_num_threads(1)
    cfg = OmegaConf.load(PROJECTS_DIR / f"smug_{anatomy}.yaml").inference.dataset
    transforms = build_mri_transforms(
        forward_operator=fft2,
        backward_operator=ifft2,
        mask_func=build_masking_function(**cfg.transforms.masking),
        **dict_flatten(dict(remove_keys(cfg.transforms, "masking"))),
    )
    assert cfg.transforms.sensitivity_map_estimation.sensitivity_maps_type == "espirit"
    [path] = (shaped[anatomy] / "train").glob("*.h5")
    sample = FastMRIDataset(path.parent, transform=transforms)[0]
    coils = h5py.File(path)["kspace"].shape[1]
    assert sample["masked_kspace"].shape == (coils, 320, 320, 2)
    assert sample["sensitivity_map"].shape == (coils, 320, 320, 2)
    assert sample["target"].shape == (320, 320)
    rss = (sample["sensitivity_map"] ** 2).sum(dim=(0, -1))
    assert torch.isfinite(sample["sensitivity_map"]).all() and rss.max() <= 1 + 1e-3 and rss.max() > 0.5


def knee_and_brain_projects() -> list[pathlib.Path]:
    return sorted(p for p in PROJECTS_DIR.glob("*.yaml") if p.stem.endswith(("_knee", "_brain")))


@pytest.fixture(scope="module")
def e2e_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("fastmri_e2e")
    for anatomy in ("knee", "brain"):
        make_fastmri_shaped(root / anatomy, anatomy, volumes={"train": 1, "val": 1, "test": 1}, slices=1)
    return {"knee": root / "knee", "brain": root / "brain"}


def with_sensitivity_maps(cfg: pathlib.Path, kind: str) -> None:
    """Set every dataset's ``sensitivity_maps_type`` of the YAML at ``cfg`` to ``kind``."""
    text = yaml.safe_load(cfg.read_text())
    datasets = [*text["training"]["datasets"], *text["validation"]["datasets"], text["inference"]["dataset"]]
    for dataset in datasets:
        dataset["transforms"]["sensitivity_map_estimation"]["sensitivity_maps_type"] = kind
    cfg.write_text(yaml.safe_dump(text, sort_keys=False))


# CI evaluates under a two-condition protocol (CI_PROTOCOL: clean and one PGD step in the papers' units), which
# takes the attack's whole path (gradient through the network at these shapes, threat model, reports, cards): the
# other conditions of `paper` differ only in their numbers and are tested on the demo shapes. The paper protocol
# takes about 5 min of one thread per project at these shapes even with the shrunk networks (measured for
# smug_knee: 313 s), so it runs with SMUG_FASTMRI_E2E=1. One `smug evaluate` per anatomy evaluates all its models
# (a process start-up and report per anatomy, not per project).
CI_PROTOCOL = """\
name: fastmri-shapes
seed: 0
perturbations:
  - {name: clean, kind: clean}
  - {name: pgd, kind: pgd, norm: linf, budget: {value: 0.02, convention: paper}, steps: 1}
"""
PIPELINES_AT_ONCE = 2  # CI's two cores: the pipelines are subprocesses with one thread each
DENOISER = "smug.didn.DIDN"  # smug evaluate attacks reconstruction models, not this denoiser


def train_and_predict(
    project: pathlib.Path, data: pathlib.Path, work: pathlib.Path, teacher: pathlib.Path | None
) -> dict:
    """``direct train`` (6 iterations) and ``direct predict`` of a shrunk copy of ``project`` in ``work`` (RS-E2E
    distils ``teacher``, the MoDL pipeline's checkpoint); returns each command's result and the paths the test
    checks."""
    model = yaml.safe_load(project.read_text())["model"]
    overrides = {k: v for k, v in TINY_NETWORK.items() if k in model}
    if "rs_e2e_teacher_checkpoint" in model:
        overrides["rs_e2e_teacher_checkpoint"] = str(teacher)
    cfg = shrink_project(project, work / f"{project.stem}.yaml", model_overrides=overrides)
    if not FASTMRI_E2E:  # CI: DIRECT's cheap map estimate (ESPIRiT is tested above); SMUG_FASTMRI_E2E=1: as shipped
        with_sensitivity_maps(cfg, "rss_estimate")
    common = ["--device", "cpu", "--num-workers", "0"]
    env_threads = ["env", "OMP_NUM_THREADS=1"]
    result: dict = {"work": work, "cfg": cfg, "checkpoint": work / "runs" / project.stem / "model_5.pt"}
    result["attacked"] = model["model_name"] != DENOISER  # a denoiser is not a reconstruction model to attack
    result["train"] = run_command(
        env_threads
        + direct_command("train", str(work / "runs"), "--cfg", str(cfg), *common)
        + ["--training-root", str(data / "train"), "--validation-root", str(data / "val")],
        cwd=work,
        timeout=1800,
    )
    if result["train"].returncode != 0:
        return result
    result["predict"] = run_command(
        env_threads
        + direct_command("predict", str(work / "pred"), "--cfg", str(cfg), "--checkpoint", str(result["checkpoint"]))
        + ["--data-root", str(data / "test"), *common],
        cwd=work,
        timeout=1800,
    )
    return result


def evaluate(pipelines: dict[str, concurrent.futures.Future], data: pathlib.Path, work: pathlib.Path) -> dict:
    """One ``smug evaluate`` (one slice) of every trained reconstruction model of ``pipelines`` (project stem ->
    future of :func:`train_and_predict`), each model named by its project."""
    models = []
    for stem, future in pipelines.items():
        result = future.result()
        if result["train"].returncode == 0 and result["attacked"]:
            models += ["--model", f"{stem}={result['cfg']}:{result['checkpoint']}"]
    work.mkdir(parents=True, exist_ok=True)
    protocol = "paper"
    if not FASTMRI_E2E:
        protocol = str(work / "ci_protocol.yaml")
        pathlib.Path(protocol).write_text(CI_PROTOCOL)
    command = smug_command("evaluate", *models, "--protocol", protocol, "--data-root", str(data / "test"))
    command += ["--output-dir", str(work / "eval"), "--max-slices", "1", "--batch-size", "1", "--threads", "1"]
    return {"evaluate": run_command(command + ["--no-progress"], cwd=work, timeout=3600), "output": work / "eval"}


@pytest.fixture(scope="module")
def e2e_runs(e2e_data: dict[str, pathlib.Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every knee and brain project's ``direct train`` and ``direct predict``, ``PIPELINES_AT_ONCE`` at a time, and
    one ``smug evaluate`` per anatomy of its models once they are trained (result under ``"evaluation"``)."""
    root = tmp_path_factory.mktemp("fastmri_e2e_runs")
    # Per anatomy, RS-E2E last: its teacher is the MoDL pipeline's checkpoint of the same anatomy.
    projects = sorted(knee_and_brain_projects(), key=lambda p: (p.stem.endswith("_brain"), p.stem.startswith("rs_e2e")))
    futures: dict[str, concurrent.futures.Future] = {}
    evaluations: dict[str, concurrent.futures.Future] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=PIPELINES_AT_ONCE) as pool:
        for anatomy in ("knee", "brain"):
            ours = {}
            for project in (p for p in projects if p.stem.endswith(f"_{anatomy}")):
                teacher = None
                if project.stem.startswith("rs_e2e"):
                    teacher = ours[f"modl_{anatomy}"].result()["checkpoint"]
                ours[project.stem] = pool.submit(
                    train_and_predict, project, e2e_data[anatomy], root / project.stem, teacher
                )
            futures |= ours
            # Submitted after its anatomy's trainings: it starts once they all have started, and waits for them.
            evaluations[anatomy] = pool.submit(evaluate, ours, e2e_data[anatomy], root / f"evaluate_{anatomy}")
        results = {stem: future.result() for stem, future in futures.items()}
        for stem, result in results.items():
            result["evaluation"] = evaluations[stem.rsplit("_", 1)[-1]].result()
        return results


@pytest.mark.e2e
@pytest.mark.parametrize("project", knee_and_brain_projects(), ids=lambda p: p.stem)
def test_project_trains_predicts_and_evaluates_on_fastmri_shapes(
    project: pathlib.Path, e2e_runs: dict[str, dict]
) -> None:
    result = e2e_runs[project.stem]
    assert result["train"].returncode == 0, result["train"].stdout[-5000:]
    assert result["predict"].returncode == 0, result["predict"].stdout[-5000:]
    [output] = (result["work"] / "pred").glob("*.h5")
    with h5py.File(output) as h5:
        assert h5["reconstruction"].shape == (1, 320, 320)
    if not result["attacked"]:
        return
    evaluation = result["evaluation"]
    assert evaluation["evaluate"].returncode == 0, evaluation["evaluate"].stdout[-5000:]
    report = json.loads((evaluation["output"] / "robustness.json").read_text())
    ours = [record for record in report["records"] if record["model"] == project.stem]
    conditions = {record["condition"] for record in ours}
    assert "main/clean" in conditions and any("pgd" in condition for condition in conditions), sorted(conditions)
    assert all(record.get("psnr") is not None for record in ours if record["condition"] == "main/clean")
