"""The adaptive attack on a defended model that differentiates through its purification: PGD on the model run
under the test-time setting ``defense_gradient: unrolled``, where the defense keeps the graph of every purification
step (its signed steps differentiated by a straight-through tanh; `defenses.cyclic_consistency`). The existing
``pgd`` on a defended model is the BPDA attack (the purification enters as a constant). Models without a
purification cannot run under the setting: their cells are n/a.
"""

from smug_plugin.robustness.attacks.base import AttackedModel, AttackOutcome, Targets, register_attack
from smug_plugin.robustness.attacks.pgd import PGD, PGDSettings

UNROLLED = {"defense_gradient": "unrolled"}


class UnrolledSettings(PGDSettings):
    def describe(self) -> str:
        return f"unrolled (through the defense's purification) {super().describe()}"


@register_attack
class UnrolledPGD(PGD):
    """PGD through the unrolled purification of a defended model."""

    kind = "unrolled_pgd"
    Settings = UnrolledSettings

    def __call__(self, model: AttackedModel, batch: dict, targets: Targets, seed: int) -> AttackOutcome:
        return super().__call__(model.with_settings(**UNROLLED), batch, targets, seed)
