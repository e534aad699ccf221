"""The intensity scale s of a slice: the one definition of the papers' units.

The published SMUG pipeline divides every slice so that its coil-combined fully sampled image has
max(|Re|, |Im|) = 1 (centred orthonormal FFT) and states sigma = 0.01, eps = 0.02 and the clamp of noisy
denoiser inputs to [-1, 1] in those units. DIRECT's data arrive in its own normalisation (k-space divided by the
99th percentile of |masked k-space|), where an image maximum is several units. ``intensity_scale: paper`` makes
the networks divide each slice by s internally, so their settings mean fractions of s.

Two sources of s, by the same formula (:func:`intensity_scale`):

- :func:`measured_intensity_scale`: s of the zero-filled image A^H y. The networks use it: it needs nothing but
  the measurements, so it exists at inference, and f(c y) = c f(y).
- :func:`reference_intensity_scale`: the papers' s, of the fully sampled coil-combined image (the ground truth):
  the unit of the papers' attack budget eps and of the denoiser pre-training, where the target is known.
"""

from enum import StrEnum

import torch
from direct.types import DirectEnum

# Noisy denoiser inputs are clamped to [-CLAMP_BOUND, CLAMP_BOUND] in the papers' units (published code).
CLAMP_BOUND = 1.0


class IntensityScale(DirectEnum):
    """The units the unrolled networks and the denoiser run in."""

    DIRECT = "direct"  # the data as DIRECT normalises them; sigma in DIRECT's units
    PAPER = "paper"  # each slice divided by its intensity scale s (measured on A^H y); sigma a fraction of s


def intensity_scale(image: torch.Tensor) -> torch.Tensor:
    """s = max(|Re|, |Im|) over each slice of complex images.

    Parameters
    ----------
    image : torch.Tensor
        DIRECT complex images ``(N, H, W, 2)`` (or ``(N, ..., 2)``), or a complex-dtype tensor ``(N, ...)``.

    Returns
    -------
    torch.Tensor
        Shape ``(N,)``. An all-zero slice gets s = 1 (there is nothing to rescale), so dividing by s is always
        defined.
    """
    if image.is_complex():
        image = torch.view_as_real(image)
    scale = image.abs().flatten(1).amax(dim=1)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


class ScaleStatistic(DirectEnum):
    """The statistic of A^H y a network divides by with ``intensity_scale: paper``."""

    MAX = "max"  # max(|Re|, |Im|): the papers' definition, so sigma and the clamp keep their meaning
    # The 99th percentile of |A^H y| over the slice's pixels: one bright pixel cannot move it (a robust alternative
    # under the `attacked` threat model; sigma is then a fraction of it, not of the papers' s).
    QUANTILE = "quantile"


SCALE_QUANTILE = 0.99


def measured_intensity_scale(
    adjoint_image: torch.Tensor, statistic: ScaleStatistic | str = ScaleStatistic.MAX
) -> torch.Tensor:
    """The scale the networks use: s of the zero-filled SENSE image A^H y ``(N, H, W, 2)`` of the measurements.

    Undersampling spreads and lowers the image, so this s differs from the papers' (fully sampled) one by a factor
    that depends on the mask and the anatomy (see :func:`reference_intensity_scale`). ``statistic: quantile`` takes
    the 99th percentile of the modulus instead of the maximum (:class:`ScaleStatistic`).
    """
    if ScaleStatistic(statistic) == ScaleStatistic.MAX:
        return intensity_scale(adjoint_image)
    modulus = torch.linalg.vector_norm(adjoint_image, dim=-1).flatten(1)
    scale = torch.quantile(modulus, SCALE_QUANTILE, dim=1)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def reference_intensity_scale(target_image: torch.Tensor) -> torch.Tensor:
    """The papers' scale: s of the complex coil-combined fully sampled image S^H F^-1 y_full ``(N, H, W, 2)``
    (`smug_plugin.operators.MultiCoilOperator.coil_combine` of the fully sampled k-space); it needs the ground truth."""
    return intensity_scale(target_image)


def to_unit_scale(tensor: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``tensor / s`` per slice (batch axis first); ``scale=None`` (DIRECT's units) returns ``tensor`` itself."""
    if scale is None:
        return tensor
    return tensor / scale.reshape(-1, *([1] * (tensor.ndim - 1)))


def from_unit_scale(tensor: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """``tensor * s`` per slice (batch axis first); ``scale=None`` returns ``tensor`` itself."""
    if scale is None:
        return tensor
    return tensor * scale.reshape(-1, *([1] * (tensor.ndim - 1)))


# The units of a perturbation budget: the evaluation's attacks (`robustness.attacks.budgets.Budget`) and the
# engines' adversarial training state their budgets in these.
class NormType(StrEnum):
    """Norm of the perturbation ball; l_inf acts on real and imaginary parts separately."""

    LINF = "linf"
    L2 = "l2"


class BudgetConvention(StrEnum):
    """How the budget value is turned into an absolute radius."""

    ABSOLUTE = "absolute"  # eps in DIRECT's normalised units (k-space or image, whichever is perturbed)
    RELATIVE_MAX = "relative_max"  # eps = value * max |real/imag entry| of the measured (perturbed) signal
    RELATIVE_L2 = "relative_l2"  # eps = value * ||y||_2 of the measured signal (l2 balls only)
    # eps = value * s_ref per slice, s_ref = max(|Re|, |Im|) of the slice's coil-combined fully sampled image in
    # DIRECT's units: the papers' units, for k-space and image-domain perturbations alike.
    PAPER = "paper"
    # eps = value * max |A^H y| per slice, the largest complex magnitude of the zero-filled (SENSE-combined) image of
    # the measured k-space: the CycMit-MRI code's units (it scales every image by that maximum), for its image-domain
    # attack and its defense radius.
    RELATIVE_ZERO_FILLED = "relative_zero_filled"


def parse_choice[E: DirectEnum](enum: type[E], name: str, value: E | str) -> E:
    """``value`` as a member of the string enum ``enum``, with a one-line error naming the setting and its choices."""
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.") from None


def check_clamp(clamp_noisy_input: bool, units: IntensityScale) -> None:
    """The clamp to [-1, 1] is defined in the papers' units only: it is rejected in DIRECT's units, where it would
    cut the image itself (its maximum is several units there)."""
    if clamp_noisy_input and units != IntensityScale.PAPER:
        raise ValueError(
            "clamp_noisy_input: true needs intensity_scale: paper (the clamp to [-1, 1] is in units of the slice's "
            "intensity scale; in DIRECT's units it would cut the image): set intensity_scale: paper, or "
            "clamp_noisy_input: false."
        )


def clamp_noisy(noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """The published clamp of noisy denoiser inputs to [-1, 1], widened per slice to the noise-free input's own range.

    The papers divide by the fully sampled image's s, so their images lie within [-1, 1] and the clamp cuts noise
    only. Our s comes from A^H y (no ground truth at inference) and the image peaks at up to about 1.4 of it on the
    demo data: a fixed [-1, 1] would cut the image itself. The bound is max(1, max(|Re|, |Im|) of ``clean``) per
    slice, which equals the published clamp wherever the image lies within [-1, 1].

    Parameters
    ----------
    noisy : torch.Tensor
        Noisy inputs ``(..., N, H, W, 2)`` (draws first).
    clean : torch.Tensor
        The noise-free inputs ``(N, H, W, 2)`` (or with leading draw axes of size 1).
    """
    # A range, not a signal: constant for the gradient, like the published fixed bound.
    bound = clean.detach().abs().amax(dim=(-3, -2, -1), keepdim=True).clamp_min(CLAMP_BOUND)
    return torch.clamp(noisy, -bound, bound)
