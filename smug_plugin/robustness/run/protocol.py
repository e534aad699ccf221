"""Robustness protocols: which perturbations and test-time shifts an evaluation runs.

A protocol is a YAML file read with omegaconf and validated here, so that a typo fails before any model is loaded
rather than after hours of attacks. The package ships its protocols (``configs/robustness/``), named
by their file stem: ``smug evaluate --protocol paper``; a path to any other file works too.
"""

import dataclasses
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib.resources.abc import Traversable
from typing import Any

from smug_plugin.robustness.attacks import ATTACKS, Attack, AttackSettings, attack_class, build_attack
from smug_plugin.robustness.reconstructors.interface import TestTimeSettings
from smug_plugin.robustness.run.sweeps import SWEEPS
from smug_plugin.robustness.seeds import derive_seed
from smug_plugin.robustness.threat_model import DEFAULT_NORMALISATION, parse_normalisation

TRANSFER_FROM_EACH = "each"
TRANSFER_SEPARATOR = "@"
MEMBERS_SEPARATOR = "; members: "  # between an ensemble's description and its members'
PROTOCOL_KEYS = {"name", "seed", "perturbations", "sweeps", "threat_model"}
THREAT_MODEL_KEYS = {"normalisation"}
# The test-time settings a sweep may override (the noise seed is the evaluation's, the attack gradient an attack's,
# the normalisation the threat model's: never a sweep's).
SHIFTED_SETTINGS = {f.name for f in dataclasses.fields(TestTimeSettings)} - {
    "noise_seed",
    "attack_gradient",
    "normalisation",
}


class ProtocolError(ValueError):
    """A robustness protocol file is malformed or asks for something unknown."""


@dataclass(frozen=True)
class PerturbationSpec:
    """One perturbation of the measured k-space: a named attack with its settings.

    Parameters
    ----------
    name : str
        Name in tables and records.
    kind : str
        Registered attack kind (see `smug_plugin.robustness.attacks`).
    settings : AttackSettings
        The attack's validated settings.
    transfer_from : str, optional
        Compute the perturbation on this model and apply it to every model (``each``: one per model).
    members : tuple[PerturbationSpec, ...]
        The attacks of a composite kind (``ensemble``), all within its budget.
    normalisation : str, optional
        This perturbation's threat model for the models' intensity normalisation (``fixed`` or ``attacked``, see
        `threat_model`); None: the protocol's ``threat_model``.
    """

    name: str
    kind: str
    settings: AttackSettings
    transfer_from: str | None = None
    members: tuple["PerturbationSpec", ...] = ()
    normalisation: str | None = None

    @classmethod
    def from_entry(cls, raw: Any, within: str | None = None) -> "PerturbationSpec":
        """Parse and validate one entry of a protocol's ``perturbations`` list (or of an ensemble's ``members``,
        ``within`` naming the ensemble).

        Raises
        ------
        ProtocolError
            A missing or malformed name or kind, an unknown kind, bad settings (see `AttackSettings.from_entry`), or
            bad members.
        """
        where = "Perturbation" if within is None else f"Member of ensemble '{within}'"
        if not isinstance(raw, Mapping) or "name" not in raw or "kind" not in raw:
            raise ProtocolError(f"Every perturbation needs a 'name' and a 'kind' (clean, gaussian, pgd); got {raw!r}.")
        entry = dict(raw)
        name, kind, transfer_from = entry.pop("name"), entry.pop("kind"), entry.pop("transfer_from", None)
        normalisation = entry.pop("normalisation", None)
        raw_members = entry.pop("members", None)
        # Names become condition ids ("<group>/<name>") and transfer names ("<name>@<source>").
        if not isinstance(name, str) or not name or any(c in name for c in ("/", TRANSFER_SEPARATOR)):
            raise ProtocolError(f"{where} name {name!r} must be a non-empty string without '/' or '@'.")
        if transfer_from is not None and not isinstance(transfer_from, str):
            raise ProtocolError(f"{where} '{name}': 'transfer_from' must be a model name or 'each'.")
        try:
            kind_class = attack_class(str(kind))
            if within is not None and kind_class.composite:
                raise ValueError(f"an ensemble cannot be a member of ensemble '{within}'.")
            settings = kind_class.Settings.from_entry(entry)
        except ValueError as e:
            raise ProtocolError(f"{where} '{name}': {e}") from None
        if raw_members is not None and not kind_class.composite:
            raise ProtocolError(f"{where} '{name}': 'members' belongs to an ensemble (kind: ensemble), not '{kind}'.")
        members = cls._members(name, settings, raw_members) if kind_class.composite else ()
        if normalisation is not None:
            try:
                normalisation = parse_normalisation(normalisation, f"{where} '{name}'").value
            except ValueError as e:
                raise ProtocolError(str(e)) from None
        return cls(name, str(kind), settings, transfer_from, members, normalisation)

    @classmethod
    def _members(cls, name: str, settings: AttackSettings, raw: Any) -> tuple["PerturbationSpec", ...]:
        """The members of ensemble ``name``: each takes the ensemble's budget, or must state that one."""
        if not isinstance(raw, list) or not raw:
            raise ProtocolError(f"Ensemble '{name}' needs a non-empty 'members' list of attack entries (name, kind).")
        budget = settings.budget
        members = []
        for entry in raw:
            kind = entry.get("kind") if isinstance(entry, Mapping) else None
            if isinstance(kind, str) and kind in ATTACKS and not _has_budget(ATTACKS[kind]):
                raise ProtocolError(
                    f"Member '{entry.get('name')}' of ensemble '{name}' is of kind '{kind}', which perturbs within no "
                    "budget: an ensemble keeps, per slice, the worst of attacks within its budget; remove the member "
                    "(the clean reconstruction is reported by its own `kind: clean` perturbation)."
                )
            if isinstance(entry, Mapping) and "budget" not in entry:
                entry = {**entry, "budget": budget.to_dict()}
            member = cls.from_entry(entry, within=name)
            own = getattr(member.settings, "budget", None)
            if own != budget:
                raise ProtocolError(
                    f"Member '{member.name}' of ensemble '{name}' has "
                    f"{'no budget' if own is None else f'budget {own.describe()}'}; every member attacks within the "
                    f"ensemble's {budget.describe()} (leave the member's budget out to inherit it)."
                )
            members.append(member)
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ProtocolError(f"Ensemble '{name}': member names must be unique, got {names}.")
        return tuple(members)

    def with_budget(self, value: float) -> "PerturbationSpec":
        """The same perturbation with another budget value (same convention and norm), its members' too."""
        budget = getattr(self.settings, "budget", None)
        if budget is None:
            raise ProtocolError(f"The budget sweep needs a perturbation with a budget, not '{self.name}'.")
        settings = replace(self.settings, budget=replace(budget, value=value))
        return replace(self, settings=settings, members=tuple(m.with_budget(value) for m in self.members))

    def attack(self, models: Mapping[str, Any]) -> Attack:
        """The attack object, transferred from ``models[transfer_from]`` when set, built from its members' attacks."""
        source = None
        if self.transfer_from is not None:
            if self.transfer_from not in models:
                raise ValueError(f"Perturbation '{self.name}' transfers from unknown model '{self.transfer_from}'.")
            source = models[self.transfer_from]
        members = tuple((m.name, m.attack(models)) for m in self.members)
        return build_attack(self.kind, self.settings, source, members)

    def describe(self) -> str:
        text = self.settings.describe()
        surrogate = str(getattr(getattr(self.settings, "surrogate", None), "value", "self"))
        if attack_class(self.kind).white_box and surrogate == "self":
            text += f", transferred from {self.transfer_from}" if self.transfer_from else ", white-box per model"
        if self.normalisation is not None:
            text += f", normalisation {self.normalisation}"
        if self.members:
            text += MEMBERS_SEPARATOR + "; ".join(f"{m.name} ({m.describe()})" for m in self.members)
        return text

    def to_dict(self) -> dict:
        out = {
            "name": self.name,
            "kind": self.kind,
            "family": attack_class(self.kind).family.value,
            **self.settings.to_dict(),
            "transfer_from": self.transfer_from,
            "description": self.describe(),
        }
        if self.normalisation is not None:
            out["normalisation"] = self.normalisation
        if self.members:
            out["members"] = [m.to_dict() for m in self.members]
        return out

    def with_sources(self, names: list[str]) -> list["PerturbationSpec"]:
        """This perturbation with ``transfer_from: each`` expanded into one per source model (``<name>@<source>``),
        in its members too."""
        spec = replace(self, members=tuple(p for m in self.members for p in m.with_sources(names)))
        if spec.transfer_from != TRANSFER_FROM_EACH:
            return [spec]
        return [replace(spec, name=f"{spec.name}{TRANSFER_SEPARATOR}{n}", transfer_from=n) for n in names]

    def sources(self) -> list[tuple[str, str]]:
        """``(name, transfer_from)`` of this perturbation and its members that transfer."""
        own = [(self.name, self.transfer_from)] if self.transfer_from is not None else []
        return own + [source for m in self.members for source in m.sources()]


@dataclass(frozen=True)
class Condition:
    """One evaluated cell: a perturbation under a data shift and test-time settings (None = as configured)."""

    group: str  # "main" (Table I) or the sweep name
    perturbation: PerturbationSpec
    sweep_value: float | None = None
    acceleration: float | None = None
    center_fraction: float | None = None
    settings: TestTimeSettings = TestTimeSettings()

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
        return derive_seed(base, self.id, batch_key)

    def with_overrides(self, **overrides: Any) -> "Condition":
        """This condition with a sweep's overrides: ``acceleration``, ``center_fraction``, ``budget`` and the
        test-time settings ``num_steps``, ``sigma``, ``num_samples``."""
        perturbation = self.perturbation
        if "budget" in overrides:
            perturbation = perturbation.with_budget(overrides.pop("budget"))
        settings = {k: overrides.pop(k) for k in list(overrides) if k in SHIFTED_SETTINGS}
        return replace(self, perturbation=perturbation, settings=replace(self.settings, **settings), **overrides)


@dataclass
class Protocol:
    name: str
    seed: int
    perturbations: list[PerturbationSpec]
    sweeps: dict[str, dict] = field(default_factory=dict)
    # The threat model of every perturbation that does not state its own (`threat_model.Normalisation`).
    normalisation: str = DEFAULT_NORMALISATION.value
    source: str = field(default="", compare=False)  # the file or shipped name, for error messages

    @property
    def needs_reference_scale(self) -> bool:
        """Whether a budget is stated in the papers' units (`paper`), a fraction of the slices' fully sampled image
        scale: the data must then hold fully sampled k-space. Sweeps keep a budget's convention."""
        budgets = [getattr(p.settings, "budget", None) for p in self.perturbations]
        return any(budget is not None and budget.needs_reference_scale for budget in budgets)

    def perturbation(self, name: str) -> PerturbationSpec:
        for p in self.perturbations:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.perturbations)
        raise ProtocolError(f"Protocol refers to perturbation '{name}', which is not defined (defined: {known}).")

    def for_models(self, names: list[str]) -> "Protocol":
        """Expands ``transfer_from: each`` into one transferred perturbation per source model (a transfer matrix):
        ``<name>@<source>`` is computed on the source model and applied unchanged to every model."""
        return replace(self, perturbations=[q for p in self.perturbations for q in p.with_sources(names)])

    def check_models(self, names: list[str]) -> None:
        """Raise ProtocolError if a perturbation transfers from a model that is not among ``names``."""
        for p in self.perturbations:
            for name, source in p.sources():
                if source not in (TRANSFER_FROM_EACH, *names):
                    raise ProtocolError(
                        f"{self.source or self.name}: perturbation '{name}' transfers from '{source}', which "
                        f"is not a --model (models: {', '.join(names)}; or 'each')."
                    )

    def conditions(self) -> list[Condition]:
        """Every condition to evaluate: main table first, then the sweeps in protocol order."""
        out = [self._condition("main", p) for p in self.perturbations]
        for name, sweep in self.sweeps.items():
            kind = SWEEPS[name]
            perturbations = [self.perturbation(n) for n in kind.perturbations(sweep)]
            for value in sweep["values"]:
                overrides = kind.overrides(value, sweep)
                out += [self._condition(name, p, value).with_overrides(**overrides) for p in perturbations]
        return out

    def normalisation_of(self, perturbation: PerturbationSpec) -> str:
        """The threat model's normalisation under which ``perturbation`` runs."""
        return perturbation.normalisation or self.normalisation

    def _condition(self, group: str, perturbation: PerturbationSpec, value: float | None = None) -> Condition:
        settings = TestTimeSettings(normalisation=self.normalisation_of(perturbation))
        return Condition(group, perturbation, value, settings=settings)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "seed": self.seed,
            "threat_model": {"normalisation": self.normalisation},
            "perturbations": [p.to_dict() for p in self.perturbations],
            "sweeps": self.sweeps,
        }


def shipped_protocols() -> dict[str, Traversable]:
    """The protocols that ship with the package, by name (file stem): ``configs/robustness/*.yaml`` of the checkout,
    mapped into the wheel as package data (``smug_plugin.shipped``)."""
    from smug_plugin.shipped import CONFIGS, shipped_folder

    folder = shipped_folder(CONFIGS).joinpath("robustness")
    return {p.name.removesuffix(".yaml"): p for p in folder.iterdir() if p.name.endswith(".yaml")}


def load_protocol(protocol: str | pathlib.Path) -> Protocol:
    """Load and validate a protocol: a shipped one by name (``paper``, ``smoke``, ...) or a YAML file.

    Raises
    ------
    ProtocolError
        Neither a file nor a shipped name; malformed YAML; unknown attack kinds, keys or sweeps; bad budgets;
        dangling references.
    """
    path = pathlib.Path(protocol)
    if path.is_file():
        return _parse(path.read_text(encoding="utf-8"), str(path), path.stem)
    shipped = shipped_protocols()
    if str(protocol) not in shipped:
        raise ProtocolError(
            f"Unknown robustness protocol '{protocol}': no such file, and not a shipped protocol "
            f"(shipped: {', '.join(sorted(shipped))})."
        )
    return _parse(shipped[str(protocol)].read_text(encoding="utf-8"), f"protocol '{protocol}'", str(protocol))


def _parse(text: str, where: str, default_name: str) -> Protocol:
    from omegaconf import OmegaConf

    from smug_plugin.config_errors import describe_config_error

    try:
        raw = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    except Exception as e:  # yaml.YAMLError and omegaconf errors alike
        raise ProtocolError(f"Could not parse robustness protocol {where}: {describe_config_error(e)}") from None
    try:
        return replace(_validated(raw, default_name), source=where)
    except ProtocolError as e:
        raise ProtocolError(f"{where}: {e}") from None


def _validated(raw: Any, default_name: str) -> Protocol:
    """The protocol of a parsed YAML document, every value checked (ProtocolError): nothing fails once models load."""
    if not isinstance(raw, dict) or not isinstance(raw.get("perturbations"), list) or not raw["perturbations"]:
        raise ProtocolError("a protocol is a mapping with a non-empty 'perturbations' list.")
    unknown = set(raw) - PROTOCOL_KEYS
    if unknown:
        raise ProtocolError(f"unknown top-level keys {sorted(unknown)} (known: {', '.join(sorted(PROTOCOL_KEYS))}).")
    name, seed = raw.get("name", default_name), raw.get("seed", 0)
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"'name' must be a non-empty string, got {name!r}.")
    if not is_seed(seed):
        raise ProtocolError(f"'seed' must be a whole number in [0, 2**32 - 1], got {seed!r}.")
    perturbations = [PerturbationSpec.from_entry(p) for p in raw["perturbations"]]
    names = [p.name for p in perturbations]
    if len(set(names)) != len(names):
        raise ProtocolError(f"perturbation names must be unique, got {names}.")
    sweeps = raw.get("sweeps") or {}
    if not isinstance(sweeps, dict):
        raise ProtocolError(f"'sweeps' must be a mapping of sweep kinds ({', '.join(sorted(SWEEPS))}).")
    bad = set(sweeps) - set(SWEEPS)
    if bad:
        raise ProtocolError(f"unknown sweeps {sorted(bad)}; known: {sorted(SWEEPS)}.")
    for sweep_name, sweep in sweeps.items():
        try:
            SWEEPS[sweep_name].check(sweep)
        except ValueError as e:
            raise ProtocolError(str(e)) from None
    protocol = Protocol(name, seed, perturbations, sweeps, _threat_normalisation(raw.get("threat_model")))
    try:
        protocol.conditions()  # resolves every reference and builds every swept budget
    except ValueError as e:
        raise ProtocolError(str(e)) from None
    return protocol


def is_seed(value: Any) -> bool:
    """Whether ``value`` is a seed numpy, torch and random all accept: an int in [0, 2**32 - 1]."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


def _threat_normalisation(raw: Any) -> str:
    """The protocol's ``threat_model: {normalisation: fixed | attacked}`` (default: fixed, the papers')."""
    if raw is None:
        return DEFAULT_NORMALISATION.value
    if not isinstance(raw, dict) or set(raw) - THREAT_MODEL_KEYS:
        raise ProtocolError(
            f"'threat_model' must be a mapping with the key 'normalisation' (fixed or attacked), got {raw!r}."
        )
    try:
        return parse_normalisation(raw.get("normalisation", DEFAULT_NORMALISATION.value), "threat_model").value
    except ValueError as e:
        raise ProtocolError(str(e)) from None


def _has_budget(attack: type) -> bool:
    """Whether an attack kind's settings have a budget (every perturbing kind; ``clean`` has none)."""
    return "budget" in {f.name for f in dataclasses.fields(attack.Settings)}
