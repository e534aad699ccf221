"""Paired differences between models over training seeds x test slices, with a 95 % interval and a verdict.

A study compares a model with a reference (MoDL) on the same test slices, each trained with several seeds. The
seed-to-seed spread is part of the uncertainty (one training run is one draw of it), so the interval comes from a
two-level bootstrap: resample the seed pairs, then the slices (the same slices for every seed, so the pairing by
slice is kept), and take the mean. With a single seed only the slices are resampled and the interval says nothing
about seeds; the result says so.
"""

import math
import statistics
from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP_DRAWS = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class PairedDifference:
    """Mean difference (model - reference, dB) over seeds x slices with its 95 % bootstrap interval.

    Attributes
    ----------
    mean, low, high : float
        The mean and the 2.5 / 97.5 % bootstrap percentiles.
    seeds, slices : int
        The seed pairs and slices it rests on.
    slice_sd : float
        SD over slices of the per-slice paired difference, averaged over seeds (the issue's target: <= 1 dB).
    seed_sd : float | None
        SD over seeds of the per-seed mean difference (None with one seed).
    above : int
        Seed-slice pairs on which the model is higher.
    """

    mean: float
    low: float
    high: float
    seeds: int
    slices: int
    slice_sd: float
    seed_sd: float | None
    above: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def verdict(self, resolution_db: float = 1.0) -> str:
        """Which side of the reference, when the interval excludes 0; otherwise the largest difference the interval
        still allows, and whether the study resolves ``resolution_db`` at all."""
        if self.low > 0:
            return "above (resolved)"
        if self.high < 0:
            return "below (resolved)"
        bound = max(abs(self.low), abs(self.high))
        if bound <= resolution_db:
            return f"no difference larger than {bound:.2f} dB"
        return f"not resolved at {resolution_db:g} dB (interval {self.low:+.2f} to {self.high:+.2f})"

    def to_dict(self) -> dict:
        return {**asdict(self), "half_width": self.half_width, "verdict": self.verdict()}


def paired_difference(model: np.ndarray, reference: np.ndarray) -> PairedDifference:
    """The paired difference of per-slice values ``model`` and ``reference``, each ``(seeds, slices)`` with row i of
    both trained with the same seed; a reference with more rows than the model is averaged over its seeds first
    (a one-seed model against the reference's seed mean)."""
    model, reference = np.atleast_2d(np.asarray(model, float)), np.atleast_2d(np.asarray(reference, float))
    if model.shape[1] != reference.shape[1]:
        raise ValueError(f"model and reference have {model.shape[1]} and {reference.shape[1]} slices.")
    if model.shape[0] != reference.shape[0]:
        reference = reference.mean(axis=0, keepdims=True).repeat(model.shape[0], axis=0)
    diff = model - reference
    seeds, slices = diff.shape
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    seed_draws = rng.integers(0, seeds, size=(BOOTSTRAP_DRAWS, seeds))
    slice_draws = rng.integers(0, slices, size=(BOOTSTRAP_DRAWS, slices))
    # means[b] = mean over the drawn seeds and the drawn slices of diff
    means = diff[seed_draws[:, :, None], slice_draws[:, None, :]].mean(axis=(1, 2))
    low, high = np.percentile(means, [2.5, 97.5])
    per_seed = diff.mean(axis=1)
    slice_sd = float(np.mean([np.std(row, ddof=1) for row in diff])) if slices > 1 else math.nan
    return PairedDifference(
        mean=float(diff.mean()),
        low=float(low),
        high=float(high),
        seeds=seeds,
        slices=slices,
        slice_sd=slice_sd,
        seed_sd=float(statistics.stdev(per_seed)) if seeds > 1 else None,
        above=int((diff > 0).sum()),
    )
