"""DIRECT engines from a DIRECT YAML + checkpoint, built exactly as ``direct predict`` builds them.

Everything goes through DIRECT's own machinery (`setup_inference_environment`, `Checkpointer`), so the model, its
engine, operators and sensitivity-map processing are those of ``direct predict`` with the same YAML.
"""

import contextlib
import logging
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from smug_plugin.robustness.reconstructors import EngineReconstructor, engine_reconstructor


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


@contextlib.contextmanager
def _quiet_direct() -> Iterator[None]:
    """DIRECT's set-up prints every config at INFO (once per model): keep the console for progress and errors."""
    root_level = logging.getLogger().level
    disabled = logging.root.manager.disable  # the caller's own logging.disable level, restored below
    logging.disable(max(disabled, logging.INFO))
    try:
        yield
    finally:
        logging.disable(disabled)
        logging.getLogger().setLevel(max(root_level, logging.WARNING))


def inference_environment(name: str, config: pathlib.Path, device: str, log_dir: pathlib.Path) -> Any:
    """DIRECT's inference environment (``cfg``, ``engine``) of a YAML.

    Raises
    ------
    ValueError
        DIRECT could not build the model (unknown ``model_name``, bad keys) or the YAML has no ``inference`` section.
    """
    from direct.environment import setup_inference_environment

    with _quiet_direct():
        try:
            env = setup_inference_environment(name, log_dir, device, 0, False, config)
        except SystemExit:
            # DIRECT logs the reason and calls sys.exit(-1) when it cannot resolve a name.
            raise ValueError(
                f"Model '{name}': DIRECT could not build the model from {config} "
                f"(unknown model_name or engine? see {log_dir / name})."
            ) from None
    if env.cfg.get("inference") is None:
        raise ValueError(f"Model '{name}': {config} has no 'inference:' section (needed for the data).")
    return env


def load_reconstructor(spec: ModelSpec, device: str, log_dir: pathlib.Path) -> EngineReconstructor:
    """Build model and engine from the DIRECT YAML and load the checkpoint the way ``direct predict`` does.

    Raises
    ------
    FileNotFoundError
        Missing config or checkpoint.
    ValueError
        DIRECT could not build the model, the YAML lacks ``inference``, or the file is no DIRECT checkpoint.
    """
    from direct.checkpointer import Checkpointer

    spec.check_files()
    env = inference_environment(spec.name, spec.config, device, log_dir)
    engine = env.engine
    checkpointer = Checkpointer(save_directory=log_dir, save_to_disk=False, model=engine.model, **engine.models)
    try:
        checkpointer.load_models_from_file(spec.checkpoint)
    except KeyError as e:
        raise ValueError(f"Model '{spec.name}': {spec.checkpoint} is not a DIRECT checkpoint (no {e}).") from None
    engine.models_to_device()
    engine.models_validation_mode()
    provenance = {"config": str(spec.config), "checkpoint": str(spec.checkpoint)}
    return engine_reconstructor(spec.name, env.cfg, engine, provenance)


def save_fresh_checkpoint(config: pathlib.Path, directory: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Build the model of ``config`` with freshly initialised weights (seeded) and save it as DIRECT's checkpointer
    does, ``directory / model_0.pt`` (for tests and benchmarks)."""
    from smug_plugin.atomic import atomic_path

    torch.manual_seed(seed)
    env = inference_environment("init", config, "cpu", directory / "logs")
    path = directory / "model_0.pt"
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"model": env.engine.model.state_dict()}, tmp)
    return path
