"""Perturbations of the measured k-space: projected gradient descent (PGD) attacks and matched Gaussian noise.

All perturbations are k-space additions ``masked_kspace + delta`` restricted to acquired entries, so they are
measurement perturbations valid for any DIRECT model. The image-domain attack of the SMUG conference protocol
(l_inf on A^H y) is realised as the forward projection ``delta_k = M F S delta_img`` of an image-domain variable
``delta_img`` constrained in l_inf: the attack differentiates w.r.t. ``delta_img``, and the model still receives a
consistent k-space (a direct addition to A^H y would bypass the data-consistency steps, which read y).

The attack is model-agnostic: it only needs an ``objective(delta_k, draw) -> per-slice loss`` callable. ``draw``
numbers the noise draws so that randomized (smoothed) models can be given a distinct noise seed per draw, which is
how the adaptive expectation-over-transformation (EOT) attack averages gradients over the model's randomness.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import torch

from smug_plugin.robustness.budgets import NormType

# objective(kspace_delta, draw_index) -> loss per slice, shape (batch,); the attack ascends it.
Objective = Callable[[torch.Tensor, int], torch.Tensor]
Lift = Callable[[torch.Tensor], torch.Tensor]


class AttackDomain(StrEnum):
    KSPACE = "kspace"
    IMAGE = "image"


class AttackTarget(StrEnum):
    """What the attacked reconstruction is pushed away from."""

    GROUND_TRUTH = "ground_truth"
    CLEAN = "clean"  # the model's own clean reconstruction (Robustness-CS)


@dataclass
class PGDSettings:
    """Settings of one PGD run.

    Parameters
    ----------
    norm : NormType
        Ball norm; l_inf is per real/imaginary entry.
    steps : int
        Number of ascent steps (0 gives the random start, or zero without one).
    step_fraction : float
        Step size as a fraction of eps (the papers use 1/3).
    random_start : bool
        Start uniformly inside the ball.
    eot_samples : int
        Noise draws averaged per gradient; 1 is the papers' single-draw protocol (one fresh draw per step).
    keep_best : bool
        Return, per slice, the iterate with the largest objective (makes more steps never weaker).
    """

    norm: NormType = NormType.LINF
    steps: int = 10
    step_fraction: float = 1.0 / 3.0
    random_start: bool = True
    eot_samples: int = 1
    keep_best: bool = True


@dataclass
class AttackResult:
    """Outcome of a PGD run: the variable, its k-space image, per-slice objective, per-step history."""

    variable: torch.Tensor
    kspace_delta: torch.Tensor
    objective: torch.Tensor
    history: list[torch.Tensor] = field(default_factory=list)


def _per_slice(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _bcast(eps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return eps.view(-1, *([1] * (like.ndim - 1)))


def project(delta: torch.Tensor, eps: torch.Tensor, norm: NormType, support: torch.Tensor) -> torch.Tensor:
    """Project onto {delta : supp(delta) within support, ||delta|| <= eps} (eps per slice)."""
    delta = delta * support
    if NormType(norm) == NormType.LINF:
        e = _bcast(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)
    norms = _per_slice(delta).norm(dim=1)
    factor = torch.where(norms > eps, eps / norms.clamp_min(1e-30), torch.ones_like(norms))
    return delta * _bcast(factor, delta)


def random_in_ball(
    shape: torch.Size, eps: torch.Tensor, norm: NormType, support: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Random point in the ball: uniform per entry for l_inf, uniform in volume for l2."""
    support = support.expand(shape).to(torch.float32)
    if NormType(norm) == NormType.LINF:
        u = torch.rand(shape, generator=generator, device=support.device) * 2 - 1
        return u * _bcast(eps, u) * support
    g = torch.randn(shape, generator=generator, device=support.device) * support
    dim = _per_slice(support).sum(dim=1).clamp_min(1)
    radius = eps * torch.rand(shape[0], generator=generator, device=support.device) ** (1.0 / dim)
    return g * _bcast(radius / _per_slice(g).norm(dim=1).clamp_min(1e-30), g)


def gaussian_matched(
    shape: torch.Size, eps: torch.Tensor, norm: NormType, support: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Gaussian noise on the support, rescaled to the l2 norm of the largest element of the ball.

    For l_inf that is a vertex, ``eps * sqrt(#entries)``, where sign-step PGD ends up; for l2 it is ``eps``. The noise
    therefore has the same energy as the attack and the comparison isolates the effect of the direction.
    """
    support = support.expand(shape).to(torch.float32)
    g = torch.randn(shape, generator=generator, device=support.device) * support
    if NormType(norm) == NormType.LINF:
        target = eps * _per_slice(support).sum(dim=1).sqrt()
    else:
        target = eps
    return g * _bcast(target / _per_slice(g).norm(dim=1).clamp_min(1e-30), g)


def estimate_gradient(
    objective: Objective, kspace_delta_of: Lift, variable: torch.Tensor, draws: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average gradient of the objective over the given noise draws (EOT when len(draws) > 1).

    Returns
    -------
    (gradient, objective)
        Gradient w.r.t. `variable` and the objective averaged over draws, per slice.
    """
    grad = torch.zeros_like(variable)
    total = torch.zeros(variable.shape[0], dtype=variable.dtype, device=variable.device)
    for draw in draws:
        var = variable.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = objective(kspace_delta_of(var), draw)
            # Slices are independent, so the gradient of the sum is the per-slice gradient.
            (g,) = torch.autograd.grad(loss.sum(), var)
        grad += torch.nan_to_num(g)
        total += loss.detach()
    return grad / len(draws), total / len(draws)


def pgd(
    objective: Objective,
    variable_shape: torch.Size,
    support: torch.Tensor,
    eps: torch.Tensor,
    settings: PGDSettings,
    generator: torch.Generator,
    lift: Lift | None = None,
) -> AttackResult:
    """Projected gradient ascent of `objective` over a batch of slices at once.

    Parameters
    ----------
    objective : Objective
        Per-slice loss of the perturbed reconstruction; called with the k-space perturbation and a draw index.
    variable_shape : torch.Size
        Shape of the optimised variable (k-space, or image for the image-domain attack).
    support : torch.Tensor
        Entries of the variable that may change (sampling mask for k-space, ones for the image).
    eps : torch.Tensor
        Radius per slice, shape (batch,).
    settings : PGDSettings
        Norm, steps, step size, random start, draws per step, best-iterate selection.
    generator : torch.Generator
        Source of the random start (seeded by the caller for reproducibility).
    lift : Lift, optional
        Maps the variable to the k-space perturbation; identity for k-space attacks.

    Returns
    -------
    AttackResult
    """
    lift = lift if lift is not None else (lambda v: v)
    norm = NormType(settings.norm)
    alpha = _bcast(eps * settings.step_fraction, torch.empty(variable_shape))
    alpha = alpha.to(support.device)
    if settings.random_start:
        delta = random_in_ball(variable_shape, eps, norm, support, generator)
    else:
        delta = torch.zeros(variable_shape, device=support.device)
    k = max(1, int(settings.eot_samples))
    best, best_obj, history = delta.clone(), None, []
    for step in range(settings.steps):
        grad, obj = estimate_gradient(objective, lift, delta, [step * k + i for i in range(k)])
        history.append(obj)
        if best_obj is None:
            best_obj = obj.clone()
        better = obj > best_obj
        best = torch.where(_bcast(better, best), delta, best)
        best_obj = torch.maximum(best_obj, obj)
        if norm == NormType.LINF:
            direction = grad.sign()
        else:
            direction = grad / _bcast(_per_slice(grad).norm(dim=1).clamp_min(1e-30), grad)
        delta = project(delta + alpha * direction, eps, norm, support).detach()
    # The final iterate has not been scored yet.
    with torch.no_grad():
        final = torch.stack([objective(lift(delta), settings.steps * k + i) for i in range(k)]).mean(0)
    history.append(final)
    if settings.keep_best and best_obj is not None:
        better = final > best_obj
        delta = torch.where(_bcast(better, delta), delta, best)
        final = torch.maximum(final, best_obj)
    delta = delta.detach()
    return AttackResult(variable=delta, kspace_delta=lift(delta).detach(), objective=final, history=history)


@dataclass
class ImageToKspace:
    """Forward projection ``M F S x`` of an image-domain perturbation, the lift of the image-domain attack.

    Parameters
    ----------
    sensitivity_map : torch.Tensor
        Normalised coil maps (batch, coil, height, width, 2) as the engine uses them.
    sampling_mask : torch.Tensor
        Sampling mask broadcastable to (batch, coil, height, width, 1).
    forward_operator : Callable
        The engine's forward operator (DIRECT ``fft2``), applied over ``spatial_dims``.
    """

    sensitivity_map: torch.Tensor
    sampling_mask: torch.Tensor
    forward_operator: Callable
    spatial_dims: tuple[int, int] = (2, 3)

    def __call__(self, image_delta: torch.Tensor) -> torch.Tensor:
        from direct.data.transforms import complex_multiplication

        coil_images = complex_multiplication(self.sensitivity_map, image_delta.unsqueeze(1))
        return self.forward_operator(coil_images, dim=self.spatial_dims) * self.sampling_mask

    def adjoint_of(self, kspace: torch.Tensor, backward_operator: Callable) -> torch.Tensor:
        """A^H y: the zero-filled SENSE image, whose magnitude sets relative image-domain budgets."""
        from direct.data.transforms import complex_multiplication, conjugate

        coil_images = backward_operator(kspace * self.sampling_mask, dim=self.spatial_dims)
        return complex_multiplication(conjugate(self.sensitivity_map), coil_images).sum(1)
