"""The denoiser runs DIRECT's DIDN with torch's convolutions, channels-last: DIRECT's parameters, names, shapes and
order (checkpoints load both ways) and DIRECT's outputs up to the rounding of the sums; ``denoiser_compile``."""

import copy

import torch
from direct.data.transforms import fft2, ifft2
from direct.nn.conv.modulated import ModConv2d
from direct.nn.didn.didn import DIDN as DirectDIDN
from torch import nn

from smug_plugin.models.config import DIDNConfig, MoDLConfig
from smug_plugin.models.denoiser import apply_denoiser, build_denoiser
from smug_plugin.models.didn import DIDN
from smug_plugin.models.modl import MoDL

CONFIG = dict(hidden_channels=8, num_dubs=2, num_convs_recon=2)


def directs_didn() -> DirectDIDN:
    return DirectDIDN(2, 2, **CONFIG, skip_connection=True)


def test_parameters_are_directs_names_shapes_and_order():
    ours, direct = build_denoiser(**CONFIG), directs_didn()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in direct.state_dict().items()
    ]
    assert [name for name, _ in ours.named_parameters()] == [name for name, _ in direct.named_parameters()]
    assert not any(isinstance(m, ModConv2d) for m in ours.modules())  # the bias is fused into torch's convolution
    convolutions = [m for m in ours.modules() if isinstance(m, nn.Conv2d)]
    assert len(convolutions) == sum(isinstance(m, ModConv2d) for m in direct.modules())
    assert all(c.bias is not None for c in convolutions)
    assert all(
        c.weight.is_contiguous(memory_format=torch.channels_last) for c in convolutions if c.kernel_size != (1, 1)
    )


def test_outputs_and_gradients_are_directs_with_its_weights_and_checkpoints_load_both_ways():
    torch.manual_seed(0)
    direct = directs_didn()
    ours = build_denoiser(**CONFIG)
    ours.load_state_dict(direct.state_dict())
    image = torch.randn(3, 12, 10, 2)
    expected = direct(image.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    output = apply_denoiser(ours, image)
    assert output.is_contiguous()  # the channels-last output is the contiguous (B, H, W, 2) DIRECT layout
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
    output.square().sum().backward()
    expected.square().sum().backward()
    for (name, p), q in zip(ours.named_parameters(), direct.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    back = directs_didn()
    back.load_state_dict(ours.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), ours.state_dict().values(), strict=True))


def test_the_compiled_denoiser_keeps_the_state_dict_and_the_outputs():
    torch.manual_seed(0)
    eager = build_denoiser(**CONFIG)
    torch.manual_seed(0)
    compiled = build_denoiser(**CONFIG, compiled=True)
    assert [(k, v.shape) for k, v in compiled.state_dict().items()] == [
        (k, v.shape) for k, v in eager.state_dict().items()
    ]
    image = torch.randn(2, 8, 6, 2)
    with torch.no_grad():
        torch.testing.assert_close(apply_denoiser(compiled, image), apply_denoiser(eager, image), rtol=1e-5, atol=1e-5)
    assert copy.deepcopy(compiled)(image.permute(0, 3, 1, 2)).shape == (2, 2, 8, 6)  # the frozen UStab denoiser


def test_the_compile_setting_reaches_the_denoiser():
    assert MoDLConfig().denoiser_compile is False and DIDNConfig().denoiser_compile is False
    assert MoDL(
        fft2, ifft2, denoiser_hidden_channels=4, denoiser_num_dubs=1, denoiser_compile=True
    ).denoiser._compiled_call_impl
    assert DIDN(denoiser_hidden_channels=4, denoiser_num_dubs=1, denoiser_compile=True).denoiser._compiled_call_impl
    assert MoDL(fft2, ifft2, denoiser_hidden_channels=4, denoiser_num_dubs=1).denoiser._compiled_call_impl is None
