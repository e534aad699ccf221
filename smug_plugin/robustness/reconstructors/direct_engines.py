"""DIRECT engines from a DIRECT YAML + checkpoint, built exactly as ``direct predict`` builds them.

The model, its engine, operators and sensitivity-map processing come from DIRECT's own
`setup_inference_environment`, so they are those of ``direct predict`` with the same YAML. The weights are loaded
as DIRECT's `Checkpointer` loads them, except that the file is read with ``torch.load(weights_only=True)`` (nothing in
it is executed) and must fit the model exactly.
"""

import contextlib
import logging
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from smug_plugin.models.checkpoint import MODEL_NAME_KEY
from smug_plugin.robustness.reconstructors.interface import EngineReconstructor, engine_reconstructor


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
    root = logging.getLogger()
    root_level, handlers = root.level, list(root.handlers)
    disabled = logging.root.manager.disable  # the caller's own logging.disable level, restored below
    logging.disable(max(disabled, logging.INFO))
    try:
        yield
    finally:
        logging.disable(disabled)
        root.setLevel(max(root_level, logging.WARNING))
        # DIRECT adds a console handler per model set-up (they pile up, and outlive a redirected stdout); its log
        # file handler stays.
        for handler in [h for h in root.handlers if h not in handlers]:
            if type(handler) is logging.StreamHandler:
                root.removeHandler(handler)


def _read_yaml(name: str, config: pathlib.Path) -> None:
    """Check that ``config`` is a DIRECT YAML with a ``model.model_name`` before DIRECT reads it (DIRECT answers
    malformed YAML with a traceback, and a missing model name with a log line and ``sys.exit``)."""
    from omegaconf import DictConfig, OmegaConf

    from smug_plugin.config_errors import describe_config_error

    try:
        cfg = OmegaConf.load(config)
    except OSError as e:
        raise ValueError(f"Model '{name}': {config} cannot be read ({e.strerror}): check its permissions.") from None
    except Exception as e:  # yaml.YAMLError and omegaconf errors alike
        raise ValueError(f"Model '{name}': {config} is {describe_config_error(e)}: fix the file.") from None
    model = cfg.get("model") if isinstance(cfg, DictConfig) else None
    if not isinstance(model, DictConfig) or not isinstance(model.get("model_name"), str):
        raise ValueError(
            f"Model '{name}': {config} has no 'model:' section with a model_name (e.g. smug.smug.SMUG): "
            "give the YAML the model was trained with (DIRECT writes it as config.yaml in the run folder)."
        )


def inference_environment(
    name: str, config: pathlib.Path, device: str, log_dir: pathlib.Path, machine_rank: int = 0
) -> Any:
    """DIRECT's inference environment (``cfg``, ``engine``) of a YAML; ``machine_rank`` (the node of a sharded
    run) names DIRECT's log file.

    Raises
    ------
    ValueError
        The YAML is malformed, DIRECT could not build the model (unknown ``model_name``, unknown keys or bad values
        in a section) or the YAML has no ``inference`` section.
    """
    from direct.environment import setup_inference_environment
    from omegaconf.errors import OmegaConfBaseException

    from smug_plugin.config_errors import describe_config_error
    from smug_plugin.robustness.reconstructors.names import file_stem

    _read_yaml(name, config)
    # DIRECT logs into log_dir / run_name: the display name is free text ("../x", "/tmp/x"), its stem is not.
    run_name = file_stem(name)
    with _quiet_direct():
        try:
            env = setup_inference_environment(run_name, log_dir, device, machine_rank, False, config)
        except SystemExit:
            # DIRECT logs the reason and calls sys.exit(-1) when it cannot resolve a name.
            raise ValueError(
                f"Model '{name}': DIRECT could not build the model from {config} "
                f"(unknown model_name or engine? see {log_dir / run_name})."
            ) from None
        except OmegaConfBaseException as e:
            raise ValueError(f"Model '{name}': {config}: {describe_config_error(e)}") from None
    if env.cfg.get("inference") is None:
        raise ValueError(f"Model '{name}': {config} has no 'inference:' section (needed for the data).")
    return env


def load_weights(spec: ModelSpec, engine: Any) -> None:
    """Load the checkpoint's weights into the engine's model (and additional models), as ``direct predict`` does,
    but read with ``torch.load(weights_only=True)`` and only into modules whose keys and shapes it matches exactly.

    DIRECT's own `Checkpointer` calls ``torch.load`` without ``weights_only`` (so torch < 2.6, or
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, unpickle in full and run what the file asks for) and accepts unexpected
    keys with a log line, so a checkpoint of another model would be evaluated under the YAML's model name.

    Raises
    ------
    ValueError
        The file is refused (it would execute code), corrupt, no DIRECT checkpoint, or of another model.
    """
    from smug_plugin.models.checkpoint import is_state_dict, load_weights_only, state_mismatch

    where = f"Model '{spec.name}': checkpoint {spec.checkpoint}"
    fix = f"give the model_<iteration>.pt that `direct train` wrote with {spec.config}"
    checkpoint = load_weights_only(spec.checkpoint, where, fix)
    if not isinstance(checkpoint, dict) or not is_state_dict(checkpoint.get("model")):
        what = f"keys {sorted(map(str, checkpoint))[:5]}" if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{where} is not a DIRECT checkpoint (it holds {what}, no weights under 'model'): {fix}.")
    trained_as = checkpoint.get(MODEL_NAME_KEY)
    if isinstance(trained_as, str) and trained_as != engine.cfg.model.model_name:
        # Networks of one architecture (MoDL, SMUG, RS-E2E) share every key and shape: only the name can tell.
        raise ValueError(
            f"{where} was trained as {trained_as}, and {spec.config} builds {engine.cfg.model.model_name}: "
            f"give the YAML of the run that wrote it (its config.yaml), or {fix}."
        )
    for key, module in {"model": engine.model, **engine.models}.items():
        state = checkpoint.get(key)
        if not is_state_dict(state):
            raise ValueError(f"{where} holds no weights for the '{key}' that {spec.config} builds: {fix}.")
        mismatch = state_mismatch(module.state_dict(), state)
        if mismatch:
            raise ValueError(
                f"{where} does not fit the {key} that {spec.config} builds ({engine.cfg.model.model_name}): "
                f"{mismatch}. It is another model or another size: {fix}."
            )
        not_finite = next(
            (k for k, v in state.items() if (v.is_floating_point() or v.is_complex()) and not torch.isfinite(v).all()),
            None,
        )
        if not_finite is not None:  # every output would be NaN, every attack a no-op reported as n/a
            raise ValueError(
                f"{where}: tensor '{not_finite}' of the {key} holds NaN or inf values (a diverged training run): "
                "give an earlier model_<iteration>.pt of the run."
            )
        module.load_state_dict(state)


def _not_finite(tensor: torch.Tensor) -> bool:
    return (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all())


# Settings of the model section that change what a trained network computes without changing its weights' keys or
# shapes (those are compared with the checkpoint itself).
COMPARED_WITH_TRAINING = ("model_name", "num_steps", "sigma", "num_samples", "reuse_noise")


def training_config_warnings(spec: ModelSpec, cfg: Any) -> list[str]:
    """Differences between the YAML a model is evaluated with and the ``config.yaml`` that ``direct train`` wrote
    beside its checkpoint (the run folder), in model name and smoothing settings; [] when there is none."""
    from omegaconf import DictConfig, OmegaConf

    trained_config = spec.checkpoint.parent / "config.yaml"
    if not trained_config.is_file() or trained_config.resolve() == spec.config.resolve():
        return []
    try:
        trained = OmegaConf.load(trained_config).get("model")
    except Exception:  # the run's copy is evidence, not input: unreadable means nothing to compare
        trained = None
    if not isinstance(trained, DictConfig):
        return [f"Model '{spec.name}': {trained_config} beside the checkpoint has no readable model section."]
    differences = [
        f"{key}={cfg.model.get(key)} (trained: {trained.get(key)})"
        for key in COMPARED_WITH_TRAINING
        if key in cfg.model and key in trained and cfg.model.get(key) != trained.get(key)
    ]
    if not differences:
        return []
    return [
        f"Model '{spec.name}': {spec.config} differs from the config.yaml of the run that wrote its checkpoint "
        f"({trained_config}): {'; '.join(differences)}. Its results are reported as {cfg.model.model_name}; "
        "evaluate it with the run's config.yaml unless the difference is intended."
    ]


def load_reconstructor(
    spec: ModelSpec, device: str, log_dir: pathlib.Path, machine_rank: int = 0
) -> EngineReconstructor:
    """Build model and engine from the DIRECT YAML and load the checkpoint the way ``direct predict`` does
    (``machine_rank``: the node of a sharded run, in DIRECT's log file name).

    Raises
    ------
    FileNotFoundError
        Missing config or checkpoint.
    ValueError
        DIRECT could not build the model, the YAML lacks ``inference``, or the checkpoint is refused, corrupt or of
        another model (see `load_weights`).
    """
    spec.check_files()
    env = inference_environment(spec.name, spec.config, device, log_dir, machine_rank)
    engine = env.engine
    load_weights(spec, engine)
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
