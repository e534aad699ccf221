"""The simulated Colin27 demo data: read by DIRECT's own FastMRI pipeline, split without leakage, deterministic."""

import argparse
import json
import pathlib
import types

# DIRECT's config modules import each other in a cycle that only resolves when entered through the defaults.
import direct.config.defaults  # noqa: F401
import fastmri.evaluate
import h5py
import numpy as np
import pytest
import torch
from direct.common.subsample_config import MaskingConfig
from direct.data import transforms as T
from direct.data.datasets import _parse_fastmri_header, build_dataset_from_input
from direct.data.datasets_config import FastMRIConfig
from direct.data.mri_transforms import SensitivityMapType
from direct.train import build_transforms_from_environment
from omegaconf import OmegaConf

from smug_plugin.cli import data as data_cli
from smug_plugin.data.demo import MANIFEST_NAME, make_demo_dataset
from smug_plugin.data.fastmri_h5 import rss_from_kspace, write_fastmri_h5

MATRIX = (32, 24)
COILS = 2
TINY = {"num_coils": COILS, "matrix": MATRIX, "slices_per_volume": 2}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, seed=0, train_volumes=2, val_volumes=1, test_volumes=1, **TINY)
    return root


def direct_dataset(root: pathlib.Path, acceleration: float) -> torch.utils.data.Dataset:
    """Build the dataset the way ``direct train`` does: structured config -> transforms -> dataset."""
    config = OmegaConf.structured(FastMRIConfig(name="FastMRI"))
    config.transforms.masking = OmegaConf.structured(
        MaskingConfig(name="FastMRIRandom", accelerations=(acceleration,), center_fractions=(0.08,))
    )
    config.transforms.sensitivity_map_estimation.sensitivity_maps_type = SensitivityMapType.RSS_ESTIMATE
    env = types.SimpleNamespace(engine=types.SimpleNamespace(forward_operator=T.fft2, backward_operator=T.ifft2))
    transforms = build_transforms_from_environment(env, config)
    return build_dataset_from_input(transforms=transforms, dataset_config=config, data_root=root)


def zero_filled_and_target(sample: dict) -> tuple[np.ndarray, np.ndarray]:
    image = T.root_sum_of_squares(T.ifft2(sample["masked_kspace"], dim=(1, 2)), dim=0)
    return image.numpy()[None], sample["target"].numpy()[None]


def test_direct_fastmri_dataset_reads_the_files(demo_root: pathlib.Path) -> None:
    dataset = direct_dataset(demo_root / "train", acceleration=4)
    assert len(dataset) == 2 * TINY["slices_per_volume"]
    sample = dataset[1]
    assert sample["masked_kspace"].shape == (COILS, *MATRIX, 2)
    assert sample["sensitivity_map"].shape == (COILS, *MATRIX, 2)
    assert sample["sampling_mask"].shape == (1, *MATRIX, 1)
    assert sample["target"].shape == MATRIX
    assert sample["reconstruction_size"] == (*MATRIX, 1)
    # The fastMRI mask acts on the last axis (phase encoding): whole columns, the central 8 % (2 of 24) always,
    # where the k-space centre of the files is, and others at random. (The random ones are seeded by the file's
    # path, which pytest varies: a bound on their number would fail now and then.)
    mask = sample["sampling_mask"][0, :, :, 0]
    assert torch.equal(mask, mask[:1].expand_as(mask))
    centre = MATRIX[1] // 2
    assert mask[0, centre - 1 : centre + 1].all() and not mask[0].all()
    assert torch.isfinite(sample["sensitivity_map"]).all()


def test_zero_filled_error_is_sensible(demo_root: pathlib.Path) -> None:
    full = direct_dataset(demo_root / "test", acceleration=1)[0]
    zero_filled, target = zero_filled_and_target(full)
    assert fastmri.evaluate.nmse(target, zero_filled) < 1e-8  # full sampling reproduces the target

    psnr, nmse = {}, {}
    for acceleration in (4, 8):
        zero_filled, target = zero_filled_and_target(direct_dataset(demo_root / "test", acceleration)[0])
        psnr[acceleration] = fastmri.evaluate.psnr(target, zero_filled)
        nmse[acceleration] = fastmri.evaluate.nmse(target, zero_filled)
    assert 12.0 < psnr[4] < 35.0
    assert 0.003 < nmse[4] < 0.3
    assert psnr[8] < psnr[4]


def test_files_and_header(demo_root: pathlib.Path) -> None:
    path = next((demo_root / "val").glob("*.h5"))
    with h5py.File(path, "r") as handle:
        kspace = handle["kspace"][()]
        assert kspace.dtype == np.complex64 and kspace.shape == (2, COILS, *MATRIX)
        rss = handle["reconstruction_rss"][()]
        np.testing.assert_allclose(rss, rss_from_kspace(kspace), rtol=1e-5, atol=1e-6)
        assert handle.attrs["max"] == pytest.approx(rss.max())
        assert handle.attrs["acquisition"] == "AXT1" and handle.attrs["patient_id"].startswith("colin27")
        header = _parse_fastmri_header(handle["ismrmrd_header"][()])
    assert header["encoding_size"] == header["reconstruction_size"] == (*MATRIX, 1)
    # All W columns are acquired: DIRECT must not zero any as padding.
    assert (header["padding_left"], header["padding_right"]) == (0, MATRIX[1])
    # The k-space centre (DC) sits at (H // 2, W // 2), where DIRECT's centred FFT expects it.
    energy = (np.abs(kspace) ** 2).sum(axis=(0, 1))
    assert np.unravel_index(energy.argmax(), energy.shape) == (MATRIX[0] // 2, MATRIX[1] // 2)


def test_splits_do_not_share_slices(demo_root: pathlib.Path) -> None:
    manifest = json.loads((demo_root / MANIFEST_NAME).read_text())
    slices = {split: {s for f in files for s in f["source_slices"]} for split, files in manifest["files"].items()}
    assert all(slices.values())
    assert not slices["train"] & slices["val"] and not slices["train"] & slices["test"]
    assert not slices["val"] & slices["test"]
    names = {split: {p.name for p in (demo_root / split).glob("*.h5")} for split in slices}
    assert sum(len(n) for n in names.values()) == len(set().union(*names.values())) == 4


def test_same_seed_same_kspace_other_seed_differs(demo_root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # Random streams are keyed by (seed, slab): a single-volume run reproduces the fixture's test volume.
    make_demo_dataset(tmp_path / "same", seed=0, train_volumes=0, val_volumes=0, test_volumes=1, **TINY)
    make_demo_dataset(tmp_path / "other", seed=1, train_volumes=0, val_volumes=0, test_volumes=1, **TINY)
    (reference,) = (demo_root / "test").glob("*.h5")

    def read(path: pathlib.Path) -> np.ndarray:
        with h5py.File(path, "r") as handle:
            return handle["kspace"][()]

    assert read(reference).tobytes() == read(tmp_path / "same/test" / reference.name).tobytes()
    assert not np.allclose(read(reference), read(tmp_path / "other/test" / reference.name))


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="smug")
    data_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--matrix", "400", "80"], "--matrix of at most 384 320"),
        (["--coils", "0"], "--coils"),
        (["--train-volumes", "11"], "at most 10"),
        (["--slices-per-volume", "9"], "--slices-per-volume"),
        (["--fov", "100", "100"], "--fov of at least"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture, option: list[str], message: str
) -> None:
    output = tmp_path / "out"
    assert run_cli(["data", "demo", "--output-dir", str(output), *option]) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_cli_refuses_to_mix_with_an_earlier_run(demo_root: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    assert run_cli(["data", "demo", "--output-dir", str(demo_root)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_writes_and_reports(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["data", "demo", "--output-dir", str(tmp_path), "--coils", "2", "--matrix", "32", "24"]
    argv += ["--train-volumes", "1", "--val-volumes", "0", "--test-volumes", "0", "--slices-per-volume", "1"]
    assert run_cli(argv) == 0
    out = capsys.readouterr().out
    assert "kspace 1 x 2 x 32 x 24" in out and "Done in" in out
    assert len(list((tmp_path / "train").glob("*.h5"))) == 1


def test_failed_write_leaves_no_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "volume.h5"
    kspace = np.ones((1, 1, 4, 4), dtype=np.complex64)
    with pytest.raises(TypeError):
        write_fastmri_h5(path, kspace, "<x/>", acquisition="AXT1", patient_id="p", extra_attrs={"bad": object()})
    assert list(tmp_path.iterdir()) == []
