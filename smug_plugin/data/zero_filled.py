"""The zero-filled baseline of a DIRECT validation set, built exactly as ``direct train`` builds its data."""

import pathlib
import types

import numpy as np


def zero_filled_metrics(config_path: str | pathlib.Path, data_root: str | pathlib.Path) -> dict[str, dict]:
    """fastMRI PSNR/SSIM/NMSE of the root-sum-of-squares zero-filled image, per validation dataset of a YAML.

    Parameters
    ----------
    config_path : str or pathlib.Path
        A DIRECT training YAML; its ``validation.datasets`` give masks, maps and normalisation.
    data_root : str or pathlib.Path
        The validation folder (as ``--validation-root``).

    Returns
    -------
    dict[str, dict]
        ``{dataset description: {"fastmri_psnr": mean, "fastmri_ssim": mean, "fastmri_nmse": mean}}`` over volumes.
    """
    import direct.config.defaults  # noqa: F401  (DIRECT's config modules only import cleanly through this one)
    import fastmri.evaluate
    from direct.data import transforms as T
    from direct.data.datasets import build_dataset_from_input
    from direct.data.datasets_config import FastMRIConfig
    from direct.train import build_transforms_from_environment
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config_path)
    env = types.SimpleNamespace(engine=types.SimpleNamespace(forward_operator=T.fft2, backward_operator=T.ifft2))
    results = {}
    for index, raw in enumerate(cfg.validation.datasets):
        dataset_cfg = OmegaConf.merge(OmegaConf.structured(FastMRIConfig(name="FastMRI")), raw)
        transforms = build_transforms_from_environment(env, dataset_cfg)
        dataset = build_dataset_from_input(transforms=transforms, dataset_config=dataset_cfg, data_root=data_root)
        volumes: dict[str, tuple[list, list]] = {}
        for sample in dataset:
            image = T.root_sum_of_squares(T.ifft2(sample["masked_kspace"], dim=(1, 2)), dim=0)
            prediction, target = volumes.setdefault(str(sample["filename"]), ([], []))
            prediction.append(image.numpy())
            target.append(sample["target"].numpy())
        per_volume = {"fastmri_psnr": [], "fastmri_ssim": [], "fastmri_nmse": []}
        for prediction, target in volumes.values():
            gt, pred = np.stack(target), np.stack(prediction)
            per_volume["fastmri_psnr"].append(fastmri.evaluate.psnr(gt, pred))
            per_volume["fastmri_ssim"].append(fastmri.evaluate.ssim(gt, pred))
            per_volume["fastmri_nmse"].append(fastmri.evaluate.nmse(gt, pred))
        name = raw.get("text_description") or f"dataset{index}"
        results[name] = {key: float(np.mean(values)) for key, values in per_volume.items()}
    return results
