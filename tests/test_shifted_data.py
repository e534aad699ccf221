"""The shifted demo set (`smug data demo --shifted`): read by DIRECT, deterministic, other coils and noise, licensed."""

import importlib.resources
import json
import pathlib

import h5py
import numpy as np
import pytest
from test_demo_data import COILS, MATRIX, TINY, direct_dataset, run_cli

from smug_plugin.data import shifted, simulation
from smug_plugin.data.demo import MANIFEST_NAME, make_demo_dataset

# TINY keeps 2 central slices per volume: 2 of the b0 EPI volume, the 1 coronal slice.
SHIFTED_SLICES = {"dipy_b0_epi.h5": 2, "dipy_t1_coronal.h5": 1}


@pytest.fixture(scope="module")
def shifted_root(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("shifted")
    make_demo_dataset(root, seed=0, train_volumes=0, val_volumes=0, test_volumes=0, shifted=True, **TINY)
    return root


def read_kspace(path: pathlib.Path) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle["kspace"][()]


def test_direct_reads_the_shifted_set(shifted_root: pathlib.Path) -> None:
    dataset = direct_dataset(shifted_root / shifted.FOLDER, acceleration=4)
    assert len(dataset) == sum(SHIFTED_SLICES.values())
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["masked_kspace"].shape == (COILS, *MATRIX, 2)
        assert sample["target"].shape == MATRIX and float(sample["target"].max()) > 0


def test_files_shapes_and_attributes(shifted_root: pathlib.Path) -> None:
    assert sorted(p.name for p in (shifted_root / shifted.FOLDER).iterdir()) == sorted(SHIFTED_SLICES)
    for name, slices in SHIFTED_SLICES.items():
        with h5py.File(shifted_root / shifted.FOLDER / name, "r") as handle:
            assert handle["kspace"].shape == (slices, COILS, *MATRIX) and handle["kspace"].dtype == np.complex64
            assert handle.attrs["noise"] == pytest.approx(shifted.NOISE) and "dipy" in handle.attrs["source"]
            assert handle.attrs["acquisition"] in ("AXT2", "CORT1")
    manifest = json.loads((shifted_root / MANIFEST_NAME).read_text())
    assert manifest["parameters"]["shifted"]["noise"] == shifted.NOISE
    assert [len(manifest["files"][split]) for split in ("train", "val", "test", shifted.FOLDER)] == [0, 0, 0, 2]


def test_same_seed_same_kspace_other_seed_differs(shifted_root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    for seed in (0, 1):
        make_demo_dataset(
            tmp_path / str(seed), seed=seed, train_volumes=0, val_volumes=0, test_volumes=0, shifted=True, **TINY
        )
    for name in SHIFTED_SLICES:
        reference = read_kspace(shifted_root / shifted.FOLDER / name)
        assert read_kspace(tmp_path / "0" / shifted.FOLDER / name).tobytes() == reference.tobytes()
        assert not np.allclose(read_kspace(tmp_path / "1" / shifted.FOLDER / name), reference)


def test_the_splits_are_unchanged_by_the_shifted_set(tmp_path: pathlib.Path) -> None:
    make_demo_dataset(tmp_path / "plain", seed=0, train_volumes=0, val_volumes=0, test_volumes=1, **TINY)
    make_demo_dataset(tmp_path / "both", seed=0, train_volumes=0, val_volumes=0, test_volumes=1, shifted=True, **TINY)
    [plain] = (tmp_path / "plain/test").glob("*.h5")
    assert read_kspace(plain).tobytes() == read_kspace(tmp_path / "both/test" / plain.name).tobytes()
    assert not (tmp_path / "plain" / shifted.FOLDER).exists()


def test_other_coil_array_than_the_demo() -> None:
    def maps(**array) -> np.ndarray:
        return simulation.coil_sensitivities((40, 32), (2.0, 2.0), 0.0, 4, np.random.default_rng(0), **array)

    demo, other = maps(), maps(**shifted.COIL_ARRAY)
    assert demo.shape == other.shape and not np.allclose(np.abs(demo), np.abs(other), rtol=0.05)


def test_cli_writes_only_the_shifted_set_and_overwrites_it(tmp_path: pathlib.Path, capsys) -> None:
    argv = ["data", "demo", "--output-dir", str(tmp_path), "--coils", "2", "--matrix", "32", "24", "--shifted"]
    argv += ["--train-volumes", "0", "--val-volumes", "0", "--test-volumes", "0", "--slices-per-volume", "1"]
    assert run_cli(argv) == 0
    out = capsys.readouterr().out
    assert "shifted: 2 volume(s), 2 slice(s)" in out and "dipy_b0_epi.h5  kspace 1 x 2 x 32 x 24" in out
    assert "Shifted set: another coil array, noise 0.03." in out
    assert run_cli(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert run_cli([*argv, "--overwrite"]) == 0


def test_the_licence_ships_next_to_the_asset() -> None:
    assets = importlib.resources.files("smug_plugin.data.assets")
    assert assets.joinpath(shifted.ASSET_NAME).is_file()
    licence = assets.joinpath("LICENSE-dipy.txt").read_text()
    assert "dipy developers" in licence and "Redistributions in binary form" in licence
    assert "LICENSE-dipy.txt" in assets.joinpath("README-dipy-shifted.md").read_text()


def test_negative_shifted_noise_exits_2_and_writes_nothing(tmp_path: pathlib.Path, capsys) -> None:
    output = tmp_path / "out"
    assert run_cli(["data", "demo", "--output-dir", str(output), "--shifted", "--shifted-noise", "-1"]) == 2
    assert "--shifted-noise -1" in capsys.readouterr().err and not output.exists()
