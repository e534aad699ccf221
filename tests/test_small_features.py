"""Small-feature recovery: the window changes only its 3 x 3 pixels, the heat map has the image's shape, and
`smug small-features` measures a DIRECT model and the CS baseline on the same simulated windows."""

import json

import torch

from smug_plugin.robustness.studies.small_features import (
    WINDOW,
    bright_windows,
    heat_map,
    repeat_slice,
    window_masks,
    window_origins,
)


def test_the_window_changes_only_its_3x3_pixels():
    image = torch.randn(10, 7, 2)
    origins = window_origins(10, 7, stride=2)
    modified = bright_windows(image, window_masks(origins, 10, 7))
    peak = image.norm(dim=-1).max()
    for copy, (row, column) in zip(modified, origins.tolist()):
        changed = (copy != image).any(dim=-1)
        inside = torch.zeros(10, 7, dtype=torch.bool)
        inside[row : row + WINDOW, column : column + WINDOW] = True
        assert not changed[~inside].any()
        window = copy[inside]
        assert torch.allclose(window.norm(dim=-1), peak.expand(WINDOW * WINDOW))
        # the phase of each pixel is kept
        assert torch.allclose(
            window / window.norm(dim=-1, keepdim=True),
            image[inside] / image[inside].norm(dim=-1, keepdim=True),
            atol=1e-6,
        )


def test_windows_cover_the_grid_inside_the_image():
    origins = window_origins(10, 7, stride=3)
    assert origins.tolist() == [[r, c] for r in (0, 3, 6) for c in (0, 3)]
    assert window_masks(origins, 10, 7).sum(dim=(1, 2)).eq(WINDOW * WINDOW).all()


def test_heat_map_has_the_image_shape_and_lies_in_0_1():
    origins = window_origins(12, 9, stride=4)
    errors = torch.arange(len(origins), dtype=torch.float32)
    values = heat_map(origins, errors, 12, 9)
    assert values.shape == (12, 9) and values.min() == 0 and values.max() == 1
    row, column = origins[-1].tolist()
    assert values[row + 1, column + 1] == 1  # a window's centre shows its own error


def test_repeat_slice_copies_one_slice():
    sizes = [torch.tensor([5, 6]), torch.tensor([7, 8])]  # collated per-dimension sizes: a list of tensors
    batch = {"filename": ["a", "b"], "kspace": torch.arange(2.0)[:, None], "scalar": torch.tensor(3.0), "size": sizes}
    copies = repeat_slice(batch, 1, 3)
    assert copies["filename"] == ["b"] * 3 and copies["kspace"].flatten().tolist() == [1.0] * 3
    assert copies["scalar"] == 3.0 and [s.tolist() for s in copies["size"]] == [[6] * 3, [8] * 3]


def test_smug_small_features_measures_direct_plugin_and_cs_models(tmp_path):
    from robustness_fixtures import make_setup

    from smug_plugin.cli.main import main

    setup = make_setup(tmp_path, ("varnet", "smug"))
    cs = tmp_path / "cs.yaml"
    cs.write_text("cs: {weight: 0.01, iterations: 5, wavelet: haar, levels: 2}\n")
    out = tmp_path / "out"
    models = ["--model", setup["specs"][0], "--model", setup["specs"][1], "--model", f"CS={cs}"]
    args = ["small-features", *models, "--data-root", str(setup["data"]), "--output-dir", str(out)]
    assert main([*args, "--stride", "8", "--window-batch", "4", "--threads", "1"]) == 0
    report = json.loads((out / "small_features.json").read_text())
    assert set(report["mean_window_mse"]) == {"varnet", "smug", "CS"}
    assert report["slices"][0]["windows"] == len(window_origins(32, 24, 8))
    assert all(v > 0 for v in report["mean_window_mse"].values())
    assert len(list((out / "heatmaps").glob("*/*.png"))) == 3 and (out / "small_features.png").is_file()
