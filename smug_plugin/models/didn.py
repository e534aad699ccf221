"""``smug.didn.DIDN``: the family's denoiser alone, for pre-training on noisy target images."""

import torch
from torch import nn

from smug_plugin.models import unknown_name_error
from smug_plugin.models.denoiser import apply_denoiser, build_denoiser


class DIDN(nn.Module):
    """Wraps the shared denoiser under the attribute ``denoiser`` so its checkpoint initialises every model.

    The engine feeds ``t + eta`` (target image plus Gaussian noise of std ``sigma``) and trains towards ``t``.
    """

    def __init__(
        self,
        forward_operator=None,
        backward_operator=None,
        denoiser_hidden_channels: int = 64,
        denoiser_num_dubs: int = 3,
        denoiser_num_convs_recon: int = 9,
        sigma: float = 0.01,
        noise_seed: int | None = 0,
    ):
        super().__init__()
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}.")
        self.sigma = float(sigma)
        self.noise_seed = noise_seed
        self.denoiser = build_denoiser(denoiser_hidden_channels, denoiser_num_dubs, denoiser_num_convs_recon)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Denoises complex images ``(N, H, W, 2)``."""
        return apply_denoiser(self.denoiser, image)

    def add_noise(self, image: torch.Tensor) -> torch.Tensor:
        """t + eta; reproducible in eval mode (generator seeded with ``noise_seed``)."""
        generator = None
        if not self.training and self.noise_seed is not None:
            generator = torch.Generator(device=image.device).manual_seed(int(self.noise_seed))
        noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
        return image + self.sigma * noise


def __getattr__(name: str):
    raise unknown_name_error(__name__, name)
