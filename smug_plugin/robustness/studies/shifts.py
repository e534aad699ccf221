"""Distribution shifts (Darestani et al. 2021): each model's accuracy in and out of distribution, the linear fit of
out-of-distribution against in-distribution accuracy over the models, and the adversarially filtered subset.

Everything is computed from the per-slice records of `smug evaluate` runs of the same models: one on the
in-distribution data and one per shifted data set. The adversarially filtered set is the hardest fraction of the
in-distribution slices for a filter model, chosen by the user and never one of the evaluated models.
"""

import math
import statistics
from collections import defaultdict

import numpy as np

FILTERED = "adversarially filtered"


def slice_values(records: list[dict], condition: str, metric: str) -> dict[str, dict[tuple[str, int], float]]:
    """``{model: {(file, slice): metric}}`` of ``condition``, finite values only."""
    values: dict[str, dict[tuple[str, int], float]] = defaultdict(dict)
    for r in records:
        value = r.get(metric)
        if r["condition"] == condition and isinstance(value, int | float) and math.isfinite(value):
            values[r["model"]][(r["file"], r["slice"])] = float(value)
    return dict(values)


def hardest_slices(values: dict[tuple[str, int], float], fraction: float) -> list[tuple[str, int]]:
    """The ``fraction`` of slices (at least one) with the lowest metric, e.g. the hardest 10 % by PSNR."""
    count = max(1, math.ceil(fraction * len(values)))
    return sorted(values, key=lambda key: (values[key], key))[:count]


def linear_fit(points: list[tuple[float, float]]) -> dict | None:
    """Least-squares line OOD = slope * ID + intercept over the models (None below two distinct ID values)."""
    if len({x for x, _ in points}) < 2:
        return None
    slope, intercept = np.polyfit([x for x, _ in points], [y for _, y in points], 1)
    return {"slope": float(slope), "intercept": float(intercept)}


def shift_table(
    in_distribution: dict[str, dict[tuple[str, int], float]],
    shifted: dict[str, dict[str, dict[tuple[str, int], float]]],
    filter_model: str | None,
    fraction: float,
) -> dict:
    """Per model the mean metric in distribution and on every shifted set (the filtered subset included), and the
    fit per shifted set.

    Parameters
    ----------
    in_distribution : dict
        ``{model: {(file, slice): value}}`` on the in-distribution data.
    shifted : dict
        ``{set name: {model: {(file, slice): value}}}``.
    filter_model : str, optional
        The model whose hardest ``fraction`` of in-distribution slices forms the filtered set; it is not evaluated.
    """
    sets = dict(shifted)
    if filter_model is not None:
        if filter_model not in in_distribution:
            raise ValueError(
                f"The filter model '{filter_model}' has no records in the in-distribution evaluation: evaluate it "
                f"there too (models: {', '.join(sorted(in_distribution))})."
            )
        hardest = set(hardest_slices(in_distribution[filter_model], fraction))
        sets[FILTERED] = {m: {k: v for k, v in values.items() if k in hardest} for m, values in in_distribution.items()}
    models = [m for m in in_distribution if m != filter_model]
    rows = []
    for model in models:
        row = {"model": model, "in_distribution": statistics.fmean(in_distribution[model].values())}
        for name, values in sets.items():
            own = values.get(model, {})
            row[name] = statistics.fmean(own.values()) if own else None
        rows.append(row)
    fits = {name: linear_fit([(r["in_distribution"], r[name]) for r in rows if r[name] is not None]) for name in sets}
    return {"rows": rows, "sets": list(sets), "fits": fits, "filter_model": filter_model, "fraction": fraction}
