"""Tiny models as attacks see them (``AttackedModel``): the plugin's MoDL and SMUG networks on random multi-coil
inputs, and the constructed failing cases of the sanity checks (gradient masking, noisy gradients, a detector)."""

import torch
from conftest import multicoil_inputs
from direct.data.transforms import fft2, ifft2

from smug_plugin.models.modl import MoDL
from smug_plugin.models.smug import SMUG
from smug_plugin.robustness.attacks import Targets

TINY = dict(num_steps=2, cg_iters=3, denoiser_hidden_channels=4, denoiser_num_dubs=1, denoiser_num_convs_recon=1)


class NetworkModel:
    """A plugin network (MoDL, SMUG) on a batch that carries its coil maps: k-space in, magnitude image out."""

    def __init__(self, network: torch.nn.Module, name: str = "modl"):
        self.network, self.name = network.eval(), name

    @property
    def is_randomized(self) -> bool:
        return bool(self.network.is_randomized)

    def reconstruct(self, batch: dict, kspace_delta=None, noise_seed=None) -> torch.Tensor:
        kspace = batch["masked_kspace"] if kspace_delta is None else batch["masked_kspace"] + kspace_delta
        settings = {} if noise_seed is None or not self.is_randomized else {"noise_seed": noise_seed}
        with self.network.test_time(**settings):
            image = self.network(kspace, batch["sampling_mask"], batch["sensitivity_map"])
        return torch.linalg.vector_norm(image, dim=-1)

    def operator(self, batch: dict):
        return self.network.operator(batch["sampling_mask"], batch["sensitivity_map"])

    def with_reconstructor(self, reconstructor):
        return reconstructor

    def with_settings(self, **changes):
        return self


def tiny_modl(seed: int = 0) -> NetworkModel:
    torch.manual_seed(seed)
    return NetworkModel(MoDL(fft2, ifft2, **TINY), "modl")


def tiny_smug(seed: int = 0) -> NetworkModel:
    torch.manual_seed(seed)
    return NetworkModel(SMUG(fft2, ifft2, **TINY, sigma=0.05, num_samples=2, noise_seed=3), "smug")


def tiny_batch(seed: int = 1, batch: int = 2) -> tuple[dict, Targets]:
    """A random masked k-space with coil maps, and a target: the zero-filled image of a fuller acquisition."""
    generator, mask, sens = multicoil_inputs(batch=batch, seed=seed)
    full = torch.randn(sens.shape, generator=generator)
    kspace = full * mask
    target = torch.linalg.vector_norm((ifft2(full, dim=(2, 3)) * sens).sum(1), dim=-1)
    return {"masked_kspace": kspace, "sampling_mask": mask, "sensitivity_map": sens}, Targets(target)


class _ZeroGradient(torch.autograd.Function):
    """The identity forward, no gradient backward: a model that masks its gradient entirely."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


class ZeroGradientModel(NetworkModel):
    """MoDL whose input passes through an operation with a zero gradient: its outputs are MoDL's."""

    def reconstruct(self, batch: dict, kspace_delta=None, noise_seed=None) -> torch.Tensor:
        delta = None if kspace_delta is None else _ZeroGradient.apply(kspace_delta)
        return super().reconstruct(batch, delta, noise_seed)


class HardThresholdModel(NetworkModel):
    """MoDL whose output is quantised to steps of `level` by a hard threshold: non-differentiable (zero gradient
    almost everywhere), yet as damaged by a perturbation as MoDL."""

    level = 0.05

    def reconstruct(self, batch: dict, kspace_delta=None, noise_seed=None) -> torch.Tensor:
        output = super().reconstruct(batch, kspace_delta, noise_seed)
        return torch.floor(output / self.level) * self.level


class NoisyGradientModel(NetworkModel):
    """A randomized model whose gradient is dominated by zero-mean noise of each draw, so its EOT average does not
    settle as draws grow: MoDL plus a tiny random linear term of huge slope (seeded by the noise seed)."""

    is_randomized = True

    def reconstruct(self, batch: dict, kspace_delta=None, noise_seed=None) -> torch.Tensor:
        output = super().reconstruct(batch, kspace_delta, None)
        if kspace_delta is None:
            return output
        generator = torch.Generator().manual_seed(noise_seed or 0)
        direction = torch.randn(kspace_delta.shape, generator=generator)
        wobble = (kspace_delta * direction).flatten(1).sum(1)
        return output + 1e3 * (wobble - wobble.detach()).view(-1, 1, 1) + 1e-6 * wobble.view(-1, 1, 1)
