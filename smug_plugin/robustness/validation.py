"""The evaluation's PGD inside ``direct train``: robust validation and adversarial training.

The engines of the plugin call :func:`attacked_kspace` from ``forward_function``:

- during a second validation pass (`RobustValidation`), so DIRECT computes, logs and writes the metrics of the
  attacked reconstructions exactly like its own (``<metric>_pgd`` in ``metrics_val_*.json`` and TensorBoard);
- on a share of the training batches (`AdversarialTraining`, Madry-style adversarial training): the training loss
  is then taken on the attacked batch.

Both attacks are `smug evaluate`'s PGD object with its objective (the per-slice MSE of the magnitude to the target)
and budget conventions, on the network being trained, under the evaluation's default threat model (the engine holds
the network's intensity scale at the clean measurement's value around the attack and the attacked reconstruction).

The narrow interface between training and evaluation: `smug_plugin.models` imports only this module of
`smug_plugin.robustness`, and only `RobustValidation`, `AdversarialTraining` (the settings) and `attacked_kspace`
(one attacked batch).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch

from smug_plugin.operators import MultiCoilOperator
from smug_plugin.robustness.attacks import Budget, Targets
from smug_plugin.robustness.attacks.budgets import BudgetConvention, NormType
from smug_plugin.robustness.attacks.pgd import PGD
from smug_plugin.units import IntensityScale, parse_choice

__all__ = ["AdversarialTraining", "RobustValidation", "attacked_kspace"]


@dataclass
class RobustValidation:
    """k-space l_inf PGD against the ground truth (the journal's protocol).

    Parameters
    ----------
    budget : float
        l_inf radius per real/imaginary k-space entry in `units`; 0 disables the attack.
    units : IntensityScale
        ``direct``: absolute, in DIRECT's normalised k-space. ``paper``: a fraction of each slice's s_ref, the
        max(|Re|, |Im|) of its coil-combined fully sampled image (the papers' eps = 0.02).
    steps : int
        PGD steps (step size budget / 3, random start).
    seed : int
        Seed of the random start, so that validations at different iterations attack alike.
    """

    budget: float = 0.0
    units: IntensityScale = IntensityScale.DIRECT
    steps: int = 5
    seed: int = 0

    def __post_init__(self):
        self.units = parse_choice(IntensityScale, "robust_validation_units", self.units)
        if self.budget < 0:
            raise ValueError(f"robust_validation_budget must be >= 0, got {self.budget}.")
        if self.steps < 1:
            raise ValueError(f"robust_validation_steps must be >= 1, got {self.steps}.")

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    @property
    def needs_reference_scale(self) -> bool:
        return self.units == IntensityScale.PAPER

    def as_budget(self) -> Budget:
        convention = BudgetConvention.PAPER if self.needs_reference_scale else BudgetConvention.ABSOLUTE
        return Budget(float(self.budget), convention)

    def attack(self) -> PGD:
        return PGD(budget=self.as_budget(), steps=self.steps)

    def seed_at(self, iteration: int) -> int:
        """The same random start at every validation."""
        return self.seed


ADVERSARIAL_TRAINING = "adversarial_training"  # the prefix of the settings' keys in the YAML's model: section


@dataclass
class AdversarialTraining:
    """k-space PGD on a share of the training batches (adversarial training), the evaluation's attack and threat.

    Parameters
    ----------
    budget : float
        Radius of the ball in the units of `convention`; 0 (the default) turns adversarial training off.
    convention : BudgetConvention
        The evaluation's budget conventions: ``absolute`` (DIRECT's normalised k-space), ``paper`` (a fraction of
        each slice's s_ref, the max(|Re|, |Im|) of its coil-combined fully sampled image; the journal's eps 0.02),
        ``relative_zero_filled``, ``relative_max``, ``relative_l2`` (l2 only).
    norm : NormType
        ``linf`` (per real/imaginary k-space entry, the journal's) or ``l2`` (per slice).
    steps : int
        PGD steps (>= 0; 0 is the random start alone).
    step_fraction : float
        Step size as a fraction of the radius (> 0; the papers' 1/3).
    random_start : bool
        Start uniformly inside the ball.
    share : float
        Share of the training batches attacked, in [0, 1], spread evenly and deterministically over DIRECT's
        iteration index i: batch i is attacked when floor((i + 1) share) > floor(i share), so 0.5 attacks every
        second batch and a resumed run attacks the same iterations as an uninterrupted one.
    seed : int
        Seed of the random start; iteration i starts from seed + i.
    """

    budget: float = 0.0
    convention: BudgetConvention = BudgetConvention.ABSOLUTE
    norm: NormType = NormType.LINF
    steps: int = 5
    step_fraction: float = 1.0 / 3.0
    random_start: bool = True
    share: float = 1.0
    seed: int = 0

    def __post_init__(self):
        self.convention = parse_choice(BudgetConvention, f"{ADVERSARIAL_TRAINING}_convention", self.convention)
        self.norm = parse_choice(NormType, f"{ADVERSARIAL_TRAINING}_norm", self.norm)
        for name, value, valid, requirement in (
            ("budget", self.budget, lambda v: v >= 0, ">= 0"),
            ("steps", self.steps, lambda v: v >= 0 and float(v).is_integer(), "an integer >= 0"),
            ("step_fraction", self.step_fraction, lambda v: v > 0, "> 0"),
            ("share", self.share, lambda v: 0 <= v <= 1, "in [0, 1]"),
        ):
            if isinstance(value, bool) or not math.isfinite(value) or not valid(value):
                raise ValueError(f"model.{ADVERSARIAL_TRAINING}_{name} must be {requirement}, got {value!r}.")
        try:
            self.as_budget()
        except ValueError as error:
            raise ValueError(f"model.{ADVERSARIAL_TRAINING}_convention: {error}") from None

    @classmethod
    def of_model(cls, model_cfg) -> "AdversarialTraining":
        """The settings of a ``model:`` section (keys ``adversarial_training_<field>``; absent keys: the defaults)."""
        keys = {name: f"{ADVERSARIAL_TRAINING}_{name}" for name in cls.__dataclass_fields__}
        return cls(**{name: getattr(model_cfg, key) for name, key in keys.items() if hasattr(model_cfg, key)})

    @property
    def enabled(self) -> bool:
        return self.budget > 0 and self.share > 0

    @property
    def needs_reference_scale(self) -> bool:
        return self.as_budget().needs_reference_scale

    def attacks(self, iteration: int) -> bool:
        """Whether the batch of training iteration ``iteration`` (DIRECT's index, from 0) is attacked."""
        if not self.enabled:
            return False
        share = Fraction(repr(float(self.share)))  # exact: 0.3 is 3/10, so no batch is lost to rounding
        return math.floor((iteration + 1) * share) > math.floor(iteration * share)

    def as_budget(self) -> Budget:
        return Budget(float(self.budget), self.convention, self.norm)

    def attack(self) -> PGD:
        return PGD(
            budget=self.as_budget(),
            steps=int(self.steps),
            step_fraction=float(self.step_fraction),
            random_start=bool(self.random_start),
        )

    def seed_at(self, iteration: int) -> int:
        """A fresh random start for every attacked batch, the same on a resumed run."""
        return self.seed + iteration

    def describe(self) -> str:
        return f"{self.attack().settings.describe()}, on {self.share:g} of the training batches"


class _TrainingNetwork:
    """The network inside a validation step, as the attack sees a model: k-space in, magnitude image out."""

    name = "validation"
    is_randomized = False  # one reconstruction per step, as configured (the journal's single-draw protocol)

    def __init__(
        self,
        reconstruct: Callable[[torch.Tensor], torch.Tensor],
        operator: Callable[[dict], MultiCoilOperator] | None = None,
    ):
        self._reconstruct = reconstruct
        self._operator = operator

    def reconstruct(
        self, batch: dict, kspace_delta: torch.Tensor | None = None, noise_seed: int | None = None
    ) -> torch.Tensor:
        kspace = batch["masked_kspace"] if kspace_delta is None else batch["masked_kspace"] + kspace_delta
        return torch.linalg.vector_norm(self._reconstruct(kspace), dim=-1)

    def operator(self, batch: dict) -> MultiCoilOperator:
        """A of the batch (budgets relative to A^H y)."""
        if self._operator is None:
            raise ValueError("This attack's budget needs the network's operator A, which was not given.")
        return self._operator(batch)


def attacked_kspace(
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    masked_kspace: torch.Tensor,
    sampling_mask: torch.Tensor,
    target: torch.Tensor,
    settings: RobustValidation | AdversarialTraining,
    reference_scale: torch.Tensor | None = None,
    iteration: int = 0,
    operator: Callable[[dict], MultiCoilOperator] | None = None,
) -> torch.Tensor:
    """``masked_kspace + delta`` with delta from PGD maximising the per-slice MSE of |reconstruct(y)| to the target.

    The ascent differentiates with respect to delta only (``torch.autograd.grad``), so no parameter gradient
    accumulates from its steps.

    Parameters
    ----------
    reconstruct : Callable
        Maps k-space (N, coil, H, W, 2) to the complex image (N, H, W, 2).
    masked_kspace, sampling_mask : torch.Tensor
        The batch as DIRECT's engine holds it (normalised).
    target : torch.Tensor
        Magnitude ground truth (N, H, W).
    settings : RobustValidation or AdversarialTraining
        The attack and its seed.
    reference_scale : torch.Tensor, optional
        s_ref per slice (N,), for ``paper`` budgets.
    iteration : int
        DIRECT's training iteration (adversarial training seeds each batch's random start from it).
    operator : Callable, optional
        The network's A of the batch, for budgets relative to A^H y (``relative_zero_filled``).
    """
    batch = {"masked_kspace": masked_kspace, "sampling_mask": sampling_mask}
    # DIRECT validates under no_grad; the attack needs gradients to the input.
    with torch.enable_grad():
        targets = Targets(target, reference_scale=reference_scale)
        outcome = settings.attack()(
            _TrainingNetwork(reconstruct, operator), batch, targets, settings.seed_at(iteration)
        )
    return masked_kspace + outcome.kspace_delta
