"""The data-consistency CG differentiated implicitly: exact gradients (gradcheck in float64), the same gradients as
autograd through the iterations, memory independent of the iteration count, and the ``cg_backward`` setting."""

import pytest
import torch
from conftest import multicoil_inputs
from direct.data.transforms import fft2, ifft2

from smug_plugin.models.config import MoDLConfig
from smug_plugin.models.data_consistency import CGBackward, OperatorConjGrad
from smug_plugin.models.modl import MoDL
from smug_plugin.models.smug import SMUG
from smug_plugin.operators import MultiCoilOperator

TINY = dict(num_steps=2, denoiser_hidden_channels=8, denoiser_num_dubs=1, denoiser_num_convs_recon=2)


def tiny_problem(dtype: torch.dtype = torch.float64, seed: int = 0):
    """A 1-slice, 2-coil, 2 x 4 operator with some columns sampled, k-space and an image z."""
    generator, mask, sens = multicoil_inputs(batch=1, coils=2, size=(2, 4), seed=seed)
    kspace = torch.randn(sens.shape, generator=generator) * mask
    z = torch.randn(1, 2, 4, 2, generator=generator)
    operator = MultiCoilOperator(fft2, ifft2, sens.to(dtype), mask.to(dtype))
    return operator, kspace.to(dtype), z.to(dtype)


def test_gradcheck_of_the_implicit_solve_in_float64():
    operator, kspace, z = tiny_problem()
    solver = OperatorConjGrad(num_iters=60, tol=1e-13)  # converged: the implicit gradient is the exact one
    lambd = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    inputs = (kspace.requires_grad_(True), z.requires_grad_(True), lambd)
    assert torch.autograd.gradcheck(lambda y, image, lam: solver.solve(operator, y, image, lam), inputs)


def test_zero_upstream_gradient_gives_zero_not_nan():
    operator, kspace, z = tiny_problem(torch.float32)
    z.requires_grad_(True)
    x = OperatorConjGrad(num_iters=5).solve(operator, kspace, z, torch.tensor([1.0]))
    (gradient,) = torch.autograd.grad(x, z, torch.zeros_like(x))
    assert torch.equal(gradient, torch.zeros_like(z))


def gradients(cls, backward: str, inputs, **overrides) -> dict[str, torch.Tensor]:
    """Gradients of a squared-output loss w.r.t. every parameter (lambda included) and the measured k-space."""
    kspace, mask, sens = inputs
    torch.manual_seed(0)
    smoothing = {} if cls is MoDL else {"sigma": 0.05, "num_samples": 2}
    model = cls(fft2, ifft2, **TINY, **smoothing, learn_lambda=True, cg_backward=backward, **overrides).eval()
    live = kspace.clone().requires_grad_(True)
    model(live, mask, sens).square().sum().backward()
    return {"kspace": live.grad, **{name: p.grad for name, p in model.named_parameters()}}


@pytest.fixture
def inputs():
    generator, mask, sens = multicoil_inputs()
    return torch.randn(sens.shape, generator=generator) * mask, mask, sens


@pytest.mark.parametrize("cls", [MoDL, SMUG])
def test_implicit_gradients_equal_autograd_through_the_iterations(cls, inputs):
    settings = {"cg_iters": 40, "cg_tol": 1e-7, "lambda_init": 0.5}  # converged, so both are the exact gradient
    implicit, through = gradients(cls, "implicit", inputs, **settings), gradients(cls, "autograd", inputs, **settings)
    assert implicit.keys() == through.keys() and "lambd" in implicit
    for name, gradient in implicit.items():
        scale = through[name].abs().max().item()
        torch.testing.assert_close(gradient, through[name], rtol=1e-4, atol=1e-4 * scale, msg=name)


def saved_tensor_count(backward: str, num_iters: int) -> int:
    """How many tensors autograd keeps for one DC solve."""
    operator, kspace, z = tiny_problem(torch.float32)
    solver = OperatorConjGrad(num_iters=num_iters, tol=0.0, backward=backward)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        solver.solve(operator, kspace, z.requires_grad_(True), torch.tensor([1.0]))
    return len(saved)


def test_implicit_memory_does_not_grow_with_the_iterations():
    assert saved_tensor_count("implicit", 3) == saved_tensor_count("implicit", 12)
    assert saved_tensor_count("autograd", 12) > saved_tensor_count("autograd", 3)


def test_forward_is_the_same_in_both_modes(inputs):
    outputs = []
    for mode in ("implicit", "autograd"):
        torch.manual_seed(0)
        outputs.append(MoDL(fft2, ifft2, **TINY, cg_backward=mode).eval()(*inputs))
    assert torch.equal(*outputs)


def test_cg_backward_setting():
    assert MoDLConfig().cg_backward == CGBackward.IMPLICIT
    assert MoDL(fft2, ifft2, **TINY).dc.backward == CGBackward.IMPLICIT
    with pytest.raises(ValueError, match="cg_backward must be one of implicit, autograd, got 'exact'"):
        MoDL(fft2, ifft2, **TINY, cg_backward="exact")
