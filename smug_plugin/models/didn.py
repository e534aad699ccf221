"""``smug.didn.DIDN``: the family's denoiser alone, for pre-training on noisy target images."""

import torch
from torch import nn

from smug_plugin.models import unknown_name_error
from smug_plugin.models.denoiser import apply_denoiser, build_denoiser
from smug_plugin.units import (
    IntensityScale,
    check_clamp,
    clamp_noisy,
    parse_choice,
    reference_intensity_scale,
)


class DIDN(nn.Module):
    """Wraps the shared denoiser under the attribute ``denoiser`` so its checkpoint initialises every model.

    The engine feeds ``t + eta`` (target image plus Gaussian noise of std ``sigma``) and trains towards ``t``. With
    ``intensity_scale: paper``, t is first divided by its own intensity scale s = max(|Re|, |Im|)
    (:meth:`target_scale`, the papers' definition: the fully sampled target is known in training), so sigma and
    the clamp of ``t + eta`` to [-1, 1] (``clamp_noisy_input``, as published) are in the papers' units.
    """

    def __init__(
        self,
        forward_operator=None,
        backward_operator=None,
        denoiser_hidden_channels: int = 64,
        denoiser_num_dubs: int = 3,
        denoiser_num_convs_recon: int = 9,
        denoiser_compile: bool = False,
        sigma: float = 0.01,
        noise_seed: int | None = 0,
        intensity_scale: IntensityScale | str = IntensityScale.DIRECT,
        clamp_noisy_input: bool = False,
    ):
        super().__init__()
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}.")
        self.sigma = float(sigma)
        self.noise_seed = noise_seed
        self.intensity_scale = parse_choice(IntensityScale, "intensity_scale", intensity_scale)
        check_clamp(clamp_noisy_input, self.intensity_scale)
        self.clamp_noisy_input = bool(clamp_noisy_input)
        self.denoiser = build_denoiser(
            denoiser_hidden_channels, denoiser_num_dubs, denoiser_num_convs_recon, compiled=denoiser_compile
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Denoises complex images ``(N, H, W, 2)``."""
        return apply_denoiser(self.denoiser, image)

    def target_scale(self, target: torch.Tensor) -> torch.Tensor | None:
        """The scale ``(N,)`` the targets ``(N, H, W, 2)`` are divided by; ``None`` in DIRECT's units."""
        return reference_intensity_scale(target) if self.intensity_scale == IntensityScale.PAPER else None

    def add_noise(self, image: torch.Tensor) -> torch.Tensor:
        """t + eta (clamped to [-1, 1] with ``clamp_noisy_input``, where sigma > 0); reproducible in eval mode
        (generator seeded with ``noise_seed``)."""
        generator = None
        if not self.training and self.noise_seed is not None:
            generator = torch.Generator(device=image.device).manual_seed(int(self.noise_seed))
        noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
        noisy = image + self.sigma * noise
        return clamp_noisy(noisy, image) if self.clamp_noisy_input and self.sigma > 0 else noisy


def __getattr__(name: str):
    raise unknown_name_error(__name__, name)
