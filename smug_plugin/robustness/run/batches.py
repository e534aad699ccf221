"""The data batches DIRECT's inference would see: the reference model's inference dataset, in volume order.

Transforms, masks, sensitivity maps and normalisation come from DIRECT's own `build_inference_transforms` and
`build_dataset_from_input` with the model's YAML, so every model is evaluated on exactly the data it would see in
``direct predict``. One difference: the fully sampled k-space stays in the batch (``batch["kspace"]``, normalised
like ``masked_kspace``), which DIRECT's inference deletes; its image gives the papers' intensity scale s_ref, the
unit of `paper` budgets (:func:`reference_scale`).
"""

import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from smug_plugin.losses.smoothing import complex_target_image
from smug_plugin.operators import apply_mask
from smug_plugin.robustness.reconstructors.interface import EngineReconstructor
from smug_plugin.units import reference_intensity_scale


@dataclass
class _EnvView:
    """The two attributes of a DIRECT environment that `build_inference_transforms` reads."""

    model: EngineReconstructor

    @property
    def engine(self):
        return self.model.engine

    @property
    def cfg(self):
        return self.model.cfg


def build_dataset(
    model: EngineReconstructor, data_root: pathlib.Path, acceleration: float | None, center_fraction: float | None
):
    """The inference dataset of `model`'s YAML, optionally with another acceleration (sampling-rate shift), keeping
    the fully sampled k-space."""
    from direct.common.subsample import build_masking_function
    from direct.data.datasets import build_dataset_from_input
    from direct.inference import build_inference_transforms
    from omegaconf import OmegaConf

    dataset_cfg = OmegaConf.merge(model.cfg.inference.dataset, {"transforms": {"delete_kspace": False}})
    masking = dataset_cfg.transforms.masking
    if acceleration is not None:
        if masking is None:
            raise ValueError(f"Model '{model.name}': acceleration sweep needs inference.dataset.transforms.masking.")
        masking = OmegaConf.merge(masking, {"accelerations": [acceleration], "center_fractions": [center_fraction]})
    mask_func = None if masking is None else build_masking_function(**masking)
    transforms = build_inference_transforms(_EnvView(model), mask_func, dataset_cfg)
    dataset = build_dataset_from_input(transforms=transforms, dataset_config=dataset_cfg, data_root=data_root)
    if len(dataset) == 0:
        raise ValueError(f"No slices found under {data_root}.")
    model.use_dimensionality(dataset.ndim)
    return dataset


def iterate_batches(
    model: EngineReconstructor, dataset, batch_size: int, max_slices: int | None
) -> Iterator[tuple[str, list[int]]]:
    """Batches of dataset indices, each within one volume (DIRECT's sequential volume sampler), as (key, indices).

    Indices are produced without loading data so that ``--resume`` can skip finished batches for free. Every rank of
    a sharded run gets every batch (DIRECT's sampler would give each rank a part of the volumes): ranks share out
    units, not volumes.
    """
    sampler = model.engine.build_batch_sampler(
        dataset, batch_size=batch_size, sampler_type="sequential", limit_number_of_volumes=None, num_replicas=1, rank=0
    )
    seen = 0
    for indices in sampler:
        indices = list(indices)
        if max_slices is not None:
            indices = indices[: max(0, max_slices - seen)]
            if not indices:
                return
        seen += len(indices)
        yield f"{indices[0]}-{indices[-1]}", indices


def load_batch(dataset, indices: list[int], device: str) -> dict:
    """Collate and move one batch; refuse non-finite k-space, which would poison every gradient."""
    from direct.utils import dict_to_device
    from torch.utils.data import default_collate

    batch = dict_to_device(default_collate([dataset[i] for i in indices]), device)
    for key in ("masked_kspace", "kspace", "sensitivity_map", "target"):
        if key in batch and not torch.isfinite(batch[key]).all():
            raise ValueError(f"Non-finite values (NaN/inf) in '{key}' of {batch['filename'][0]}, slices {indices}.")
    return batch


def reference_scale(model: EngineReconstructor, batch: dict) -> torch.Tensor | None:
    """The papers' intensity scale s_ref per slice, shape (batch,), in DIRECT's normalised units.

    s_ref = max(|Re|, |Im|) of the complex coil-combined fully sampled image S^H F^-1 y_full, the sensitivity maps
    as ``model``'s engine normalises them (the complex target of the UStab loss).

    Returns
    -------
    torch.Tensor or None
        None when the batch holds no fully sampled k-space: none at all, or k-space that is zero wherever the mask
        is (an undersampled file read as if it were fully sampled).
    """
    kspace = batch.get("kspace")
    if kspace is None:
        return None
    unmeasured = apply_mask(kspace, batch["sampling_mask"] == 0).flatten(1).any(dim=1)
    if not torch.all(unmeasured | ~kspace.flatten(1).any(dim=1)):
        return None
    with torch.no_grad():
        return reference_intensity_scale(complex_target_image(kspace, model.operator(batch)))
