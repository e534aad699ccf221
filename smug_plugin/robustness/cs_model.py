"""The CS baseline as an evaluated model: ``--model NAME=cs.yaml`` (no checkpoint) next to DIRECT checkpoints.

A CS model has no DIRECT engine: it reconstructs with the operator A of a DIRECT model of the same run (its data
model: sensitivity-map normalisation and FFTs as that engine uses them), so every model sees the same A and batches.
"""

import pathlib
from dataclasses import dataclass

import torch

from smug_plugin.cs.config import load_cs_settings
from smug_plugin.cs.wavelet_sense import L1WaveletSettings, OrthogonalWavelet, l1_wavelet_sense
from smug_plugin.operators import MultiCoilOperator
from smug_plugin.robustness.checkpoints import ModelSpec, load_reconstructor
from smug_plugin.robustness.reconstructors import EngineReconstructor, Reconstructor, TestTimeSettings

CS_MODEL_NAME = "cs.l1_wavelet_sense"


@dataclass(frozen=True)
class CSSpec:
    """``NAME=CS.yaml`` as given on the command line."""

    name: str
    config: pathlib.Path

    def check_files(self) -> None:
        """The YAML exists and holds valid settings (checked before any DIRECT model is loaded)."""
        if not self.config.is_file():
            raise FileNotFoundError(f"Model '{self.name}': CS model YAML not found: {self.config}")
        load_cs_settings(self.config)


def parse_model_spec(text: str) -> ModelSpec | CSSpec:
    """``NAME=CONFIG.yaml:CHECKPOINT.pt`` (a DIRECT model) or ``NAME=CS.yaml`` (the CS baseline)."""
    name, sep, rest = text.partition("=")
    if sep and name and rest and ":" not in rest:
        return CSSpec(name, pathlib.Path(rest))
    return ModelSpec.parse(text)


class CSReconstructor(Reconstructor):
    """l1-wavelet SENSE with the operator of ``data_model``; deterministic, no test-time settings.

    Parameters
    ----------
    name : str
        Display name.
    settings : L1WaveletSettings
        Weight, iterations, wavelet.
    data_model : EngineReconstructor
        The DIRECT model whose A (maps, FFTs) and batches the CS model uses.
    provenance : dict
        Where it came from (its YAML), for the report.
    """

    def __init__(
        self, name: str, settings: L1WaveletSettings, data_model: EngineReconstructor, provenance: dict | None = None
    ):
        self.name = name
        self.settings = settings
        self.data_model = data_model
        self.provenance = provenance or {}
        self.wavelet = OrthogonalWavelet(settings.wavelet, settings.levels)

    def supported_settings(self) -> frozenset[str]:
        return frozenset()

    def use_dimensionality(self, ndim: int) -> None:
        """Only 2D slices; nothing to learn from the dataset."""

    def reconstruct(self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings) -> torch.Tensor:
        self.applicable(settings)
        kspace = batch["masked_kspace"] if kspace_delta is None else batch["masked_kspace"] + kspace_delta
        image = l1_wavelet_sense(self.operator(batch), kspace, self.settings, self.wavelet)
        return image.norm(dim=-1)  # magnitude (batch, height, width), as the engines' output

    def operator(self, batch: dict) -> MultiCoilOperator:
        return self.data_model.operator(batch)

    def is_randomized(self, settings: TestTimeSettings) -> bool:
        return False

    def describe(self) -> dict:
        return {
            "name": self.name,
            **self.provenance,
            "model_name": CS_MODEL_NAME,
            "settings": {k: getattr(self.settings, k) for k in ("weight", "iterations", "wavelet", "levels")},
            "operator_from": self.data_model.name,
            "parameters": 0,
            "randomized": False,
        }


def load_models(specs: list[ModelSpec | CSSpec], device: str, log_dir: pathlib.Path) -> list[Reconstructor]:
    """The DIRECT models of ``specs`` as `load_reconstructor` loads them, then the CS models on the first one's A,
    in the order given.

    Raises
    ------
    ValueError
        Only CS models (they need a DIRECT model's data), or a bad CS YAML (see `load_cs_settings`).
    """
    loaded = [load_reconstructor(s, device, log_dir) if isinstance(s, ModelSpec) else s for s in specs]
    engines = [m for m in loaded if isinstance(m, EngineReconstructor)]
    if not engines:
        raise ValueError(
            "A CS model reconstructs with the masks, coil maps and normalisation of a DIRECT model: add one "
            "--model NAME=CONFIG.yaml:CHECKPOINT.pt."
        )
    return [
        CSReconstructor(m.name, load_cs_settings(m.config), engines[0], {"config": str(m.config)})
        if isinstance(m, CSSpec)
        else m
        for m in loaded
    ]
