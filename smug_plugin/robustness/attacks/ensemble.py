"""The worst case over several attacks of one budget (AutoAttack's idea, for reconstruction): per slice, the member
whose perturbation gives the lowest PSNR, and which member that was.

The ensemble is an attack like any other (the loop calls it the same way): it runs each member, reconstructs the
batch under each member's perturbation with the evaluation's noise seed, and returns, per slice, the perturbation of
the member with the lowest PSNR. Member ``name`` runs with seed ``derive_seed(seed, name)``, which does not depend
on the other members, so adding a member can only lower the value of a slice, never raise it. A member the model
cannot run (a transfer from a model that lacks the condition's setting, the published gradient of a DIRECT-native
model) is left out for that model.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from smug_plugin.robustness.attacks.base import (
    Attack,
    AttackedModel,
    AttackFamily,
    AttackOutcome,
    AttackSettings,
    Targets,
    register_attack,
)
from smug_plugin.robustness.attacks.budgets import Budget
from smug_plugin.robustness.attacks.objective import reconstruction_error
from smug_plugin.robustness.reconstructors.interface import UnsupportedSettings
from smug_plugin.robustness.seeds import derive_seed


@dataclass(frozen=True)
class EnsembleSettings(AttackSettings):
    """Settings of the ensemble; its members are the protocol entry's ``members`` (each an attack entry without a
    budget of its own, or with this one).

    Parameters
    ----------
    budget : Budget
        The budget every member attacks within.
    """

    budget: Budget

    def describe(self) -> str:
        return f"ensemble {self.budget.describe()}: per slice the member with the lowest PSNR"


@dataclass
class EnsembleOutcome(AttackOutcome):
    """The per-slice worst case over the members.

    Attributes
    ----------
    winners : list[str]
        The member chosen for each slice.
    members : dict[str, AttackOutcome]
        Every member that ran, by name.
    member_psnr : dict[str, list[float]]
        The evaluation's PSNR of each slice under each member.
    """

    winners: list[str] = field(default_factory=list)
    members: dict[str, AttackOutcome] = field(default_factory=dict)
    member_psnr: dict[str, list[float]] = field(default_factory=dict)

    def facts(self, index: int) -> dict[str, Any]:
        """The winner's facts, ``winner``, and each member's PSNR and facts under ``members``."""
        winner = self.winners[index]
        members = {
            name: {"psnr": self.member_psnr[name][index], **outcome.facts(index)}
            for name, outcome in self.members.items()
        }
        return {**self.members[winner].facts(index), "winner": winner, "members": members}


@register_attack
class Ensemble(Attack):
    """Per slice the worst case over ``members``, pairs ``(name, attack)`` in protocol order (ties: the first)."""

    kind = "ensemble"
    Settings = EnsembleSettings
    family = AttackFamily.ENSEMBLE
    composite = True

    def __init__(self, members: tuple[tuple[str, Attack], ...] = (), **settings: Any) -> None:
        super().__init__(**settings)
        if not members:
            raise ValueError("An ensemble needs at least one member attack.")
        self.members = tuple(members)

    def __call__(self, model: AttackedModel, batch: dict, targets: Targets, seed: int) -> EnsembleOutcome:
        outcomes, deltas, psnrs = {}, [], []
        for name, attack in self.members:
            try:
                outcome = attack(model, batch, targets, derive_seed(seed, name))
            except UnsupportedSettings:
                continue
            delta = outcome.kspace_delta
            delta = torch.zeros_like(batch["masked_kspace"]) if delta is None else delta.detach()
            with torch.no_grad():
                output = model.reconstruct(batch, delta, noise_seed=seed)
            outcomes[name] = outcome
            deltas.append(delta)
            psnrs.append(evaluation_psnr(targets, output))
        if not outcomes:
            raise UnsupportedSettings(f"Model '{model.name}' can run none of the ensemble's members.")
        names = list(outcomes)
        table = torch.stack(psnrs)  # (members, batch)
        chosen = table.argmin(dim=0)
        slices = torch.arange(table.shape[1], device=chosen.device)
        delta = torch.stack(deltas)[chosen, slices]
        winners = [names[int(i)] for i in chosen]
        return EnsembleOutcome(
            kspace_delta=delta,
            eps=[outcomes[name].eps[i] for i, name in enumerate(winners)],
            winners=winners,
            members=outcomes,
            member_psnr={name: table[m].tolist() for m, name in enumerate(names)},
        )


def evaluation_psnr(targets: Targets, output: torch.Tensor) -> torch.Tensor:
    """The evaluation's per-slice PSNR of ``output``; without one, -10 log10(MSE to the ground truth), which orders
    the slices' reconstructions as their PSNR does."""
    if targets.psnr is not None:
        return targets.psnr(output).to(torch.float64)
    error = reconstruction_error(output, targets.ground_truth).to(torch.float64)
    return -10 * torch.log10(error.clamp_min(math.ulp(0.0)))
