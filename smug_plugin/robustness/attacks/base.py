"""What every attack shares: its call, its outcome, its self-validating settings, and the registry of kinds.

An attack is called as ``attack(model, batch, targets, seed) -> AttackOutcome``: ``model`` reconstructs a
(perturbed) batch under the condition's test-time settings, ``targets`` gives what the reconstruction is pushed
away from, and ``seed`` makes the attack reproducible. Attacks act on DIRECT's normalised, masked multi-coil k-space
(``batch["masked_kspace"]``), so they are measurement perturbations valid for any DIRECT model.
"""

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, ClassVar, Protocol, Self

import torch

from smug_plugin.operators import MultiCoilOperator
from smug_plugin.robustness.attacks.budgets import Budget, parse_enum


class AttackFamily(StrEnum):
    """What an attack knows of the model: the sanity checks compare the families (e.g. gradient-free against
    gradient attacks, a sign of gradient masking when the first is stronger)."""

    NONE = "none"  # no perturbation
    NOISE = "noise"  # random, independent of the model
    GRADIENT = "gradient"  # first-order, through the model's gradient
    GRADIENT_FREE = "gradient_free"  # queries of the model's output only
    ENSEMBLE = "ensemble"  # the worst case over other attacks


class AttackTarget(StrEnum):
    """What the attacked reconstruction is pushed away from."""

    GROUND_TRUTH = "ground_truth"
    CLEAN = "clean"  # the model's own clean reconstruction (Robustness-CS)


class AttackedModel(Protocol):
    """What an attack needs of a model (``reconstructors.interface.ConfiguredModel`` in ``smug evaluate``)."""

    name: str
    is_randomized: bool

    def reconstruct(
        self, batch: dict, kspace_delta: torch.Tensor | None = None, noise_seed: int | None = None
    ) -> torch.Tensor:
        """Magnitude reconstruction of ``batch`` with ``kspace_delta`` added to its k-space, differentiable."""

    def operator(self, batch: dict) -> MultiCoilOperator:
        """The model's A = M F S for ``batch`` (its sensitivity-map processing and FFTs)."""

    def with_reconstructor(self, reconstructor: Any) -> "AttackedModel":
        """Another reconstructor under the same test-time settings."""

    def with_settings(self, **changes: Any) -> "AttackedModel":
        """The same model under changed test-time settings (e.g. ``attack_gradient``); raises
        ``reconstructors.interface.UnsupportedSettings`` where the model has no such setting."""


@dataclass(frozen=True)
class Targets:
    """What an attack pushes a reconstruction away from.

    Parameters
    ----------
    ground_truth : torch.Tensor
        Magnitude target (batch, height, width) in DIRECT's normalised units.
    clean : Callable, optional
        The clean reconstruction of a model (shared with the evaluation, so computed once per batch and setting).
    reference_scale : torch.Tensor, optional
        The papers' intensity scale s_ref per slice (batch,) in DIRECT's normalised units, the unit of `paper`
        budgets: :func:`smug_plugin.units.reference_intensity_scale` of the coil-combined fully sampled image.
        None where the data hold no fully sampled k-space.
    psnr : Callable, optional
        The per-slice PSNR (dB) the evaluation reports for a reconstruction (its crop and scaling): the ensemble
        keeps, per slice, the member with the lowest. None outside ``smug evaluate`` (the MSE to the ground truth
        then ranks the members, as the PSNR of a fixed target does).
    """

    ground_truth: torch.Tensor
    clean: Callable[[AttackedModel], torch.Tensor] | None = None
    reference_scale: torch.Tensor | None = None
    psnr: Callable[[torch.Tensor], torch.Tensor] | None = None

    def of(self, target: AttackTarget, model: AttackedModel) -> torch.Tensor:
        if AttackTarget(target) == AttackTarget.GROUND_TRUTH:
            return self.ground_truth
        if self.clean is None:
            raise ValueError("This attack targets the clean reconstruction, but none was provided.")
        return self.clean(model).detach()


@dataclass
class AttackOutcome:
    """A k-space perturbation and the facts the report states about it.

    Attributes
    ----------
    kspace_delta : torch.Tensor or None
        Addition to ``masked_kspace``; None leaves the measurement as acquired (the clean reconstruction).
    eps : list[float]
        Radius of the ball per slice (0 for no perturbation).
    objective : list[float], optional
        Attack objective per slice of the returned perturbation (gradient attacks).
    history : list[torch.Tensor]
        Objective per slice at every step (recorded as ``objective_trace``).
    source : str, optional
        The model the perturbation was computed on, when it was transferred.
    diagnostics : dict[str, list]
        Further per-slice facts for the sanity checks, one list entry per slice (e.g. ``zero_gradient_steps``).
    """

    kspace_delta: torch.Tensor | None
    eps: list[float]
    objective: list[float] | None = None
    history: list[torch.Tensor] = field(default_factory=list)
    source: str | None = None
    diagnostics: dict[str, list] = field(default_factory=dict)

    def facts(self, index: int) -> dict[str, Any]:
        """The record fields of slice ``index``."""
        facts: dict[str, Any] = {"eps": self.eps[index]}
        if self.objective is not None:
            facts["attack_objective"] = self.objective[index]
        if self.history:
            facts["objective_trace"] = [float(step[index]) for step in self.history]
        if self.source is not None:
            facts["source"] = self.source
        facts.update({name: values[index] for name, values in self.diagnostics.items()})
        return facts


def _is_string_enum(kind: Any) -> bool:
    """StrEnum and DIRECT's DirectEnum (a str Enum) alike."""
    return isinstance(kind, type) and issubclass(kind, Enum) and issubclass(kind, str)


def _checked(kind: Any, value: Any, name: str) -> Any:
    if _is_string_enum(kind):
        return parse_enum(kind, value, name.replace("_", " "))
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"'{name}' must be true or false, got {value!r}.")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"'{name}' must be an integer, got {value!r}.")
    if kind is float and (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)):
        raise ValueError(f"'{name}' must be a finite number, got {value!r}.")
    if kind is Budget and not isinstance(value, Budget):
        raise ValueError(f"'{name}' must be a Budget, got {value!r}.")
    return value


@dataclass(frozen=True)
class AttackSettings(ABC):
    """Settings of one attack kind; subclasses are dataclasses whose fields are the protocol entry's keys.

    Values are type-checked (enums parsed from their strings) on construction; subclasses add their own checks
    in ``__post_init__`` after calling this one.
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _checked(f.type, getattr(self, f.name), f.name))

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> Self:
        """Settings from a protocol entry (without ``name`` / ``kind``); a budget may come with a ``norm`` beside it.

        Raises
        ------
        ValueError
            Unknown keys, wrong types, bad budgets, out-of-range values.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        names = set(fields)
        values = dict(entry)
        # A kind with a default budget (the paper's) keeps it when the entry names none.
        defaulted = "budget" in fields and fields["budget"].default is not dataclasses.MISSING
        if "budget" in names and not (defaulted and "budget" not in values and "norm" not in values):
            values["budget"] = Budget.parse(values.get("budget"), values.pop("norm", None))
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} (known: {', '.join(sorted(names)) or 'none'}).")
        return cls(**values)

    def fields(self) -> dict[str, Any]:
        """The settings as constructor keywords of their attack."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, as written to the manifest and the report."""
        out = {}
        for name, value in self.fields().items():
            if isinstance(value, Budget):
                value = value.to_dict()
            out[name] = value.value if isinstance(value, Enum) else value
        return out

    @abstractmethod
    def describe(self) -> str:
        """Human-readable statement of the attack, written into every output."""

    def model_passes(self) -> float:
        """The expected work of the attack on one model in forward passes of the model (a backward pass counts as
        two), besides the reconstruction of the perturbed input; for balancing the work of a sharded run."""
        return 0.0


class Attack(ABC):
    """One attack kind: constructed from its settings as keywords, called as ``attack(model, batch, targets, seed)``.

    Subclasses set ``kind`` (the protocol's name for it) and ``Settings``, and register with `register_attack`.
    """

    kind: ClassVar[str]
    Settings: ClassVar[type[AttackSettings]]
    # Gradient attacks are computed on the attacked model itself unless transferred; the report says which.
    white_box: ClassVar[bool] = False
    family: ClassVar[AttackFamily] = AttackFamily.NONE
    # Built from other attacks (the protocol entry's `members`), passed to the constructor as `members`.
    composite: ClassVar[bool] = False

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings(**settings)

    @abstractmethod
    def __call__(self, model: AttackedModel, batch: dict, targets: Targets, seed: int) -> AttackOutcome:
        """The perturbation of ``batch`` for ``model``."""


ATTACKS: dict[str, type[Attack]] = {}


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: make ``cls`` available to protocols as ``kind: <cls.kind>``."""
    if cls.kind in ATTACKS:
        raise ValueError(f"Attack kind '{cls.kind}' is registered twice: {ATTACKS[cls.kind].__name__}, {cls.__name__}.")
    ATTACKS[cls.kind] = cls
    return cls


def attack_class(kind: str) -> type[Attack]:
    """The registered attack of ``kind``, with an error that lists the known kinds."""
    try:
        return ATTACKS[kind]
    except KeyError:
        known = ", ".join(sorted(ATTACKS))
        raise ValueError(f"Unknown perturbation kind (attack name) '{kind}'; expected one of: {known}.") from None
