"""Perturbation budget conventions.

Published robustness studies state their budgets in incompatible units. The SMUG journal code uses an l_inf budget
per real/imaginary k-space entry (eps = 0.02) in units where each slice's coil-combined fully sampled image has
max(|Re|, |Im|) = 1 (`paper`; :mod:`smug_plugin.units`), its text a budget relative to the largest k-space
magnitude, and Robustness-CS / robust-nets a relative l2 norm ``||delta|| / ||y||``. DIRECT normalises k-space by
the 99th percentile of its masked magnitude instead, where that image maximum is several units (`absolute`). The
CycMit-MRI code (Saberi et al.) scales each slice by the maximum magnitude of its zero-filled image
(`relative_zero_filled`). A
`Budget` carries its convention so that every output can state it, and resolves to one eps per slice.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch

# Declared with the units (a lower layer), so that the training configs name them too; imported from here as before.
from smug_plugin.units import BudgetConvention, NormType


def parse_enum[E: Enum](cls: type[E], value: Any, what: str) -> E:
    """``cls(value)`` with an error that lists the allowed values."""
    try:
        return cls(value)
    except ValueError:
        raise ValueError(f"Unknown {what} '{value}'; expected one of: {', '.join(e.value for e in cls)}.") from None


# The fix named wherever a `paper` budget meets data without fully sampled k-space.
PAPER_NEEDS_FULLY_SAMPLED = (
    "budget convention 'paper' (eps as a fraction of each slice's fully sampled image scale s_ref) needs the fully "
    "sampled k-space: evaluate on fully sampled files (as fastMRI's train and val sets), or state the budgets with "
    "convention: absolute (DIRECT's normalised units)"
)


def zero_filled_maximum(zero_filled: torch.Tensor) -> torch.Tensor:
    """max |x| per slice (batch,) of a complex image with a trailing real/imaginary axis (detached)."""
    return zero_filled.detach().norm(dim=-1).reshape(zero_filled.shape[0], -1).amax(dim=1)


@dataclass(frozen=True)
class Budget:
    """A perturbation budget.

    Parameters
    ----------
    value : float
        Budget value in the units of `convention`; must be finite and >= 0.
    convention : BudgetConvention
        Unit of `value`.
    norm : NormType
        Norm of the ball the budget bounds.
    """

    value: float
    convention: BudgetConvention = BudgetConvention.ABSOLUTE
    norm: NormType = NormType.LINF

    def __post_init__(self) -> None:
        object.__setattr__(self, "convention", parse_enum(BudgetConvention, self.convention, "budget convention"))
        object.__setattr__(self, "norm", parse_enum(NormType, self.norm, "norm"))
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"Budget value must be a finite number >= 0, got {self.value!r}.")
        if self.convention == BudgetConvention.RELATIVE_L2 and self.norm != NormType.L2:
            raise ValueError("Budget convention 'relative_l2' (||delta||/||y||) only applies to the l2 norm.")

    @classmethod
    def parse(cls, raw: Any, norm: str | None = None) -> "Budget":
        """The budget of a protocol entry: a number, or ``{value, convention, norm}``; a ``norm`` beside it wins.

        Raises
        ------
        ValueError
            A missing, negative or malformed budget, or an unknown convention or norm.
        """
        if raw is None:
            raise ValueError("needs a budget (a number, or {value, convention}).")
        fields = dict(raw) if isinstance(raw, Mapping) else {"value": raw}
        unknown = set(fields) - {"value", "convention", "norm"}
        if unknown:
            raise ValueError(f"bad budget {raw!r}: unknown keys {sorted(unknown)}.")
        if norm is not None:
            fields["norm"] = norm
        fields.setdefault("norm", NormType.LINF)
        fields.setdefault("convention", BudgetConvention.ABSOLUTE)
        try:
            return cls(fields.get("value"), fields["convention"], fields["norm"])
        except ValueError as error:
            raise ValueError(f"bad budget {raw!r}: {error}") from None

    @property
    def needs_reference_scale(self) -> bool:
        """Whether the radius is a fraction of the slices' fully sampled image scale s_ref."""
        return self.convention == BudgetConvention.PAPER

    @property
    def needs_zero_filled(self) -> bool:
        """Whether the radius is a fraction of the slices' zero-filled image maximum max |A^H y|."""
        return self.convention == BudgetConvention.RELATIVE_ZERO_FILLED

    def resolve(
        self,
        signal: torch.Tensor,
        support: torch.Tensor,
        reference_scale: torch.Tensor | None = None,
        zero_filled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Radius per slice in DIRECT's normalised units.

        Parameters
        ----------
        signal : torch.Tensor
            The measured signal that is perturbed, batch first, complex as a trailing axis of size 2.
        support : torch.Tensor
            Entries that may be perturbed (broadcastable to `signal`), e.g. the sampling mask.
        reference_scale : torch.Tensor, optional
            s_ref per slice, shape (batch,), in DIRECT's units (`paper` budgets only).
        zero_filled : torch.Tensor, optional
            The zero-filled image A^H y of the measured k-space, batch first, complex as a trailing axis of size 2
            (`relative_zero_filled` budgets only).

        Returns
        -------
        torch.Tensor
            Radius of shape (batch,).

        Raises
        ------
        ValueError
            A `paper` budget without ``reference_scale`` (data without fully sampled k-space), or a
            `relative_zero_filled` budget without ``zero_filled``.
        """
        batch = signal.shape[0]
        measured = (signal * support).detach().reshape(batch, -1)
        if self.convention == BudgetConvention.ABSOLUTE:
            return torch.full((batch,), float(self.value), dtype=signal.dtype, device=signal.device)
        if self.convention == BudgetConvention.PAPER:
            if reference_scale is None:
                raise ValueError(f"{PAPER_NEEDS_FULLY_SAMPLED}.")
            return self.value * reference_scale.detach().to(dtype=signal.dtype, device=signal.device)
        if self.convention == BudgetConvention.RELATIVE_ZERO_FILLED:
            if zero_filled is None:
                raise ValueError("budget convention 'relative_zero_filled' needs the zero-filled image A^H y.")
            return self.value * zero_filled_maximum(zero_filled).to(dtype=signal.dtype, device=signal.device)
        if self.convention == BudgetConvention.RELATIVE_MAX:
            return self.value * measured.abs().amax(dim=1)
        return self.value * measured.norm(dim=1)

    def describe(self) -> str:
        """Human-readable statement of the budget, written into every output."""
        unit = {
            BudgetConvention.ABSOLUTE: "absolute, DIRECT's normalised units",
            BudgetConvention.PAPER: "paper units: x s_ref, the max |real/imag| of the slice's fully sampled image",
            BudgetConvention.RELATIVE_MAX: "x max |real/imag| of measured signal",
            BudgetConvention.RELATIVE_L2: "x ||y||_2 (relative l2)",
            BudgetConvention.RELATIVE_ZERO_FILLED: "x max |A^H y|, the slice's zero-filled image maximum",
        }[self.convention]
        per = " per real/imag entry" if self.norm == NormType.LINF else ""
        return f"{self.norm.value} eps={self.value:g} ({unit}){per}"

    def to_dict(self) -> dict:
        return {"value": self.value, "convention": self.convention.value, "norm": self.norm.value}
