"""Tiny fastMRI-format data, DIRECT YAMLs and freshly initialised DIRECT-native checkpoints for robustness tests."""

import logging
import pathlib

import h5py
import numpy as np
import torch

H, W, COILS, SLICES = 32, 24, 4, 3


def ismrmrd_header(h: int, w: int) -> str:
    """The header fields DIRECT's FastMRI dataset reads (matrix sizes and the phase-encoding limits)."""
    return f"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>
<encodedSpace><matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize></encodedSpace>
<reconSpace><matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize></reconSpace>
<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{w - 1}</maximum><center>{w // 2}</center>
</kspace_encoding_step_1></encodingLimits></encoding></ismrmrdHeader>"""


MODELS = {
    "varnet": {
        "model_name": "varnet.varnet.EndToEndVarNet",
        "num_layers": 2,
        "regularizer_num_filters": 4,
        "regularizer_num_pull_layers": 1,
    },
    "rim": {"model_name": "rim.rim.RIM", "hidden_channels": 4, "length": 2, "depth": 1},
}


def write_phantom_h5(
    directory: pathlib.Path,
    num_files: int = 2,
    seed: int = 0,
    shape: tuple[int, int] = (H, W),
    coils: int = COILS,
    slices: int = SLICES,
) -> pathlib.Path:
    """Ellipse phantoms seen by smooth complex coil maps, as fully sampled fastMRI multi-coil k-space."""
    h, w = shape
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]
    maps = np.stack([np.exp(-((xx - c) ** 2 + yy**2)) * np.exp(1j * c) for c in np.linspace(-0.8, 0.8, coils)])
    for f in range(num_files):
        images = []
        for s in range(slices):
            a, b = rng.uniform(0.4, 0.8, size=2)
            img = ((xx / a) ** 2 + (yy / b) ** 2 < 1).astype(float)
            img += 0.5 * ((xx - rng.uniform(-0.2, 0.2)) ** 2 + (yy - 0.1 * s) ** 2 < 0.04)
            images.append(img)
        coil_images = np.stack(images)[:, None] * maps[None]
        kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(coil_images, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
        with h5py.File(directory / f"file{f}.h5", "w") as h5:
            h5["kspace"] = kspace.astype(np.complex64)
            h5["ismrmrd_header"] = ismrmrd_header(h, w)
            h5.attrs["max"] = float(np.abs(np.stack(images)).max())
    return directory


def write_direct_yaml(path: pathlib.Path, model: str, acceleration: int = 4, **model_overrides) -> pathlib.Path:
    from omegaconf import OmegaConf

    cfg = {
        "model": {**MODELS[model], **model_overrides},
        "inference": {
            "batch_size": 2,
            "crop": None,
            "dataset": {
                "name": "FastMRI",
                "transforms": {
                    "cropping": {"crop": None, "image_center_crop": False},
                    "sensitivity_map_estimation": {"estimate_sensitivity_maps": True, "sensitivity_maps_gaussian": 0.7},
                    "normalization": {"scaling_key": "masked_kspace"},
                    "masking": {"name": "FastMRIRandom", "accelerations": [acceleration], "center_fractions": [0.08]},
                    "padding_eps": 0.0001,
                },
            },
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(cfg), path)
    return path


def save_fresh_checkpoint(config: pathlib.Path, directory: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Build the model from its YAML with DIRECT and save it as DIRECT's checkpointer does (model_<iter>.pt)."""
    from direct.environment import setup_inference_environment

    torch.manual_seed(seed)
    level = logging.getLogger().level
    env = setup_inference_environment("init", directory / "logs", "cpu", 0, False, config)
    logging.getLogger().setLevel(max(level, logging.WARNING))
    path = directory / "model_0.pt"
    torch.save({"model": env.engine.model.state_dict()}, path)
    return path


def make_setup(root: pathlib.Path, models: tuple[str, ...] = ("varnet", "rim")) -> dict:
    """Data directory and one ``NAME=CONFIG:CHECKPOINT`` spec per model under `root`."""
    data = write_phantom_h5(root / "data")
    specs = []
    for i, name in enumerate(models):
        cfg = write_direct_yaml(root / name / "config.yaml", name)
        ckpt = save_fresh_checkpoint(cfg, root / name, seed=i)
        specs.append(f"{name}={cfg}:{ckpt}")
    return {"data": data, "specs": specs}
