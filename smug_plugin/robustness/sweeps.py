"""Sweeps: the protocol's test-time shifts, one condition per swept value.

Each kind maps a value to the overrides of a condition (``acceleration`` / ``center_fraction`` of the data,
``num_steps`` / ``sigma`` / ``num_samples`` of the test-time settings, the ``budget`` of the perturbation; see
`protocol.Condition.with_overrides`). Adding a sweep is one `register_sweep` call here.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Overrides = Callable[[Any, Mapping[str, Any]], dict[str, Any]]


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
        Further keys of the sweep mapping besides ``values`` and the perturbations.
    single_perturbation : bool
        Varies the one perturbation named by ``perturbation`` (required) instead of the list ``perturbations``
        (default: clean).
    """

    name: str
    label: str
    overrides: Overrides
    allow_zero: bool = False
    options: frozenset[str] = frozenset()
    single_perturbation: bool = False

    def perturbations(self, sweep: Mapping[str, Any]) -> list[str]:
        """Names of the perturbations evaluated at every value."""
        if self.single_perturbation:
            return [sweep["perturbation"]]
        return list(sweep.get("perturbations", ["clean"]))

    def check(self, sweep: Any) -> None:
        """Raise ValueError unless ``sweep`` is a valid mapping for this kind."""
        if not isinstance(sweep, Mapping) or not sweep.get("values"):
            raise ValueError(f"sweep '{self.name}' needs a non-empty 'values' list.")
        smallest = 0 if self.allow_zero else 1e-12
        if any((not isinstance(v, int | float)) or v < smallest for v in sweep["values"]):
            kind = "non-negative" if self.allow_zero else "positive"
            raise ValueError(f"sweep '{self.name}' values must be {kind} numbers.")
        key = "perturbation" if self.single_perturbation else "perturbations"
        if self.single_perturbation and key not in sweep:
            raise ValueError(f"the {self.name} sweep names the 'perturbation' whose {self.name} it varies.")
        unknown = set(sweep) - {"values", key} - self.options
        if unknown:
            raise ValueError(f"sweep '{self.name}' has unknown keys {sorted(unknown)}.")


SWEEPS: dict[str, SweepKind] = {}


def register_sweep(kind: SweepKind) -> SweepKind:
    if kind.name in SWEEPS:
        raise ValueError(f"Sweep '{kind.name}' is registered twice.")
    SWEEPS[kind.name] = kind
    return kind


# Sampling-rate shift: the centre fraction keeps the number of ACS lines (0.32 / acceleration = 0.08 at 4x).
register_sweep(
    SweepKind(
        "acceleration",
        "acceleration factor",
        lambda value, sweep: {
            "acceleration": value,
            "center_fraction": sweep.get("center_fraction_product", 0.32) / value,
        },
        options=frozenset({"center_fraction_product"}),
    )
)
register_sweep(SweepKind("unrolls", "unroll count", lambda value, sweep: {"num_steps": int(value)}))
# sigma = 0 is the unsmoothed network (SMUG becomes MoDL): a meaningful point of the sigma sweep.
register_sweep(SweepKind("sigma", "smoothing sigma", lambda value, sweep: {"sigma": float(value)}, allow_zero=True))
register_sweep(SweepKind("num_samples", "Monte Carlo samples K", lambda value, sweep: {"num_samples": int(value)}))
register_sweep(
    SweepKind(
        "budget",
        "attack budget eps",
        lambda value, sweep: {"budget": float(value)},
        allow_zero=True,
        single_perturbation=True,
    )
)
