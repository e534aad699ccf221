"""The classical CS baseline as a reconstructor: l1-wavelet SENSE (`smug_plugin.cs`) with a DIRECT model's operator.

A CS model has no DIRECT engine: it reconstructs with the operator A of a DIRECT model of the same run (its data
model: sensitivity-map normalisation and FFTs as that engine uses them), so every model sees the same A and batches.
"""

import torch

from smug_plugin.cs.wavelet_sense import L1WaveletSettings, OrthogonalWavelet, l1_wavelet_sense
from smug_plugin.operators import MultiCoilOperator
from smug_plugin.robustness.reconstructors.interface import (
    EngineReconstructor,
    Reconstructor,
    TestTimeSettings,
    direct_normalisation_shift,
    perturbed_measurement,
)

CS_MODEL_NAME = "cs.l1_wavelet_sense"


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
        # CS reads the data as DIRECT normalised them: under the `attacked` threat model that normalisation follows.
        kspace, ratio = perturbed_measurement(self.data_model.cfg, batch, kspace_delta, settings)
        image = l1_wavelet_sense(self.operator(batch), kspace, self.settings, self.wavelet).norm(dim=-1)
        return image if ratio is None else image * ratio.reshape(-1, 1, 1)  # magnitude (batch, H, W), as the engines'

    def normalisation_shift(
        self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings
    ) -> torch.Tensor | None:
        return direct_normalisation_shift(self.data_model.cfg, batch, kspace_delta, settings)

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
