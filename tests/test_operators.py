"""The multi-coil operator A = M F S: adjointness, DIRECT's own normal operator and conjugate gradient, the masking
rule, and no second copy of A in the models and losses."""

import functools
import pathlib

import pytest
import torch
from direct.data.transforms import fft2, ifft2
from direct.nn.conjgradnet.conjgrad import ConjGrad

import smug_plugin
from smug_plugin.models.data_consistency import OperatorConjGrad
from smug_plugin.operators import MultiCoilOperator, apply_mask, fft_convention

N, COILS, H, W = 2, 3, 8, 6


def _operator(seed: int = 0) -> MultiCoilOperator:
    g = torch.Generator().manual_seed(seed)
    sens = torch.randn(N, COILS, H, W, 2, generator=g, dtype=torch.float32)
    sens = sens / (sens**2).sum(dim=(1, 4), keepdim=True).sqrt()
    mask = (torch.rand(N, 1, 1, W, 1, generator=g) > 0.5).expand(N, 1, H, W, 1).to(torch.float32)
    return MultiCoilOperator(fft2, ifft2, sens, mask)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # float64 sum: DIRECT FFTs are float32 only
    """Re <a, b> for DIRECT complex tensors (real and imaginary parts as a trailing axis)."""
    return (a.double() * b.double()).sum()


def test_adjoint_is_the_adjoint_of_forward():
    op = _operator()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, H, W, 2, generator=g, dtype=torch.float32)
    y = torch.randn(N, COILS, H, W, 2, generator=g, dtype=torch.float32)
    assert torch.allclose(_inner(op.forward(x), y), _inner(x, op.adjoint(y)), rtol=1e-4)


def test_normal_operator_equals_directs_conjugate_gradient_operator():
    op = _operator()
    x = torch.randn(N, H, W, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    direct_cg = ConjGrad(fft2, ifft2)
    assert torch.equal(op.normal(x), direct_cg._A_star_A_op(x, op.sensitivity_map, op.sampling_mask))


@pytest.mark.parametrize("convention", [{}, {"centered": False}, {"normalized": False}])
def test_every_fft_convention_and_any_callable_give_directs_numbers(convention):
    forward, backward = functools.partial(fft2, **convention), functools.partial(ifft2, **convention)
    op = _operator()
    x = torch.randn(N, H, W, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float32)
    y = torch.randn(N, COILS, H, W, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float32)
    lean = MultiCoilOperator(forward, backward, op.sensitivity_map, op.sampling_mask)
    # Callables the operator does not recognise run as given, on real pairs.
    opaque = MultiCoilOperator(
        lambda d, dim: forward(d, dim=dim), lambda d, dim: backward(d, dim=dim), op.sensitivity_map, op.sampling_mask
    )
    direct_cg = ConjGrad(forward, backward)
    assert fft_convention(forward, fft2) == (convention.get("centered", True), convention.get("normalized", True))
    assert fft_convention(opaque.forward_operator, fft2) is None and fft_convention(forward, ifft2) is None
    expected = direct_cg._A_star_A_op(x, op.sensitivity_map, op.sampling_mask)
    for operator in (lean, opaque):
        assert torch.equal(operator.normal(x), expected)
        assert torch.equal(torch.view_as_real(operator.complex_normal(torch.view_as_complex(x))), expected)
        assert torch.equal(operator.adjoint(y), direct_cg._A_star_op(y, op.sensitivity_map, op.sampling_mask))
    assert torch.equal(lean.forward(x), opaque.forward(x))


def test_values_outside_the_mask_never_leak_in():
    op = _operator()
    y = torch.zeros(N, COILS, H, W, 2, dtype=torch.float32)
    y[op.sampling_mask.expand_as(y) == 0] = float("nan")
    assert torch.isfinite(apply_mask(y, op.sampling_mask)).all()
    assert torch.isfinite(op.adjoint(y)).all()


def test_repeat_stacks_the_batch():
    op = _operator()
    x = torch.randn(N, H, W, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    repeated = op.repeat(3).forward(x.repeat(3, 1, 1, 1))
    assert torch.equal(repeated[N : 2 * N], op.forward(x))


def test_models_data_consistency_is_directs_conjugate_gradient_bit_for_bit():
    op = _operator()
    g = torch.Generator().manual_seed(4)
    z = torch.randn(N, H, W, 2, generator=g, dtype=torch.float32)
    kspace = apply_mask(torch.randn(N, COILS, H, W, 2, generator=g, dtype=torch.float32), op.sampling_mask)
    lambd = torch.tensor([0.7])
    direct = ConjGrad(fft2, ifft2, num_iters=7, tol=0.0).cg(z, kspace, op.sensitivity_map, op.sampling_mask, lambd, z)
    for backward in ("implicit", "autograd"):
        solver = OperatorConjGrad(num_iters=7, tol=0.0, backward=backward)
        assert torch.equal(solver.solve(op, kspace, z, lambd), direct)


def test_models_and_losses_hold_no_copy_of_the_operator():
    package = pathlib.Path(smug_plugin.__file__).parent
    sources = {p: p.read_text() for folder in ("models", "losses") for p in sorted((package / folder).glob("*.py"))}
    copies = [
        f"{p.name}: {name}"
        for p, text in sources.items()
        for name in ("expand_operator", "reduce_operator", "forward_operator(", "backward_operator(", "torch.where")
        if name in text
    ]
    assert copies == []
