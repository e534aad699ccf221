"""Attacks on the measured k-space, one class per kind, all called as ``attack(model, batch, targets, seed)``.

Every module of this package is imported here, so an attack registered with `register_attack` in a new module is
available to protocols (``kind: <name>``) without touching any other file.
"""

import importlib
import pkgutil
from typing import Any

from smug_plugin.robustness.attacks.base import (
    ATTACKS,
    Attack,
    AttackFamily,
    AttackOutcome,
    AttackSettings,
    AttackTarget,
    Targets,
    attack_class,
    register_attack,
)
from smug_plugin.robustness.attacks.budgets import Budget, BudgetConvention, NormType
from smug_plugin.robustness.attacks.domain import AttackDomain
from smug_plugin.robustness.attacks.transfer import Transfer

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_attack(
    kind: str,
    settings: AttackSettings,
    transfer_source: Any | None = None,
    members: tuple[tuple[str, Attack], ...] = (),
) -> Attack:
    """The attack of a protocol entry: its kind's class built from its settings (and a composite kind's members),
    transferred from a source model.

    Parameters
    ----------
    kind : str
        Registered attack kind (``clean``, ``gaussian``, ``pgd``, ...).
    settings : AttackSettings
        The entry's validated settings (``attack_class(kind).Settings``).
    transfer_source : Reconstructor, optional
        Compute the perturbation on this model and apply it unchanged to every model.
    members : tuple[tuple[str, Attack], ...]
        The named attacks a composite kind (``ensemble``) is built from.
    """
    cls = attack_class(kind)
    attack = cls(members=members, **settings.fields()) if cls.composite else cls(**settings.fields())
    return attack if transfer_source is None else Transfer(transfer_source, attack)


__all__ = [
    "ATTACKS",
    "Attack",
    "AttackDomain",
    "AttackFamily",
    "AttackOutcome",
    "AttackSettings",
    "AttackTarget",
    "Budget",
    "BudgetConvention",
    "NormType",
    "Targets",
    "Transfer",
    "attack_class",
    "build_attack",
    "register_attack",
]
