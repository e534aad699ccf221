"""SMUG's Theorem 1 for a trained model: ||x^n(y) - x^n(y + delta)|| <= C_n ||delta||, on the actual operators.

The journal (Liang et al.) states: if ||D(x)|| <= M / 2 for every x, then
``C_n = alpha ||A|| (1 - q^n) / (1 - q) + ||A|| q^n`` with ``q = M alpha / (sqrt(2 pi) sigma)`` and
``alpha = ||(A^H A + I)^{-1}||``. Its proof goes through the DC step x = (A^H A + lambda I)^{-1} (A^H y + lambda z)
with lambda = 1; with the model's lambda the same steps give ``alpha = ||(A^H A + lambda I)^{-1}||`` and
``q = lambda M alpha / (sqrt(2 pi) sigma)`` (the Gaussian smoothing of a map bounded by M / 2 is
M / (sqrt(2 pi) sigma)-Lipschitz), which is the journal's statement at lambda = 1.

||A|| and alpha come from power iterations on the slice's own `MultiCoilOperator`; M from the denoiser outputs the
model produced on the evaluated slices, so the bound is empirical (a denoiser input never seen may exceed M).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from smug_plugin.models.data_consistency import OperatorConjGrad
from smug_plugin.operators import MultiCoilOperator

POWER_ITERATIONS = 50
CG_ITERATIONS = 100  # an upper limit: CG stops at CG_TOLERANCE (a few iterations when ||A|| <= 1 and lambda ~ 1)
CG_TOLERANCE = 1e-7


def _per_slice_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Re <a, b> per slice; for a Hermitian operator the Rayleigh quotient is real."""
    return (a * b).flatten(1).sum(dim=1)


def _normalised(v: torch.Tensor) -> torch.Tensor:
    norm = v.flatten(1).norm(dim=1).clamp_min(torch.finfo(v.dtype).tiny)
    return v / norm.view(-1, *([1] * (v.ndim - 1)))


def largest_eigenvalue(
    apply: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor, iterations: int, seed: int = 0
) -> torch.Tensor:
    """Largest eigenvalue per slice of a Hermitian positive semi-definite operator on images, by power iteration.

    Parameters
    ----------
    apply : Callable
        The operator on a batch of images shaped like ``like`` (each slice its own operator).
    like : torch.Tensor
        Shape, dtype and device of the images, (N, H, W, 2).
    iterations : int
        Power iterations; the Rayleigh quotient of the last iterate is returned (a lower bound of the eigenvalue).
    seed : int
        Seed of the random start.
    """
    generator = torch.Generator(device=like.device).manual_seed(seed)
    vector = _normalised(torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype))
    eigenvalue = torch.zeros(like.shape[0], dtype=like.dtype, device=like.device)
    with torch.no_grad():
        for _ in range(iterations):
            image = apply(vector)
            eigenvalue = _per_slice_dot(vector, image)
            vector = _normalised(image)
    return eigenvalue


@dataclass(frozen=True)
class OperatorNorms:
    """Per slice: ||A|| and alpha = ||(A^H A + lambda I)^{-1}||."""

    a_norm: torch.Tensor
    alpha: torch.Tensor


def operator_norms(
    operator: MultiCoilOperator,
    lambd: float,
    like: torch.Tensor,
    iterations: int = POWER_ITERATIONS,
    cg_iterations: int = CG_ITERATIONS,
) -> OperatorNorms:
    """||A|| and alpha of each slice of ``operator`` by power iterations.

    ||A||^2 is the largest eigenvalue of A^H A; alpha the largest of (A^H A + lambda I)^{-1}, applied by conjugate
    gradient (inverse iteration: it converges at the rate (lambda + mu_1) / (lambda + mu_2) of the two smallest
    eigenvalues of A^H A, where power iteration on mu_max I - A^H A would crawl at (mu_max - mu_2) / (mu_max - mu_1)).
    """
    mu_max = largest_eigenvalue(operator.normal, like, iterations, seed=0)
    solver = OperatorConjGrad(cg_iterations, CG_TOLERANCE)
    weight = torch.tensor([float(lambd)], dtype=like.dtype, device=like.device)
    no_data = torch.zeros_like(operator.fully_sampled(like))

    def inverse(image: torch.Tensor) -> torch.Tensor:  # (A^H A + lambda I) x = lambda (image / lambda)
        return solver.solve(operator, no_data, image / lambd, weight)

    alpha = largest_eigenvalue(inverse, like, iterations, seed=1)
    return OperatorNorms(mu_max.clamp_min(0.0).sqrt(), alpha)


def contraction(lambd: float, alpha: float, big_m: float, sigma: float) -> float:
    """q = lambda M alpha / (sqrt(2 pi) sigma): the bound is vacuous (grows with n) when q >= 1."""
    return math.inf if sigma <= 0 else lambd * big_m * alpha / (math.sqrt(2 * math.pi) * sigma)


def bound_constants(a_norm: float, alpha: float, q: float, steps: int) -> list[float]:
    """C_n for n = 1..steps: alpha ||A|| (1 - q^n) / (1 - q) + ||A|| q^n (the geometric sum is n at q = 1)."""
    constants = []
    for n in range(1, steps + 1):
        power = math.inf if q > 1 and n * math.log(q) > 700 else q**n  # a float power past 1e304 raises
        geometric = n if q == 1 else (1 - power) / (1 - q)
        constants.append(alpha * a_norm * geometric + a_norm * power)
    return constants


def smoothing_vacuity_sigma(lambd: float, alpha: float, big_m: float) -> float:
    """The smallest sigma at which q < 1 (the bound stops growing with the unroll count)."""
    return lambd * big_m * alpha / math.sqrt(2 * math.pi)


def theorem_scope(reconstructor) -> str | None:
    """Why Theorem 1 does not cover ``reconstructor`` (None: it does): it is about SMUG's smoothed denoiser."""
    from smug_plugin.models.unrolled import SmoothedUnrolledNetwork, Smoothing

    module = getattr(reconstructor, "module", None)
    if not isinstance(module, SmoothedUnrolledNetwork):
        return "not an unrolled plugin network: the theorem is about SMUG's unrolls"
    if module.smoothing == Smoothing.NONE or module.sigma <= 0:
        return "no smoothing: an unsmoothed denoiser has no known Lipschitz constant"
    if module.smoothing != Smoothing.DENOISER or module.weight_encoder is not None:
        kind = "weighted " if module.weight_encoder is not None else ""
        return f"{kind}smoothing '{module.smoothing.value}': the theorem covers SMUG's unweighted smoothed denoiser"
    return None


def denoiser_output_norms(reconstructor, batch: dict) -> torch.Tensor:
    """max ||D(x)|| per slice over every unroll and noise draw of the clean reconstruction, in the network's units
    (those of sigma: with ``intensity_scale: paper`` both are fractions of the slice's scale s)."""
    module = reconstructor.module
    sensitivity_map = reconstructor.operator(batch).sensitivity_map
    with torch.no_grad():
        _, details = module(batch["masked_kspace"], batch["sampling_mask"], sensitivity_map, return_details=True)
    norms = torch.stack([denoised.flatten(2).norm(dim=2) for denoised in details.denoised])  # (steps, K, N)
    return norms.amax(dim=(0, 1))
