"""The interface between the evaluation and a model: perturbed batch + test-time settings -> magnitude image.

A `Reconstructor` wraps one DIRECT engine with its weights. Plugin models take test-time settings (unroll count,
smoothing sigma, number of draws, noise seed, the gradient an attack gets) through their network's
``test_time(...)`` context manager; DIRECT's native models take none and say so, and the evaluation reports those
cells n/a.
"""

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, runtime_checkable

import torch

from smug_plugin import direct_adapter
from smug_plugin.operators import MultiCoilOperator
from smug_plugin.robustness.threat_model import (
    DEFAULT_NORMALISATION,
    Normalisation,
    direct_scaling_factor,
    measurement_normalisation,
)
from smug_plugin.units import IntensityScale

NOISE_SEED = "noise_seed"
NORMALISATION = "normalisation"
# Settings every model runs under: the noise seed (ignored where no noise is drawn) and the threat model's
# normalisation (`threat_model`), which the reconstructor applies around the model.
UNIVERSAL_SETTINGS = frozenset({NOISE_SEED, NORMALISATION})


@dataclass(frozen=True)
class TestTimeSettings:
    """Settings a model runs under at test time; None keeps what its YAML configured.

    A noise seed matters only to models that draw noise: the others run unchanged under any seed. The attack
    gradient (``full`` or ``published``, see ``smug_plugin.models.unrolled.AttackGradient``) changes the gradient
    an attack gets, never a reconstruction's value; only PGD with ``gradient: published`` sets it. ``normalisation``
    is the threat model's (`threat_model.Normalisation`; None: ``fixed``): whether a perturbation may move the
    intensity normalisation the model computes from its measurements.
    """

    __test__ = False  # not a pytest test class

    num_steps: int | None = None
    sigma: float | None = None
    num_samples: int | None = None
    noise_seed: int | None = None
    attack_gradient: str | None = None
    normalisation: str | None = None
    # A defended model's gradient through its purification (`defenses.cyclic_consistency.DefenseGradient`): set by
    # the `unrolled_pgd` attack only; other models cannot run under it (their cells are n/a).
    defense_gradient: str | None = None

    @property
    def threat_normalisation(self) -> Normalisation:
        return DEFAULT_NORMALISATION if self.normalisation is None else Normalisation(self.normalisation)

    def requested(self) -> dict[str, Any]:
        """The settings that change something (not None)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


class UnsupportedSettings(Exception):
    """A model cannot run under the requested test-time settings (its cells are reported n/a)."""


@runtime_checkable
class SupportsTestTime(Protocol):
    """The test-time interface of the plugin's networks."""

    def test_time(self, num_steps=None, sigma=None, num_samples=None, noise_seed=None, attack_gradient=None): ...

    def supported_test_time_settings(self) -> frozenset[str]: ...


class Reconstructor(ABC):
    """A trained model as the evaluation sees it."""

    name: str

    @abstractmethod
    def supported_settings(self) -> frozenset[str]:
        """Names of the `TestTimeSettings` fields this model can apply."""

    def unsupported(self, settings: TestTimeSettings) -> frozenset[str]:
        """The requested settings this model cannot run under (a noise seed or normalisation never is)."""
        return frozenset(settings.requested()) - UNIVERSAL_SETTINGS - self.supported_settings()

    def applicable(self, settings: TestTimeSettings) -> dict[str, Any]:
        """The settings to apply: all requested ones, the noise seed only where the model draws noise."""
        unsupported = self.unsupported(settings)
        if unsupported:
            raise UnsupportedSettings(f"Model '{self.name}' has no test-time setting {', '.join(sorted(unsupported))}.")
        return {k: v for k, v in settings.requested().items() if k in self.supported_settings()}

    def relative_work(self, settings: TestTimeSettings) -> float:
        """The expected cost of a reconstruction under ``settings`` relative to one as configured, 0 where the model
        cannot run them (for balancing the work of a sharded run)."""
        return 0.0 if self.unsupported(settings) else 1.0

    @abstractmethod
    def reconstruct(self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings) -> torch.Tensor:
        """Magnitude image (batch, height, width) of ``batch`` with ``kspace_delta`` added, differentiable, under the
        threat model's normalisation (``settings.normalisation``)."""

    def normalisation_shift(
        self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings
    ) -> torch.Tensor | None:
        """The factor ``(batch,)`` by which the intensity normalisation the model applies to its input moved
        because of ``kspace_delta`` (1: not at all); None where the model has none that depends on the input."""
        return None

    @abstractmethod
    def operator(self, batch: dict) -> MultiCoilOperator:
        """A = M F S of ``batch`` as this model sees it (its sensitivity-map processing and FFTs)."""

    @abstractmethod
    def is_randomized(self, settings: TestTimeSettings) -> bool:
        """Whether a reconstruction under ``settings`` draws noise."""

    @abstractmethod
    def describe(self) -> dict:
        """What the report states about the model."""


class EngineReconstructor(Reconstructor):
    """A DIRECT engine with its weights; the output goes through the engine's own iteration, as in
    ``direct predict``, so engine-specific processing (sensitivity-map normalisation or model) is included.

    Parameters
    ----------
    name : str
        Display name.
    cfg : DictConfig
        The DIRECT config the engine was built from.
    engine : MRIModelEngine
        The engine, weights loaded, in evaluation mode.
    provenance : dict
        Where it came from (config and checkpoint paths), for the report.
    """

    def __init__(self, name: str, cfg: Any, engine: Any, provenance: dict | None = None):
        self.name = name
        self.cfg = cfg
        self.engine = engine
        self.provenance = provenance or {}

    @property
    def module(self) -> torch.nn.Module:
        model = self.engine.model
        return model.module if hasattr(model, "module") else model

    def use_dimensionality(self, ndim: int) -> None:
        """DIRECT engines learn the dimensionality of the data from the dataset."""
        self.engine.ndim = ndim

    def reconstruct(self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings) -> torch.Tensor:
        # The engine overwrites data["sensitivity_map"] in the dict it gets: always hand it a fresh one.
        data = dict(batch)
        data["masked_kspace"], ratio = perturbed_measurement(self.cfg, batch, kspace_delta, settings)
        with self._applied(settings), self._scale_source(batch, kspace_delta, settings):
            output = direct_adapter.engine_magnitude(self.engine, data)
        return output if ratio is None else output * _per_slice(ratio, output)

    def _scale_source(self, batch: dict, kspace_delta, settings: TestTimeSettings) -> contextlib.AbstractContextManager:
        """A model-internal normalisation held at its clean value (plugin models override this)."""
        return contextlib.nullcontext()

    def normalisation_shift(
        self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings
    ) -> torch.Tensor | None:
        return direct_normalisation_shift(self.cfg, batch, kspace_delta, settings)

    def operator(self, batch: dict) -> MultiCoilOperator:
        sensitivity_map = self.engine.compute_sensitivity_map(batch["sensitivity_map"]).detach()
        return MultiCoilOperator(
            self.engine.forward_operator, self.engine.backward_operator, sensitivity_map, batch["sampling_mask"]
        )

    def _applied(self, settings: TestTimeSettings) -> contextlib.AbstractContextManager:
        self.applicable(settings)
        return contextlib.nullcontext()

    def describe(self) -> dict:
        return {
            "name": self.name,
            **self.provenance,
            "model_name": self.cfg.model.model_name,
            "engine": type(self.engine).__name__,
            "parameters": sum(p.numel() for p in self.module.parameters()),
            "randomized": self.is_randomized(TestTimeSettings()),
        }


class NativeReconstructor(EngineReconstructor):
    """A DIRECT-native model (VarNet, RIM, ...): deterministic, no test-time settings."""

    def supported_settings(self) -> frozenset[str]:
        return frozenset()

    def is_randomized(self, settings: TestTimeSettings) -> bool:
        return False


class PluginReconstructor(EngineReconstructor):
    """A plugin model (MoDL, SMUG family): settings applied through the network's ``test_time`` context."""

    def supported_settings(self) -> frozenset[str]:
        return frozenset(self.module.supported_test_time_settings())

    @contextlib.contextmanager
    def _applied(self, settings: TestTimeSettings) -> Iterator[None]:
        with self.module.test_time(**self.applicable(settings)):
            yield

    def is_randomized(self, settings: TestTimeSettings) -> bool:
        with self._applied(settings):
            return bool(self.module.is_randomized)

    @property
    def _scales_internally(self) -> bool:
        return getattr(self.module, "intensity_scale", None) == IntensityScale.PAPER

    def _scale_source(self, batch: dict, kspace_delta, settings: TestTimeSettings) -> contextlib.AbstractContextManager:
        """Under the ``fixed`` threat model the network's s comes from the clean measurement of the batch."""
        fixed = settings.threat_normalisation == Normalisation.FIXED
        if not (self._scales_internally and fixed and kspace_delta is not None):
            return contextlib.nullcontext()
        return self.module.scale_from(batch["masked_kspace"])

    def normalisation_shift(
        self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings
    ) -> torch.Tensor | None:
        """With ``intensity_scale: paper`` the total divisor of the input is DIRECT's ratio times the network's s of
        the renormalised input, which (s being homogeneous) is s(A^H (y + delta)) / s(A^H y)."""
        if not self._scales_internally:
            return super().normalisation_shift(batch, kspace_delta, settings)
        n = batch["masked_kspace"].shape[0]
        if kspace_delta is None or settings.threat_normalisation == Normalisation.FIXED:
            return torch.ones(n, device=batch["masked_kspace"].device)
        operator = self.operator(batch)
        with torch.no_grad():
            clean = self.module.input_scale(operator.adjoint(batch["masked_kspace"]))
            return self.module.input_scale(operator.adjoint(batch["masked_kspace"] + kspace_delta)) / clean

    def relative_work(self, settings: TestTimeSettings) -> float:
        """Unrolls times noise draws (one batch of K draws costs about K reconstructions), relative to the YAML's."""
        if self.unsupported(settings):
            return 0.0
        with self._applied(settings):
            work = self._unrolled_draws()
        return work / self._unrolled_draws()

    def _unrolled_draws(self) -> int:
        network = self.module
        return network.num_steps * (network.num_samples if network.is_randomized else 1)

    def describe(self) -> dict:
        network = self.module
        return {
            **super().describe(),
            "test_time_settings": sorted(self.supported_settings()),
            "intensity_scale": str(getattr(network.intensity_scale, "value", network.intensity_scale)),
            "num_steps": int(network.num_steps),
            "sigma": float(network.sigma) if network.is_smoothed else None,
        }


def engine_reconstructor(name: str, cfg: Any, engine: Any, provenance: dict | None = None) -> EngineReconstructor:
    """The reconstructor of a DIRECT engine: a plugin model when its network has the test-time interface."""
    model = engine.model
    module = model.module if hasattr(model, "module") else model
    kind = PluginReconstructor if isinstance(module, SupportsTestTime) else NativeReconstructor
    return kind(name, cfg, engine, provenance)


@dataclass(frozen=True)
class ConfiguredModel:
    """A reconstructor under one condition's test-time settings: the model an attack sees.

    Parameters
    ----------
    reconstructor : Reconstructor
        The model.
    settings : TestTimeSettings
        The condition's settings; ``reconstruct`` may add a noise seed per call.
    """

    reconstructor: Reconstructor
    settings: TestTimeSettings = TestTimeSettings()

    @property
    def name(self) -> str:
        return self.reconstructor.name

    @property
    def is_randomized(self) -> bool:
        return self.reconstructor.is_randomized(self.settings)

    def reconstruct(
        self, batch: dict, kspace_delta: torch.Tensor | None = None, noise_seed: int | None = None
    ) -> torch.Tensor:
        settings = self.settings if noise_seed is None else replace(self.settings, noise_seed=noise_seed)
        return self.reconstructor.reconstruct(batch, kspace_delta, settings)

    def operator(self, batch: dict) -> MultiCoilOperator:
        return self.reconstructor.operator(batch)

    def normalisation_shift(self, batch: dict, kspace_delta: torch.Tensor | None) -> torch.Tensor | None:
        return self.reconstructor.normalisation_shift(batch, kspace_delta, self.settings)

    def with_reconstructor(self, reconstructor: Reconstructor) -> "ConfiguredModel":
        """``reconstructor`` under the same settings; raises `UnsupportedSettings` if it cannot run them."""
        reconstructor.applicable(self.settings)
        return ConfiguredModel(reconstructor, self.settings)

    def with_settings(self, **changes: Any) -> "ConfiguredModel":
        """The same model under changed settings; raises `UnsupportedSettings` if it cannot run them."""
        settings = replace(self.settings, **changes)
        self.reconstructor.applicable(settings)
        return ConfiguredModel(self.reconstructor, settings)


def _per_slice(factor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``factor`` (batch,) shaped to multiply ``like`` (batch first)."""
    return factor.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def direct_renormalisation(cfg: Any, clean: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor | None:
    """DIRECT's scaling factor of the perturbed k-space over the clean one's, per slice, as the inference transforms
    of ``cfg`` compute it (None: their scale does not come from the measurement)."""
    percentile = measurement_normalisation(cfg)
    if percentile is False:
        return None
    return direct_scaling_factor(perturbed, percentile) / direct_scaling_factor(clean, percentile).detach()


def perturbed_measurement(
    cfg: Any, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The k-space a model of config ``cfg`` receives, and the factor its output is multiplied back by (None: 1).

    Under the ``attacked`` threat model DIRECT's transforms would have normalised the perturbed raw k-space by its
    own percentile: in the clean normalised units that divides by the ratio of the two scaling factors, and the
    output, which DIRECT un-normalises, comes back times it. Under ``fixed`` the perturbation is simply added.
    """
    if kspace_delta is None:
        return batch["masked_kspace"], None
    perturbed = batch["masked_kspace"] + kspace_delta
    if settings.threat_normalisation != Normalisation.ATTACKED:
        return perturbed, None
    ratio = direct_renormalisation(cfg, batch["masked_kspace"], perturbed)
    return (perturbed, None) if ratio is None else (perturbed / _per_slice(ratio, perturbed), ratio)


def direct_normalisation_shift(
    cfg: Any, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings
) -> torch.Tensor | None:
    """How far DIRECT's normalisation of a model of config ``cfg`` moved under ``kspace_delta`` (1: fixed; None: its
    scale does not come from the measurement)."""
    if measurement_normalisation(cfg) is False:
        return None
    if kspace_delta is None or settings.threat_normalisation == Normalisation.FIXED:
        return torch.ones(batch["masked_kspace"].shape[0], device=batch["masked_kspace"].device)
    with torch.no_grad():
        return direct_renormalisation(cfg, batch["masked_kspace"], batch["masked_kspace"] + kspace_delta)
