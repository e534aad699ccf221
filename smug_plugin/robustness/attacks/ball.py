"""The perturbation ball {delta : supp(delta) within the support, ||delta|| <= eps}, one radius per slice.

l_inf acts on real and imaginary parts separately (the complex axis is an ordinary tensor axis of size 2).
"""

import torch

from smug_plugin.robustness.attacks.budgets import NormType


def per_slice(x: torch.Tensor) -> torch.Tensor:
    """``x`` flattened to (batch, -1)."""
    return x.reshape(x.shape[0], -1)


def per_slice_scale(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One value per slice, shaped to broadcast against ``like``."""
    return values.view(-1, *([1] * (like.ndim - 1)))


def project(delta: torch.Tensor, eps: torch.Tensor, norm: NormType, support: torch.Tensor) -> torch.Tensor:
    """Project onto {delta : supp(delta) within support, ||delta|| <= eps} (eps per slice)."""
    delta = delta * support
    if NormType(norm) == NormType.LINF:
        e = per_slice_scale(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)
    norms = per_slice(delta).norm(dim=1)
    factor = torch.where(norms > eps, eps / norms.clamp_min(1e-30), torch.ones_like(norms))
    return delta * per_slice_scale(factor, delta)


def ascent_direction(grad: torch.Tensor, norm: NormType) -> torch.Tensor:
    """The steepest ascent direction of unit norm: the gradient's sign for l_inf, the normalised gradient for l2."""
    if NormType(norm) == NormType.LINF:
        return grad.sign()
    return grad / per_slice_scale(per_slice(grad).norm(dim=1).clamp_min(1e-30), grad)


def random_in_ball(
    shape: torch.Size, eps: torch.Tensor, norm: NormType, support: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Random point in the ball: uniform per entry for l_inf, uniform in volume for l2."""
    support = support.expand(shape).to(torch.float32)
    if NormType(norm) == NormType.LINF:
        u = torch.rand(shape, generator=generator, device=support.device) * 2 - 1
        return u * per_slice_scale(eps, u) * support
    g = torch.randn(shape, generator=generator, device=support.device) * support
    dim = per_slice(support).sum(dim=1).clamp_min(1)
    radius = eps * torch.rand(shape[0], generator=generator, device=support.device) ** (1.0 / dim)
    return g * per_slice_scale(radius / per_slice(g).norm(dim=1).clamp_min(1e-30), g)


def vertex_norm(eps: torch.Tensor, norm: NormType, support: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """l2 norm of the largest element of the ball: a vertex ``eps * sqrt(#entries)`` for l_inf, ``eps`` for l2."""
    if NormType(norm) == NormType.LINF:
        return eps * per_slice(support.expand(shape).to(torch.float32)).sum(dim=1).sqrt()
    return eps
