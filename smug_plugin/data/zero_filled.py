"""The zero-filled baseline of a DIRECT validation set, built exactly as ``direct train`` builds its data."""

import logging
import pathlib
import types

import numpy as np


def validation_datasets(config_path: pathlib.Path) -> list:
    """The ``validation.datasets`` of a DIRECT training YAML (OmegaConf's safe loader).

    Raises
    ------
    FileNotFoundError
        ``config_path`` does not exist.
    ValueError
        It is not valid YAML or has no ``validation.datasets`` list; the message names the file and the fix.
    """
    import yaml
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} does not exist: pass the DIRECT training YAML of the run as CONFIG.")
    try:
        cfg = OmegaConf.load(config_path)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ValueError(f"{config_path} is not valid YAML ({problem}{where}): fix the syntax there.") from error
    datasets = OmegaConf.select(cfg, "validation.datasets") if isinstance(cfg, DictConfig) else None
    if not isinstance(datasets, ListConfig) or not datasets or not all(isinstance(d, DictConfig) for d in datasets):
        raise ValueError(
            f"{config_path} has no validation.datasets list of dataset settings: pass the DIRECT training YAML the "
            "run was trained with."
        )
    return list(datasets)


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

    Raises
    ------
    FileNotFoundError
        The YAML or the data folder does not exist, or a validation dataset finds no volume in ``data_root``.
    ValueError
        The YAML is malformed, or one of its validation datasets does not fit DIRECT's FastMRI dataset config.
    """
    config_path, data_root = pathlib.Path(config_path), pathlib.Path(data_root)
    raw_datasets = validation_datasets(config_path)
    if not data_root.is_dir():
        raise FileNotFoundError(
            f"{data_root} is not a folder: pass the validation folder (--validation-root) as DATA_ROOT."
        )
    if any(data_root.glob("*.h5")):
        from smug_plugin.data.checks import check_data_root

        # The checks of every command's data: a file DIRECT would misread (a header that contradicts the k-space)
        # is refused; files it skips (truncated) are left out by DIRECT, as in its own validation.
        check_data_root(data_root)

    import direct.config.defaults  # noqa: F401  (DIRECT's config modules only import cleanly through this one)
    import fastmri.evaluate
    from direct.data import transforms as T
    from direct.data.datasets import build_dataset_from_input
    from direct.data.datasets_config import FastMRIConfig
    from direct.train import build_transforms_from_environment
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    env = types.SimpleNamespace(engine=types.SimpleNamespace(forward_operator=T.fft2, backward_operator=T.ifft2))
    results = {}
    for index, raw in enumerate(raw_datasets):
        try:
            dataset_cfg = OmegaConf.merge(OmegaConf.structured(FastMRIConfig(name="FastMRI")), raw)
        except OmegaConfBaseException as error:
            problem = str(error).splitlines()[0]
            raise ValueError(
                f"{config_path}: validation.datasets[{index}] does not fit DIRECT's FastMRI dataset config "
                f"({problem}): correct that key."
            ) from error
        name = dataset_cfg.text_description or f"dataset{index}"
        transforms = build_transforms_from_environment(env, dataset_cfg)
        # DIRECT only warns about an empty folder (on stderr); the error below says it once, with the fix.
        disabled = logging.root.manager.disable
        logging.disable(max(disabled, logging.WARNING))
        try:
            dataset = build_dataset_from_input(transforms=transforms, dataset_config=dataset_cfg, data_root=data_root)
        finally:
            logging.disable(disabled)
        if len(dataset) == 0:
            raise FileNotFoundError(
                f"{data_root} holds no h5 volume for validation dataset {name}: pass the folder of fastMRI h5 files "
                "given to `direct train` as --validation-root."
            )
        volumes: dict[str, tuple[list, list]] = {}
        for sample in dataset:
            for key in ("masked_kspace", "target"):  # a NaN sample would make its volume's metrics NaN
                if not np.isfinite(sample[key].numpy()).all():
                    raise ValueError(
                        f"{sample['filename']}, slice {sample['slice_no']}: {key} holds NaN or inf values; repair or "
                        f"remove the file from {data_root}."
                    )
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
        results[name] = {key: float(np.mean(values)) for key, values in per_volume.items()}
    return results
