"""The ``--model`` specs of a run and the models they load: ``NAME=CONFIG.yaml:CHECKPOINT.pt`` (a DIRECT engine,
`direct_engines`) and the models without a checkpoint, ``NAME=MODEL.yaml``: the CS baseline (a ``cs:`` section,
`cs_baseline`) and the cyclic-consistency defense of another model (a ``defense:`` section, `defenses`).

The one place that builds every kind of reconstructor, so the one module of this package that imports `defenses`.
"""

import pathlib
from dataclasses import dataclass

from smug_plugin.cs.config import CS_SECTION, load_cs_settings, read_model_yaml
from smug_plugin.cs.wavelet_sense import L1WaveletSettings
from smug_plugin.robustness.defenses.cyclic_consistency import (
    DEFENSE_SECTION,
    DefendedReconstructor,
    DefenseSettings,
    read_defense_settings,
)
from smug_plugin.robustness.reconstructors.cs_baseline import CSReconstructor
from smug_plugin.robustness.reconstructors.direct_engines import ModelSpec, load_reconstructor
from smug_plugin.robustness.reconstructors.interface import EngineReconstructor, Reconstructor


@dataclass(frozen=True)
class CSSpec:
    """``NAME=MODEL.yaml`` as given on the command line: a CS model or a defense."""

    name: str
    config: pathlib.Path

    def check_files(self) -> None:
        """The YAML exists and holds valid settings (checked before any DIRECT model is loaded)."""
        if not self.config.is_file():
            raise FileNotFoundError(f"Model '{self.name}': model YAML not found: {self.config}")
        self.settings()

    def settings(self) -> L1WaveletSettings | DefenseSettings:
        """The CS settings or the defense settings of the YAML."""
        document = read_model_yaml(self.config)
        if DEFENSE_SECTION in document and CS_SECTION not in document:
            section = document[DEFENSE_SECTION]
            if not isinstance(section, dict):
                raise ValueError(f"{self.config}: '{DEFENSE_SECTION}:' must be a mapping of settings.")
            return read_defense_settings(self.config, section)
        return load_cs_settings(self.config, document.get(CS_SECTION))


def parse_model_spec(text: str) -> ModelSpec | CSSpec:
    """``NAME=CONFIG.yaml:CHECKPOINT.pt`` (a DIRECT model) or ``NAME=CS.yaml`` (the CS baseline)."""
    name, sep, rest = text.partition("=")
    if sep and name and rest and ":" not in rest:
        return CSSpec(name, pathlib.Path(rest))
    return ModelSpec.parse(text)


def load_models(
    specs: list[ModelSpec | CSSpec], device: str, log_dir: pathlib.Path, node_rank: int = 0
) -> list[Reconstructor]:
    """The DIRECT models of ``specs`` as `load_reconstructor` loads them, the CS models on the first one's A, and
    the defenses around the models they name, in the order given.

    Raises
    ------
    ValueError
        No DIRECT model (the others need one's data), a defense of an unknown model, or a bad YAML.
    """
    settings = {s.name: s.settings() for s in specs if isinstance(s, CSSpec)}
    if settings and not any(isinstance(s, ModelSpec) for s in specs):
        raise ValueError(
            "CS models and defenses reconstruct with the masks, coil maps and normalisation of a DIRECT model: add "
            "one --model NAME=CONFIG.yaml:CHECKPOINT.pt."
        )
    wrappable = [s.name for s in specs if not isinstance(settings.get(s.name), DefenseSettings)]
    for spec in specs:  # before any DIRECT model is loaded
        wraps = getattr(settings.get(spec.name), "wraps", None)
        if wraps is not None and wraps not in wrappable:
            raise ValueError(
                f"{spec.config}: the defense wraps '{wraps}', which is not a DIRECT or CS --model of this run "
                f"({', '.join(wrappable) or 'none'}): name one of them."
            )
    loaded = [load_reconstructor(s, device, log_dir, node_rank) if isinstance(s, ModelSpec) else s for s in specs]
    engines = [m for m in loaded if isinstance(m, EngineReconstructor)]
    loaded = [
        CSReconstructor(m.name, settings[m.name], engines[0], {"config": str(m.config)})
        if isinstance(m, CSSpec) and isinstance(settings[m.name], L1WaveletSettings)
        else m
        for m in loaded
    ]
    defended = {m.name: m for m in loaded if isinstance(m, Reconstructor)}
    models = []
    for m in loaded:
        if isinstance(m, CSSpec):
            m = DefendedReconstructor(
                m.name, settings[m.name], defended[settings[m.name].wraps], {"config": str(m.config)}
            )
        models.append(m)
    return models
