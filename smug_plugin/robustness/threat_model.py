"""The threat model of an evaluation: what the attacker may change besides the measured k-space.

The attacker always perturbs the measurements a model receives (DIRECT's normalised, masked k-space). A model may
also compute statistics from those measurements before it reconstructs; the one that matters is the intensity
normalisation: DIRECT's transforms divide the k-space by a percentile of |masked k-space|, and the plugin's networks
with ``intensity_scale: paper`` divide by s = max(|Re|, |Im|) of A^H y. Whether the attacker may steer them is a
protocol choice, applied to every model alike:

- ``fixed`` (default, the papers' and DIRECT's): every normalisation is computed from the clean measurement, before
  the attack (the published code normalises each slice once; DIRECT normalises in its transforms), and is a
  constant for the attack's gradient.
- ``attacked`` (the "normalisation attack"): every normalisation is recomputed from the perturbed measurement,
  inside the gradient: DIRECT's percentile for every DIRECT model, and the plugin networks' own s on top of it.

Coil sensitivity maps are estimated from the clean measurement in both settings (they come with the batch).
"""

import torch
from direct.types import DirectEnum


class Normalisation(DirectEnum):
    """Whether the attacker may steer the intensity normalisation a model computes from its measurements."""

    FIXED = "fixed"
    ATTACKED = "attacked"


DEFAULT_NORMALISATION = Normalisation.FIXED
# One sentence per setting, written into every report and card.
THREAT_STATEMENTS = {
    Normalisation.FIXED: "the attacker perturbs the measured k-space; every intensity normalisation a model computes "
    "from its measurements (DIRECT's percentile, the plugin's s) is fixed from the clean measurement before the attack",
    Normalisation.ATTACKED: "the attacker perturbs the measured k-space and, through it, every intensity normalisation "
    "a model computes from its measurements (a normalisation attack)",
}


def parse_normalisation(value: object, where: str) -> Normalisation:
    """``value`` as a `Normalisation`, with a one-line error naming ``where`` and the choices."""
    try:
        return Normalisation(value)
    except ValueError:
        choices = ", ".join(member.value for member in Normalisation)
        raise ValueError(f"{where}: normalisation must be one of {choices}, got {value!r}.") from None


def direct_scaling_factor(kspace: torch.Tensor, percentile: float | None) -> torch.Tensor:
    """DIRECT's scaling factor of each slice of masked k-space ``(N, coil, H, W, 2)``: the ``percentile`` of its
    modulus (the maximum when None), computed by DIRECT's own module so the two cannot drift apart."""
    from direct.data.mri_transforms import ComputeScalingFactorModule

    module = ComputeScalingFactorModule(normalize_key="masked_kspace", percentile=percentile)
    return module({"masked_kspace": kspace})["scaling_factor"].to(kspace.dtype)


def measurement_normalisation(cfg) -> float | None | bool:
    """The percentile DIRECT's inference transforms normalise by when they compute it from the masked k-space (None:
    the maximum); False when the scale does not come from the measurement (no normalisation, or another key), so an
    attacker cannot move it."""
    transforms = cfg.inference.dataset.transforms if "inference" in cfg else None
    normalization = getattr(transforms, "normalization", None) if transforms is not None else None
    if normalization is None or getattr(normalization, "scaling_key", None) != "masked_kspace":
        return False
    return getattr(normalization, "scale_percentile", 0.99)
