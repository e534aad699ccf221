"""Build DIRECT engines from a DIRECT YAML + checkpoint, and the data batches DIRECT's inference would see.

Everything goes through DIRECT's own machinery (`setup_inference_environment`, `build_inference_transforms`,
`build_dataset_from_input`, `Checkpointer`), so masks, sensitivity maps, normalisation and cropping are exactly
those of ``direct predict`` with the same YAML.
"""

import contextlib
import logging
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)

# Test-time knobs of the plugin models; native models lack them and are reported "n/a" for the matching sweeps.
TUNABLE_ATTRIBUTES = ("num_steps", "sigma", "num_samples")


@dataclass(frozen=True)
class ModelSpec:
    """``NAME=CONFIG.yaml:CHECKPOINT.pt`` as given on the command line."""

    name: str
    config: pathlib.Path
    checkpoint: pathlib.Path

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        name, sep, rest = text.partition("=")
        config, sep2, checkpoint = rest.rpartition(":")
        if not sep or not sep2 or not name or not config or not checkpoint:
            raise ValueError(f"Expected --model NAME=CONFIG.yaml:CHECKPOINT.pt, got '{text}'.")
        return cls(name, pathlib.Path(config), pathlib.Path(checkpoint))

    def check_files(self) -> None:
        if not self.config.is_file():
            raise FileNotFoundError(f"Model '{self.name}': DIRECT config not found: {self.config}")
        if not self.checkpoint.is_file():
            raise FileNotFoundError(f"Model '{self.name}': checkpoint not found: {self.checkpoint}")


class LoadedModel:
    """A DIRECT engine with its weights, seen as ``perturbed k-space -> magnitude image``.

    Parameters
    ----------
    spec : ModelSpec
        Where it came from.
    env : namedtuple
        DIRECT inference environment (``cfg``, ``engine``).
    """

    def __init__(self, spec: ModelSpec, env: Any):
        self.spec = spec
        self.name = spec.name
        self.cfg = env.cfg
        self.engine = env.engine

    @property
    def module(self) -> torch.nn.Module:
        model = self.engine.model
        return model.module if hasattr(model, "module") else model

    @property
    def is_randomized(self) -> bool:
        return bool(getattr(self.module, "is_randomized", False))

    def supports(self, attribute: str) -> bool:
        # An unsmoothed member of the SMUG family (MoDL) carries sigma and K, but they change nothing.
        if attribute in ("sigma", "num_samples") and not getattr(self.module, "is_smoothed", True):
            return False
        return hasattr(self.module, attribute)

    def reconstruct(
        self, batch: dict, kspace_delta: torch.Tensor | None = None, noise_seed: int | None = None
    ) -> torch.Tensor:
        """Magnitude reconstruction (batch, height, width) in DIRECT's normalised units, differentiable.

        Goes through ``engine._do_iteration`` like DIRECT's ``reconstruct_volumes`` does, so any engine-specific
        processing (sensitivity-map normalisation or a learned sensitivity model, sampling models) is included.
        """
        # _do_iteration overwrites data["sensitivity_map"] in the dict it gets: always hand it a fresh one.
        data = dict(batch)
        if kspace_delta is not None:
            data["masked_kspace"] = batch["masked_kspace"] + kspace_delta
        from direct.data.transforms import modulus_if_complex

        with self.noise_seed(noise_seed):
            output = self.engine._do_iteration(data, loss_fns=None).output_image
        # Some engines (RIM) return the complex image; DIRECT's _process_output takes the modulus afterwards.
        return modulus_if_complex(output, complex_axis=-1)

    @contextlib.contextmanager
    def noise_seed(self, seed: int | None) -> Iterator[None]:
        """Seed the model's noise for one call (randomized plugin models only)."""
        module = self.module
        if seed is None or not hasattr(module, "noise_seed"):
            yield
            return
        old = module.noise_seed
        module.noise_seed = int(seed)
        try:
            yield
        finally:
            module.noise_seed = old

    @contextlib.contextmanager
    def settings(self, **overrides: Any) -> Iterator[bool]:
        """Temporarily set test-time attributes (unroll count, sigma, K); yields False if one is unsupported."""
        wanted = {k: v for k, v in overrides.items() if v is not None}
        if any(not self.supports(k) for k in wanted):
            yield False
            return
        module = self.module
        old = {k: getattr(module, k) for k in wanted}
        try:
            for k, v in wanted.items():
                setattr(module, k, v)
            yield True
        finally:
            for k, v in old.items():
                setattr(module, k, v)

    def describe(self) -> dict:
        module = self.module
        return {
            "name": self.name,
            "config": str(self.spec.config),
            "checkpoint": str(self.spec.checkpoint),
            "model_name": self.cfg.model.model_name,
            "engine": type(self.engine).__name__,
            "parameters": sum(p.numel() for p in module.parameters()),
            "randomized": self.is_randomized,
            **{k: getattr(module, k) for k in (*TUNABLE_ATTRIBUTES, "noise_seed") if hasattr(module, k)},
        }


def load_model(spec: ModelSpec, device: str, log_dir: pathlib.Path) -> LoadedModel:
    """Build model and engine from the DIRECT YAML and load the checkpoint the way ``direct predict`` does.

    Raises
    ------
    FileNotFoundError
        Missing config or checkpoint.
    ValueError
        DIRECT could not build the model (unknown ``model_name``, bad keys) or the YAML has no ``inference`` section.
    """
    from direct.checkpointer import Checkpointer
    from direct.environment import setup_inference_environment

    spec.check_files()
    root_level = logging.getLogger().level
    disabled = logging.root.manager.disable  # the caller's own logging.disable level, restored below
    # DIRECT's set-up prints every config at INFO (once per model): keep the console for progress and errors.
    logging.disable(max(disabled, logging.INFO))
    try:
        env = setup_inference_environment(spec.name, log_dir, device, 0, False, spec.config)
    except SystemExit:
        # DIRECT logs the reason and calls sys.exit(-1) when it cannot resolve a name.
        raise ValueError(
            f"Model '{spec.name}': DIRECT could not build the model from {spec.config} "
            f"(unknown model_name or engine? see {log_dir / spec.name})."
        ) from None
    finally:
        logging.disable(disabled)
        logging.getLogger().setLevel(max(root_level, logging.WARNING))
    if env.cfg.get("inference") is None:
        raise ValueError(f"Model '{spec.name}': {spec.config} has no 'inference:' section (needed for the data).")
    engine = env.engine
    checkpointer = Checkpointer(save_directory=log_dir, save_to_disk=False, model=engine.model, **engine.models)
    try:
        checkpointer.load_models_from_file(spec.checkpoint)
    except KeyError as e:
        raise ValueError(f"Model '{spec.name}': {spec.checkpoint} is not a DIRECT checkpoint (no {e}).") from None
    engine.models_to_device()
    engine.models_validation_mode()
    return LoadedModel(spec, env)


def build_dataset(
    model: LoadedModel, data_root: pathlib.Path, acceleration: float | None, center_fraction: float | None
):
    """The inference dataset of `model`'s YAML, optionally with another acceleration (sampling-rate shift)."""
    from direct.common.subsample import build_masking_function
    from direct.data.datasets import build_dataset_from_input
    from direct.inference import build_inference_transforms
    from omegaconf import OmegaConf

    dataset_cfg = model.cfg.inference.dataset
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
    model.engine.ndim = dataset.ndim
    return dataset


@dataclass
class _EnvView:
    """The two attributes of a DIRECT environment that `build_inference_transforms` reads."""

    model: LoadedModel

    @property
    def engine(self):
        return self.model.engine

    @property
    def cfg(self):
        return self.model.cfg


def iterate_batches(
    model: LoadedModel, dataset, batch_size: int, max_slices: int | None
) -> Iterator[tuple[str, list[int]]]:
    """Batches of dataset indices, each within one volume (DIRECT's sequential volume sampler), as (key, indices).

    Indices are produced without loading data so that ``--resume`` can skip finished batches for free.
    """
    sampler = model.engine.build_batch_sampler(
        dataset, batch_size=batch_size, sampler_type="sequential", limit_number_of_volumes=None
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
    for key in ("masked_kspace", "sensitivity_map", "target"):
        if key in batch and not torch.isfinite(batch[key]).all():
            raise ValueError(f"Non-finite values (NaN/inf) in '{key}' of {batch['filename'][0]}, slices {indices}.")
    return batch
