"""No perturbation: the reference every other perturbation is compared with."""

from dataclasses import dataclass

from smug_plugin.robustness.attacks.base import (
    Attack,
    AttackedModel,
    AttackOutcome,
    AttackSettings,
    Targets,
    register_attack,
)


@dataclass(frozen=True)
class CleanSettings(AttackSettings):
    """Nothing to set."""

    def describe(self) -> str:
        return "clean"


@register_attack
class Clean(Attack):
    """The measurement as acquired; the evaluation uses the model's clean reconstruction."""

    kind = "clean"
    Settings = CleanSettings

    def __call__(self, model: AttackedModel, batch: dict, targets: Targets, seed: int) -> AttackOutcome:
        return AttackOutcome(kspace_delta=None, eps=[0.0] * batch["masked_kspace"].shape[0])
