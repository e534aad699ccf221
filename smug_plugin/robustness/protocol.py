"""Robustness protocol files: which perturbations and test-time shifts an evaluation runs.

A protocol is a YAML file (see ``configs/robustness/paper.yaml``) read with omegaconf and validated here, so that a
typo fails before any model is loaded rather than after hours of attacks.
"""

import pathlib
import zlib
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from smug_plugin.robustness.budgets import Budget, NormType
from smug_plugin.robustness.perturbations import AttackDomain, AttackTarget

TRANSFER_FROM_EACH = "each"
TRANSFER_SEPARATOR = "@"


class ProtocolError(ValueError):
    """A robustness protocol file is malformed or asks for something unknown."""


class PerturbationKind(StrEnum):
    CLEAN = "clean"
    GAUSSIAN = "gaussian"
    PGD = "pgd"


@dataclass(frozen=True)
class PerturbationSpec:
    """One perturbation of the measured k-space (see `perturbations` for the semantics of the fields)."""

    name: str
    kind: PerturbationKind
    budget: Budget | None = None
    domain: AttackDomain = AttackDomain.KSPACE
    steps: int = 10
    step_fraction: float = 1.0 / 3.0
    random_start: bool = True
    target: AttackTarget = AttackTarget.GROUND_TRUTH
    eot_samples: int = 1
    keep_best: bool = True
    transfer_from: str | None = None

    def describe(self) -> str:
        if self.kind == PerturbationKind.CLEAN:
            return "clean"
        text = f"{self.kind.value} {self.domain.value} {self.budget.describe()}"
        if self.kind == PerturbationKind.PGD:
            text += (
                f", {self.steps} steps of {self.step_fraction:.3g} eps, random start={self.random_start}, "
                f"loss=MSE to {self.target.value}, "
                + (f"EOT over {self.eot_samples} draws/step" if self.eot_samples > 1 else "one noise draw per step")
                + (f", transferred from {self.transfer_from}" if self.transfer_from else ", white-box per model")
            )
        return text

    def to_dict(self) -> dict:
        d = asdict(self)
        d["budget"] = self.budget.to_dict() if self.budget else None
        d["description"] = self.describe()
        return {k: (v.value if isinstance(v, StrEnum) else v) for k, v in d.items()}


@dataclass(frozen=True)
class Condition:
    """One evaluated cell: a perturbation under test-time settings (None = as configured in the model's YAML)."""

    group: str  # "main" (Table I) or the sweep name
    perturbation: PerturbationSpec
    sweep_value: float | None = None
    acceleration: float | None = None
    center_fraction: float | None = None
    num_steps: int | None = None
    sigma: float | None = None
    num_samples: int | None = None

    @property
    def id(self) -> str:
        value = "" if self.sweep_value is None else f"={self.sweep_value:g}"
        return f"{self.group}{value}/{self.perturbation.name}"

    @property
    def data_key(self) -> tuple:
        """Conditions sharing a data key share the data batches (masks depend on the acceleration)."""
        return (self.acceleration, self.center_fraction)

    def seed(self, base: int, batch_key: str) -> int:
        """Seed of this condition on one batch, independent of run order so that --resume reproduces numbers."""
        return (base * 1_000_003 + zlib.crc32(f"{self.id}|{batch_key}".encode())) % (2**31 - 1)


@dataclass
class Protocol:
    name: str
    seed: int
    perturbations: list[PerturbationSpec]
    sweeps: dict[str, dict] = field(default_factory=dict)

    def perturbation(self, name: str) -> PerturbationSpec:
        for p in self.perturbations:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.perturbations)
        raise ProtocolError(f"Protocol refers to perturbation '{name}', which is not defined (defined: {known}).")

    def for_models(self, names: list[str]) -> "Protocol":
        """Expands ``transfer_from: each`` into one transferred perturbation per source model (a transfer matrix):
        ``<name>@<source>`` is computed on the source model and applied unchanged to every model."""
        expanded = []
        for p in self.perturbations:
            if p.transfer_from == TRANSFER_FROM_EACH:
                expanded += [replace(p, name=f"{p.name}{TRANSFER_SEPARATOR}{n}", transfer_from=n) for n in names]
            else:
                expanded.append(p)
        return replace(self, perturbations=expanded)

    def conditions(self) -> list[Condition]:
        """Every condition to evaluate: main table first, then the sweeps."""
        out = [Condition("main", p) for p in self.perturbations]
        for sweep_name, sweep in self.sweeps.items():
            perts = [self.perturbation(n) for n in sweep.get("perturbations", ["clean"])]
            for value in sweep["values"]:
                if sweep_name == "acceleration":
                    cf = sweep.get("center_fraction_product", 0.32) / value
                    out += [Condition(sweep_name, p, value, acceleration=value, center_fraction=cf) for p in perts]
                elif sweep_name == "unrolls":
                    out += [Condition(sweep_name, p, value, num_steps=int(value)) for p in perts]
                elif sweep_name == "sigma":
                    out += [Condition(sweep_name, p, value, sigma=float(value)) for p in perts]
                elif sweep_name == "num_samples":
                    out += [Condition(sweep_name, p, value, num_samples=int(value)) for p in perts]
                else:  # budget
                    base = self.perturbation(sweep["perturbation"])
                    if base.budget is None:
                        raise ProtocolError(f"The budget sweep needs a perturbation with a budget, not '{base.name}'.")
                    budget = Budget(float(value), base.budget.convention, base.budget.norm)
                    p = PerturbationSpec(**{**base.__dict__, "budget": budget})
                    out.append(Condition(sweep_name, p, value))
        return out

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "seed": self.seed,
            "perturbations": [p.to_dict() for p in self.perturbations],
            "sweeps": self.sweeps,
        }


_PERTURBATION_KEYS = {f for f in PerturbationSpec.__dataclass_fields__} | {"norm"}
_SWEEPS = {"acceleration", "unrolls", "budget", "sigma", "num_samples"}


def _enum(cls, value, what: str):
    try:
        return cls(value)
    except ValueError:
        raise ProtocolError(f"Unknown {what} '{value}'; expected one of: {', '.join(e.value for e in cls)}.") from None


def _parse_perturbation(raw: dict[str, Any]) -> PerturbationSpec:
    if not isinstance(raw, dict) or "name" not in raw or "kind" not in raw:
        raise ProtocolError(f"Every perturbation needs a 'name' and a 'kind' (clean, gaussian, pgd); got {raw!r}.")
    unknown = set(raw) - _PERTURBATION_KEYS
    if unknown:
        raise ProtocolError(f"Perturbation '{raw['name']}' has unknown keys {sorted(unknown)}.")
    kind = _enum(PerturbationKind, raw["kind"], "perturbation kind (attack name)")
    budget = None
    if kind != PerturbationKind.CLEAN:
        b = raw.get("budget")
        if b is None:
            raise ProtocolError(f"Perturbation '{raw['name']}' needs a budget.")
        if not isinstance(b, dict):
            b = {"value": b}
        norm = _enum(NormType, raw.get("norm", b.get("norm", "linf")), "norm")
        try:
            budget = Budget(b.get("value"), b.get("convention", "absolute"), norm)
        except ValueError as e:
            raise ProtocolError(f"Perturbation '{raw['name']}': bad budget {b!r}: {e}") from None
    kwargs = {k: v for k, v in raw.items() if k not in {"budget", "norm", "kind"}}
    if "domain" in kwargs:
        kwargs["domain"] = _enum(AttackDomain, kwargs["domain"], "attack domain")
    if "target" in kwargs:
        kwargs["target"] = _enum(AttackTarget, kwargs["target"], "attack target")
    spec = PerturbationSpec(kind=kind, budget=budget, **kwargs)
    if spec.steps < 0 or spec.eot_samples < 1 or spec.step_fraction <= 0:
        raise ProtocolError(f"Perturbation '{spec.name}': steps >= 0, eot_samples >= 1, step_fraction > 0 required.")
    return spec


def load_protocol(path: str | pathlib.Path) -> Protocol:
    """Load and validate a protocol YAML.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ProtocolError
        Malformed YAML, unknown attack names, keys or sweeps, negative budgets, dangling references.
    """
    from omegaconf import OmegaConf

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Robustness protocol file not found: {path}")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # yaml.YAMLError and omegaconf errors alike
        raise ProtocolError(f"Could not parse robustness protocol {path}: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("perturbations"), list) or not raw["perturbations"]:
        raise ProtocolError(f"{path}: a protocol is a mapping with a non-empty 'perturbations' list.")
    unknown = set(raw) - {"name", "seed", "perturbations", "sweeps"}
    if unknown:
        raise ProtocolError(f"{path}: unknown top-level keys {sorted(unknown)}.")
    perts = [_parse_perturbation(p) for p in raw["perturbations"]]
    names = [p.name for p in perts]
    if len(set(names)) != len(names):
        raise ProtocolError(f"{path}: perturbation names must be unique, got {names}.")
    sweeps = raw.get("sweeps") or {}
    bad = set(sweeps) - _SWEEPS
    if bad:
        raise ProtocolError(f"{path}: unknown sweeps {sorted(bad)}; known: {sorted(_SWEEPS)}.")
    for sweep_name, sweep in sweeps.items():
        if not isinstance(sweep, dict) or not sweep.get("values"):
            raise ProtocolError(f"{path}: sweep '{sweep_name}' needs a non-empty 'values' list.")
        # sigma = 0 is the unsmoothed network (SMUG becomes MoDL): a meaningful point of the sigma sweep.
        smallest = 0 if sweep_name in ("sigma", "budget") else 1e-12
        if any((not isinstance(v, int | float)) or v < smallest for v in sweep["values"]):
            kind = "non-negative" if smallest == 0 else "positive"
            raise ProtocolError(f"{path}: sweep '{sweep_name}' values must be {kind} numbers.")
        if sweep_name == "budget" and "perturbation" not in sweep:
            raise ProtocolError(f"{path}: the budget sweep names the 'perturbation' whose budget it varies.")
    protocol = Protocol(raw.get("name", path.stem), int(raw.get("seed", 0)), perts, sweeps)
    protocol.conditions()  # resolves every reference, raising ProtocolError on a dangling one
    return protocol
