"""Which rank of a sharded run computes which unit: the expected cost of a unit, and a deterministic, balanced share.

Units differ in cost by orders of magnitude (a clean reconstruction against a 10-step PGD with EOT over 8 draws, at
16 unrolls), so dealing them out in turn would leave ranks idle while one finishes. Each unit's cost is estimated from
what it runs (`unit_cost`), and the units are dealt out most expensive first, each to the rank with the least work so
far (longest-processing-time scheduling, within 4/3 of the best possible finish). Every rank computes the same share
from the same plan and the same finished units, so no rank hands out work.
"""

import heapq
from collections.abc import Mapping, Sequence

from smug_plugin.robustness.reconstructors.interface import Reconstructor
from smug_plugin.robustness.run.protocol import Condition


def unit_cost(condition: Condition, models: Mapping[str, Reconstructor]) -> float:
    """The expected cost of one unit in forward passes of a model as configured: per model, the attack's passes
    (`AttackSettings.model_passes`) and the reconstruction, each scaled by the model's work under the condition's
    test-time settings (unrolls, noise draws); a transferred attack runs once, on its source model."""
    passes = condition.perturbation.settings.model_passes()
    work = {name: model.relative_work(condition.settings) for name, model in models.items()}
    source = condition.perturbation.transfer_from
    if source is not None:
        return passes * work[source] + sum(work.values())
    return sum(w * (1.0 + passes) for w in work.values())


def assign(costs: Sequence[float], world_size: int) -> list[int]:
    """The rank of each unit: the most expensive unit first, each to the rank with the least cost so far (ties: the
    earlier unit, the lower rank), so that the ranks finish together.

    Parameters
    ----------
    costs : Sequence[float]
        The expected cost of each unit, in the plan's order.
    world_size : int
        The number of ranks.
    """
    loads = [(0.0, rank) for rank in range(world_size)]
    ranks = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, rank = heapq.heappop(loads)
        ranks[index] = rank
        heapq.heappush(loads, (load + costs[index], rank))
    return ranks


def share(costs: Sequence[float], finished: Sequence[bool], rank: int, world_size: int) -> list[int]:
    """The indices of the units that ``rank`` computes, in the plan's order: its share of the units not finished yet
    (a resumed run deals out only what is left, so every rank of it has work)."""
    todo = [i for i, done in enumerate(finished) if not done]
    ranks = assign([costs[i] for i in todo], world_size)
    return [i for i, r in zip(todo, ranks) if r == rank]
