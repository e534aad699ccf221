"""The attack memory estimate of `smug evaluate`: the scaling with the memory options, the measured activations,
and the one-line error that names the option."""

import pathlib

import torch
from direct.data.transforms import fft2, ifft2

from smug_plugin.models.smug import SMUG
from smug_plugin.robustness.run.memory import (
    GIB,
    MemoryEstimate,
    attack_peak_bytes,
    data_geometry,
    denoiser_saved_bytes,
    memory_problem,
)

TINY = dict(num_steps=3, cg_iters=4, denoiser_hidden_channels=8, denoiser_num_dubs=1, denoiser_num_convs_recon=2)


def saved_bytes_of_forward(model, *inputs) -> int:
    """Bytes autograd saves over a whole forward (distinct storages), the weights excluded."""
    seen = {}

    def pack(tensor):
        seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(*inputs)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(v for k, v in seen.items() if k not in weights)


def test_the_estimate_orders_the_options_and_matches_the_saved_activations():
    torch.manual_seed(0)
    model = SMUG(fft2, ifft2, sigma=0.05, num_samples=3, noise_seed=1, **TINY).eval()
    shape, coils, batch = (64, 48), 2, 1
    kwargs = dict(image_shape=shape, coils=coils, batch=batch)
    plain = attack_peak_bytes(model, gradient_checkpointing=False, checkpoint_each_draw=False, **kwargs)
    unroll = attack_peak_bytes(model, gradient_checkpointing=True, checkpoint_each_draw=False, **kwargs)
    draw = attack_peak_bytes(model, gradient_checkpointing=True, checkpoint_each_draw=True, **kwargs)
    assert plain > unroll > draw
    kspace = torch.randn(batch, coils, *shape, 2, requires_grad=True)
    mask = torch.ones(batch, 1, *shape, 1)
    sens = torch.randn(batch, coils, *shape, 2)
    sens = sens / (sens**2).sum(dim=(1, 4), keepdim=True).sqrt()
    measured = saved_bytes_of_forward(model, kspace, mask, sens)
    denoiser = denoiser_saved_bytes(model.denoiser) * shape[0] * shape[1] / 64**2 * TINY["num_steps"] * 3
    # The saved activations of all N x K denoiser calls are the bulk of the measured ones, and the estimate holds them.
    assert 0.7 * measured < denoiser <= measured
    assert measured < plain < 3 * measured


def test_the_error_is_one_line_naming_the_option():
    estimate = MemoryEstimate("smug", 40 * GIB, 6 * GIB, gradient_checkpointing=False, checkpoint_each_draw=False)
    problem = memory_problem([estimate], 24 * GIB, "cuda:0", 1)
    assert "\n" not in problem and "`gradient_checkpointing: true`" in problem and "'smug'" in problem
    estimate = MemoryEstimate("smug", 40 * GIB, 6 * GIB, gradient_checkpointing=True, checkpoint_each_draw=False)
    assert "`checkpoint_each_draw: true`" in memory_problem([estimate], 24 * GIB, "cuda:0", 1)
    estimate = MemoryEstimate("smug", 40 * GIB, 30 * GIB, gradient_checkpointing=True, checkpoint_each_draw=True)
    assert "--batch-size" in memory_problem([estimate], 24 * GIB, "cuda:0", 4)
    assert memory_problem([estimate], 48 * GIB, "cuda:0", 4) is None
    assert memory_problem([estimate], None, "mps", 4) is None


def test_data_geometry_reads_the_reconstruction_size(tmp_path: pathlib.Path):
    import numpy as np

    from smug_plugin.data.fastmri_h5 import ismrmrd_header, write_fastmri_h5

    kspace = np.ones((1, 3, 64, 40), np.complex64)
    header = ismrmrd_header((64, 40), (200, 100), 5, 1, 3, recon_matrix=(32, 32), acquired_columns=36)
    write_fastmri_h5(tmp_path / "a.h5", kspace, header, acquisition="X", patient_id="p", target_shape=(32, 32))
    assert data_geometry(tmp_path, "reconstruction_size") == ((32, 32), 3)
    assert data_geometry(tmp_path, None) == ((64, 40), 3)
