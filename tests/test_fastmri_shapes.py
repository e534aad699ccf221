"""fastMRI-shaped files (:mod:`smug_plugin.data.fastmri_shaped`): shapes, header and padding as DIRECT reads them,
and the knee project's data path (crop to the reconstruction size, ESPIRiT maps, mask, normalisation) once.

The end-to-end runs of every knee and brain project on these files (``direct train``, ``direct predict``,
``smug evaluate --protocol paper``) run in CI with the projects' data path except one setting: the sensitivity maps
are DIRECT's ``rss_estimate`` instead of ESPIRiT, which costs 15-25 s per slice and load at 320 x 320 x 15 coils on one
thread (a training sample is loaded once per iteration: minutes per project). ESPIRiT itself is tested on both
anatomies' shapes by the data-path test below; ``SMUG_FASTMRI_E2E=1`` (``make test-fastmri``) runs the end-to-end
tests with the projects exactly as shipped, ESPIRiT included.
"""

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
def test_the_projects_data_path_crops_and_estimates_espirit_maps(
    shaped: dict[str, pathlib.Path], anatomy: str
) -> None:
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


@pytest.mark.e2e
@pytest.mark.parametrize("project", knee_and_brain_projects(), ids=lambda p: p.stem)
def test_project_trains_predicts_and_evaluates_on_fastmri_shapes(
    project: pathlib.Path, e2e_data: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    data = e2e_data[project.stem.rsplit("_", 1)[-1]]
    model = yaml.safe_load(project.read_text())["model"]
    overrides = {k: v for k, v in TINY_NETWORK.items() if k in model}
    cfg = shrink_project(project, tmp_path / f"{project.stem}.yaml", model_overrides=overrides)
    if not FASTMRI_E2E:  # CI: DIRECT's cheap map estimate (ESPIRiT is tested above); SMUG_FASTMRI_E2E=1: as shipped
        with_sensitivity_maps(cfg, "rss_estimate")
    common = ["--device", "cpu", "--num-workers", "0"]
    train = run_command(
        direct_command("train", str(tmp_path / "runs"), "--cfg", str(cfg), *common)
        + ["--training-root", str(data / "train"), "--validation-root", str(data / "val")],
        cwd=tmp_path,
        timeout=1800,
    )
    assert train.returncode == 0, train.stdout[-5000:]
    checkpoint = tmp_path / "runs" / project.stem / "model_5.pt"
    predict = run_command(
        direct_command("predict", str(tmp_path / "pred"), "--cfg", str(cfg), "--checkpoint", str(checkpoint))
        + ["--data-root", str(data / "test"), *common],
        cwd=tmp_path,
        timeout=1800,
    )
    assert predict.returncode == 0, predict.stdout[-5000:]
    [output] = (tmp_path / "pred").glob("*.h5")
    with h5py.File(output) as h5:
        assert h5["reconstruction"].shape == (1, 320, 320)
    if model["model_name"] == "smug.didn.DIDN":
        return  # a denoiser, not a reconstruction model: smug evaluate does not attack it
    evaluate = run_command(
        smug_command("evaluate", "--model", f"m={cfg}:{checkpoint}", "--protocol", "paper")
        + ["--data-root", str(data / "test"), "--output-dir", str(tmp_path / "eval"), "--max-slices", "1"]
        + ["--batch-size", "1", "--threads", "1", "--no-progress"],
        cwd=tmp_path,
        timeout=3600,
    )
    assert evaluate.returncode == 0, evaluate.stdout[-5000:]
    assert (tmp_path / "eval" / "robustness.json").is_file()
