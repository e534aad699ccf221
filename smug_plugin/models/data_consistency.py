"""The data-consistency solve of every unroll: DIRECT's conjugate gradient on complex tensors, differentiated
implicitly.

x = (A^H A + lambda I)^-1 (A^H y + lambda z) by DIRECT's ``ConjGrad.cg`` (Fletcher-Reeves from x = z, stopping when
the mean of sqrt|r^H r| drops below ``tol``), step for step: the complex products, sums and scalar divisions are
DIRECT's, so the iterates are its numbers (bit for bit where torch's vectorised complex kernels cover the image, as
they do when H x W is a multiple of 8; within a few ulps otherwise), with A^H A taken from
:class:`~smug_plugin.operators.MultiCoilOperator`, the one place of A.

The backward pass (``implicit``, the default) solves the same symmetric positive definite system once more for the
adjoint v = (A^H A + lambda I)^-1 dL/dx (at most ``num_iters`` iterations, the tolerance taken relative to the size
of dL/dx, whose units are the loss's): the right-hand side gets v (so the gradient to the measured k-space through
A^H y stays complete), lambda gets -Re <v, x>, and nothing of the iterations is kept. It is the gradient of the exact
solution, which the forward CG reaches to its tolerance. ``autograd`` differentiates through every iteration instead
(DIRECT's behaviour; memory grows with the iteration count).
"""

import torch
from direct.types import DirectEnum
from torch import nn

from smug_plugin.operators import MultiCoilOperator, as_complex


class CGBackward(DirectEnum):
    """How the data-consistency solve is differentiated."""

    IMPLICIT = "implicit"  # one more CG solve for the adjoint; memory independent of the iteration count
    AUTOGRAD = "autograd"  # through every CG iteration


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a^H b per batch entry as real pairs ``(N, 2)``, summed as DIRECT's ``complex_dot_product`` sums."""
    return torch.view_as_real(a.conj() * b).sum(dim=tuple(range(1, a.ndim)))


def _divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """DIRECT's ``complex_division`` of real pairs ``(N, 2)`` (0 where the denominator is 0), in fewer operators."""
    (n_re, n_im), (d_re, d_im) = numerator.unbind(-1), denominator.unbind(-1)
    squared = d_re * d_re + d_im * d_im
    quotient = torch.stack([n_re * d_re + n_im * d_im, n_im * d_re - n_re * d_im], dim=-1) / squared.unsqueeze(-1)
    return quotient.masked_fill(squared.unsqueeze(-1) == 0, 0.0)


def _residual_size(norm_squared: torch.Tensor) -> torch.Tensor:
    """DIRECT's stopping measure of r^H r ``(N, 2)``: the mean of sqrt| | over its real pairs."""
    return norm_squared.abs().sqrt().mean()


def _scalar(pairs: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Real pairs ``(N, 2)`` as complex scalars shaped to multiply images like ``like``."""
    return torch.view_as_complex(pairs).reshape(-1, *[1] * (like.ndim - 1))


def conjugate_gradient(
    operator: MultiCoilOperator,
    rhs: torch.Tensor,
    start: torch.Tensor | None,
    lambd: torch.Tensor,
    num_iters: int,
    tol: float | torch.Tensor,
) -> tuple[torch.Tensor, int]:
    """Solves (A^H A + lambda I) x = rhs for complex images ``(N, H, W)`` as DIRECT's ``ConjGrad.cg`` (FR); returns x
    and the number of iterations run.

    Parameters
    ----------
    operator : MultiCoilOperator
        A of the batch.
    rhs : torch.Tensor
        Right-hand side, complex ``(N, H, W)``.
    start : torch.Tensor, optional
        First iterate (DIRECT: z); ``None`` starts from 0 without applying the system to it.
    lambd : torch.Tensor
        lambda ``(1,)``.
    num_iters, tol : int, float
        At most ``num_iters`` iterations; stop once the mean of sqrt|r^H r| (over DIRECT's real pairs) < ``tol``.
    """

    def system(image: torch.Tensor) -> torch.Tensor:
        return operator.complex_normal(image) + lambd * image

    x = torch.zeros_like(rhs) if start is None else start
    residual = rhs if start is None else rhs - system(start)
    direction = residual
    residual_norm = _dot(residual, residual)
    for iteration in range(1, num_iters + 1):
        applied = system(direction)
        step = _scalar(_divide(residual_norm, _dot(residual, applied)), x)
        x = x + step * direction
        new_residual = residual - step * applied
        new_norm = _dot(new_residual, new_residual)
        if _residual_size(new_norm) < tol:
            return x, iteration
        direction = new_residual + _scalar(_divide(new_norm, residual_norm), x) * direction
        residual, residual_norm = new_residual, new_norm
    return x, num_iters


class _ImplicitSolve(torch.autograd.Function):
    """x = CG(rhs, start): forward as :func:`conjugate_gradient`, backward by the adjoint solve (the system is
    self-adjoint); the start, a guess, gets no gradient."""

    @staticmethod
    def forward(ctx, rhs, start, lambd, operator, num_iters, tol):
        x, _ = conjugate_gradient(operator, rhs, start, lambd, num_iters, tol)
        ctx.save_for_backward(x, lambd)
        ctx.operator, ctx.num_iters, ctx.tol = operator, num_iters, tol
        return x

    @staticmethod
    def backward(ctx, grad_x):
        x, lambd = ctx.saved_tensors
        # The gradient's units are the loss's, not the image's: the tolerance is relative to its size.
        tol = ctx.tol * _residual_size(_dot(grad_x, grad_x))
        adjoint, _ = conjugate_gradient(ctx.operator, grad_x, None, lambd, ctx.num_iters, tol)
        # dx/dlambda = -(A^H A + lambda I)^-1 x, so dL/dlambda = -Re <v, x>, summed over the batch lambda is shared by.
        grad_lambd = -(adjoint.conj() * x).real.sum().reshape(lambd.shape) if ctx.needs_input_grad[2] else None
        return adjoint, None, grad_lambd, None, None, None


class OperatorConjGrad(nn.Module):
    """The DC solve of the unrolled networks (no parameters; see the module docstring).

    Parameters
    ----------
    num_iters : int
        Maximum number of CG iterations.
    tol : float
        Stop once the mean residual norm (DIRECT's criterion) is below this.
    backward : CGBackward
        ``implicit`` (default) or ``autograd``. The operator's maps and mask must not need gradients with
        ``implicit`` (they never do in the models; if they do, autograd runs through the iterations instead).
    """

    def __init__(self, num_iters: int = 10, tol: float = 1e-6, backward: CGBackward | str = CGBackward.IMPLICIT):
        super().__init__()
        self.num_iters = num_iters
        self.tol = tol
        self.backward = CGBackward(backward)

    def solve(
        self, operator: MultiCoilOperator, kspace: torch.Tensor, z: torch.Tensor, lambd: torch.Tensor
    ) -> torch.Tensor:
        """x = (A^H A + lambda I)^-1 (A^H y + lambda z), from x = z (DIRECT's ``ConjGrad.forward``).

        Parameters
        ----------
        operator : MultiCoilOperator
            A of the batch.
        kspace : torch.Tensor
            Measured k-space y ``(N, coil, H, W, 2)``.
        z : torch.Tensor
            Denoised image ``(N, H, W, 2)``, the starting point and the prior term.
        lambd : torch.Tensor
            DC weight lambda ``(1,)``.
        """
        return self.solve_from_adjoint(operator, operator.adjoint(kspace), z, lambd)

    def solve_from_adjoint(
        self, operator: MultiCoilOperator, adjoint: torch.Tensor, z: torch.Tensor, lambd: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`solve` with A^H y ``(N, H, W, 2)`` given (computed once for all unrolls)."""
        z = as_complex(z)
        rhs = as_complex(adjoint) + lambd * z
        fixed_operator = not (operator.sensitivity_map.requires_grad or operator.sampling_mask.requires_grad)
        if self.backward == CGBackward.IMPLICIT and fixed_operator:
            x = _ImplicitSolve.apply(rhs, z, lambd, operator, self.num_iters, self.tol)
        else:
            x, _ = conjugate_gradient(operator, rhs, z, lambd, self.num_iters, self.tol)
        return torch.view_as_real(x)
