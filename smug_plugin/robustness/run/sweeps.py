"""Sweeps: the protocol's test-time shifts, one condition per swept value.

Each kind maps a value to the overrides of a condition (``acceleration`` / ``center_fraction`` of the data,
``num_steps`` / ``sigma`` / ``num_samples`` of the test-time settings, the ``budget`` of the perturbation; see
`protocol.Condition.with_overrides`). Adding a sweep is one `register_sweep` call here.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Overrides = Callable[[Any, Mapping[str, Any]], dict[str, Any]]
# (value, sweep mapping) -> None; raises ValueError for a value the kind cannot run.
ValueCheck = Callable[[Any, Mapping[str, Any]], None]


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (YAML's ``true`` is no number, nor are ``.nan`` and ``.inf``)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SweepKind:
    """One kind of sweep.

    Parameters
    ----------
    name : str
        Its key under ``sweeps:`` in a protocol (also the condition group).
    label : str
        The x-axis of its figure.
    overrides : Callable
        ``(value, sweep mapping) -> condition overrides``.
    allow_zero : bool
        Whether 0 is a meaningful value (otherwise values must be positive).
    options : frozenset[str]
        Further keys of the sweep mapping besides ``values`` and the perturbations (numbers > 0).
    single_perturbation : bool
        Varies the one perturbation named by ``perturbation`` (required) instead of the list ``perturbations``
        (default: clean).
    integer : bool
        Values are counts (unrolls, noise draws): a fraction would silently run as its floor.
    check_value : Callable, optional
        Further check of one value against the sweep mapping (raises ValueError).
    """

    name: str
    label: str
    overrides: Overrides
    allow_zero: bool = False
    options: frozenset[str] = frozenset()
    single_perturbation: bool = False
    integer: bool = False
    check_value: ValueCheck | None = None

    def perturbations(self, sweep: Mapping[str, Any]) -> list[str]:
        """Names of the perturbations evaluated at every value."""
        if self.single_perturbation:
            return [sweep["perturbation"]]
        return list(sweep.get("perturbations", ["clean"]))

    def check(self, sweep: Any) -> None:
        """Raise ValueError unless ``sweep`` is a valid mapping for this kind."""
        if not isinstance(sweep, Mapping) or not isinstance(sweep.get("values"), list) or not sweep["values"]:
            raise ValueError(f"sweep '{self.name}' needs a non-empty 'values' list, got {sweep!r}.")
        key = "perturbation" if self.single_perturbation else "perturbations"
        unknown = set(sweep) - {"values", key} - self.options
        if unknown:
            raise ValueError(f"sweep '{self.name}' has unknown keys {sorted(unknown)}.")
        for option in self.options & set(sweep):
            if not is_number(sweep[option]) or sweep[option] <= 0:
                raise ValueError(f"sweep '{self.name}': '{option}' must be a number > 0, got {sweep[option]!r}.")
        values = sweep["values"]
        for value in values:
            self._check_value(value, sweep)
        if len(set(values)) != len(values):
            raise ValueError(f"sweep '{self.name}' lists a value twice: {values}.")
        if self.single_perturbation:
            if not isinstance(sweep.get(key), str):
                raise ValueError(f"the {self.name} sweep names the 'perturbation' whose {self.name} it varies.")
        elif key in sweep and (
            not isinstance(sweep[key], list) or not all(isinstance(name, str) for name in sweep[key])
        ):
            raise ValueError(f"sweep '{self.name}': 'perturbations' must be a list of names, got {sweep[key]!r}.")

    def _check_value(self, value: Any, sweep: Mapping[str, Any]) -> None:
        smallest = 0 if self.allow_zero else 1e-12
        if not is_number(value) or value < smallest or (self.integer and value != int(value)):
            kind = "non-negative" if self.allow_zero else "positive"
            whole = f" and whole ({self.label})" if self.integer else ""
            raise ValueError(f"sweep '{self.name}' values must be {kind} numbers{whole}, got {value!r}.")
        if self.check_value is not None:
            self.check_value(value, sweep)


SWEEPS: dict[str, SweepKind] = {}


def register_sweep(kind: SweepKind) -> SweepKind:
    if kind.name in SWEEPS:
        raise ValueError(f"Sweep '{kind.name}' is registered twice.")
    SWEEPS[kind.name] = kind
    return kind


# Sampling-rate shift: the centre fraction keeps the number of ACS lines (0.32 / acceleration = 0.08 at 4x).
def _center_fraction(value: float, sweep: Mapping[str, Any]) -> float:
    return sweep.get("center_fraction_product", 0.32) / value


def _check_acceleration(value: float, sweep: Mapping[str, Any]) -> None:
    if value < 1 or _center_fraction(value, sweep) > 1:
        raise ValueError(
            f"sweep 'acceleration': value {value!r} gives a centre fraction of {_center_fraction(value, sweep):g} "
            "(center_fraction_product / value); accelerations are >= 1 and centre fractions <= 1."
        )


register_sweep(
    SweepKind(
        "acceleration",
        "acceleration factor",
        lambda value, sweep: {"acceleration": value, "center_fraction": _center_fraction(value, sweep)},
        options=frozenset({"center_fraction_product"}),
        check_value=_check_acceleration,
    )
)
register_sweep(SweepKind("unrolls", "unroll count", lambda value, sweep: {"num_steps": int(value)}, integer=True))
# sigma = 0 is the unsmoothed network (SMUG becomes MoDL): a meaningful point of the sigma sweep.
register_sweep(SweepKind("sigma", "smoothing sigma", lambda value, sweep: {"sigma": float(value)}, allow_zero=True))
register_sweep(
    SweepKind("num_samples", "Monte Carlo samples K", lambda value, sweep: {"num_samples": int(value)}, integer=True)
)
register_sweep(
    SweepKind(
        "budget",
        "attack budget eps",
        lambda value, sweep: {"budget": float(value)},
        allow_zero=True,
        single_perturbation=True,
    )
)
