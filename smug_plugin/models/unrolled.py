"""One smoothed unrolled network: MoDL, SMUG, SMUGv0, Weighted SMUG and RS-E2E differ only in where the
randomized smoothing sits.

Images are DIRECT-style complex tensors ``(N, H, W, 2)``; k-space ``(N, coil, H, W, 2)``; masks ``(N, 1, H, W, 1)``.
Every unroll applies the shared denoiser ``D`` and then the data-consistency (DC) solve of
``(A^H A + lambda I) x = A^H y + lambda z`` with DIRECT's conjugate gradient, ``A = M F S``.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.utils.checkpoint
from direct.data.transforms import expand_operator, reduce_operator
from direct.nn.conjgradnet.conjgrad import ConjGrad
from direct.types import DirectEnum
from torch import nn

from smug_plugin.models.denoiser import apply_denoiser, build_denoiser, load_denoiser_state
from smug_plugin.models.weight_encoder import WeightEncoder


class Smoothing(DirectEnum):
    """Where the Gaussian smoothing average is taken."""

    NONE = "none"  # MoDL
    DENOISER = "denoiser"  # SMUG: z_n = E[D(x_n + eta)]
    STEP = "step"  # SMUGv0: x_{n+1} = E[DC(D(x_n + eta))]
    INPUT = "input"  # RS-E2E: x = E[F(A^H y + eta)], the noisy A^H y also inside every DC step


@dataclass
class UnrollDetails:
    """What training losses need besides the reconstruction.

    Attributes
    ----------
    iterates : list[torch.Tensor]
        The denoiser inputs ``x_n`` of every unroll, ``(N, H, W, 2)`` (RS-E2E: ``(K, N, H, W, 2)``).
    denoised : list[torch.Tensor]
        The denoiser outputs at every unroll for each noise draw, ``(K, N, H, W, 2)`` (K = 1 without smoothing).
    """

    iterates: list[torch.Tensor] = field(default_factory=list)
    denoised: list[torch.Tensor] = field(default_factory=list)


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}.")


class SmoothedUnrolledNetwork(nn.Module):
    """MoDL with optional randomized smoothing (SMUG family).

    ``num_steps``, ``sigma``, ``num_samples`` and ``noise_seed`` are plain attributes: no parameter depends on
    them, so they can be changed at test time without retraining.
    """

    def __init__(
        self,
        forward_operator,
        backward_operator,
        smoothing: Smoothing = Smoothing.NONE,
        num_steps: int = 8,
        lambda_init: float = 1.0,
        learn_lambda: bool = False,
        cg_iters: int = 10,
        cg_tol: float = 1e-6,
        sigma: float = 0.0,
        num_samples: int = 1,
        reuse_noise: bool = False,
        noise_seed: int | None = 0,
        weighted: bool = False,
        weight_encoder_channels: int = 16,
        weight_encoder_layers: int = 5,
        denoiser_hidden_channels: int = 64,
        denoiser_num_dubs: int = 3,
        denoiser_num_convs_recon: int = 9,
        denoiser_checkpoint: str | None = None,
        gradient_checkpointing: bool = False,
    ):
        """Inits :class:`SmoothedUnrolledNetwork`.

        Parameters
        ----------
        forward_operator, backward_operator : Callable
            DIRECT's FFT operators (``fft2``/``ifft2`` with ``dim``).
        smoothing : Smoothing
            Where the smoothing average is taken (``none`` gives MoDL).
        num_steps : int
            Number of unrolls N (papers: 8).
        lambda_init : float
            DC weight lambda (papers: 1), fixed unless ``learn_lambda``.
        learn_lambda : bool
            Learn lambda (one scalar for all unrolls, so N stays free).
        cg_iters, cg_tol : int, float
            Conjugate-gradient iterations and tolerance of the DC solve.
        sigma : float
            Standard deviation of the Gaussian noise on real and imaginary parts (papers: 0.01). 0 disables smoothing.
        num_samples : int
            Monte Carlo draws K (papers: 10), pushed through the denoiser as one batch.
        reuse_noise : bool
            Draw the noise once and reuse it at every unroll (conference code) instead of fresh noise per unroll.
        noise_seed : int, optional
            In eval mode the noise comes from a generator seeded with this at every forward call, so a
            reconstruction is reproducible; ``None`` uses the global generator.
        weighted : bool
            Weighted SMUG: a weight encoder gives each noisy input a positive weight for the average.
        weight_encoder_channels, weight_encoder_layers : int
            Width and depth of the weight encoder.
        denoiser_hidden_channels, denoiser_num_dubs, denoiser_num_convs_recon : int
            DIDN configuration (papers: 64 channels, 3 down-up blocks).
        denoiser_checkpoint : str, optional
            A ``direct train`` checkpoint (pre-trained ``smug.didn.DIDN`` or any family member) whose denoiser
            weights initialise this model's denoiser.
        gradient_checkpointing : bool
            Recompute each unroll in the backward pass instead of storing its activations (training only).
        """
        super().__init__()
        if int(num_steps) != num_steps or num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples (K) must be a positive integer, got {num_samples}.")
        _positive("sigma", sigma, allow_zero=True)
        _positive("lambda_init", lambda_init)
        if cg_iters < 1:
            raise ValueError(f"cg_iters must be >= 1, got {cg_iters}.")
        if weighted and Smoothing(smoothing) != Smoothing.DENOISER:
            raise ValueError("weighted smoothing is defined for smoothing='denoiser' (Weighted SMUG) only.")

        self.forward_operator = forward_operator
        self.backward_operator = backward_operator
        self.smoothing = Smoothing(smoothing)
        self.num_steps = int(num_steps)
        self.sigma = float(sigma)
        self.num_samples = int(num_samples)
        self.reuse_noise = reuse_noise
        self.noise_seed = noise_seed
        self.gradient_checkpointing = gradient_checkpointing

        self.denoiser = build_denoiser(denoiser_hidden_channels, denoiser_num_dubs, denoiser_num_convs_recon)
        if denoiser_checkpoint:
            load_denoiser_state(self.denoiser, denoiser_checkpoint)
        self.weight_encoder = WeightEncoder(weight_encoder_channels, weight_encoder_layers) if weighted else None
        if learn_lambda:
            self.lambd = nn.Parameter(torch.tensor([float(lambda_init)]))
        else:
            self.register_buffer("lambd", torch.tensor([float(lambda_init)]))
        self.dc = ConjGrad(forward_operator, backward_operator, num_iters=cg_iters, tol=cg_tol)

        self._coil_dim = 1
        self._spatial_dims = (2, 3)

    @property
    def is_smoothed(self) -> bool:
        """True for the smoothed members of the family (sigma and K matter), False for MoDL."""
        return self.smoothing != Smoothing.NONE

    @property
    def is_randomized(self) -> bool:
        """True when the forward pass draws noise (smoothing with sigma > 0)."""
        return self.smoothing != Smoothing.NONE and self.sigma > 0

    # TEMP: stand-in for the models branch (test_time / supported_test_time_settings); dropped at merge.
    def supported_test_time_settings(self) -> frozenset[str]:
        """Names of the settings :meth:`test_time` accepts for this member of the family."""
        smoothing = {"sigma", "num_samples"} if self.is_smoothed else set()
        return frozenset({"num_steps", "noise_seed", *smoothing})

    @contextlib.contextmanager
    def test_time(
        self,
        num_steps: int | None = None,
        sigma: float | None = None,
        num_samples: int | None = None,
        noise_seed: int | None = None,
    ) -> Iterator[None]:
        """Validate, apply and afterwards restore test-time settings (None keeps the configured value)."""
        wanted = {
            k: v
            for k, v in {
                "num_steps": num_steps,
                "sigma": sigma,
                "num_samples": num_samples,
                "noise_seed": noise_seed,
            }.items()
            if v is not None
        }
        unsupported = sorted(set(wanted) - self.supported_test_time_settings())
        if unsupported:
            raise ValueError(f"{type(self).__name__} has no test-time setting {', '.join(unsupported)}.")
        if "num_steps" in wanted and (int(num_steps) != num_steps or num_steps < 1):
            raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")
        if "num_samples" in wanted and (int(num_samples) != num_samples or num_samples < 1):
            raise ValueError(f"num_samples (K) must be a positive integer, got {num_samples}.")
        if "sigma" in wanted:
            _positive("sigma", sigma, allow_zero=True)
        old = {k: getattr(self, k) for k in wanted}
        try:
            for k, v in wanted.items():
                setattr(self, k, v)
            yield
        finally:
            for k, v in old.items():
                setattr(self, k, v)

    def forward(
        self,
        masked_kspace: torch.Tensor,
        sampling_mask: torch.Tensor,
        sensitivity_map: torch.Tensor,
        return_details: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, UnrollDetails]:
        """Reconstructs the image ``(N, H, W, 2)`` from undersampled multi-coil k-space.

        Parameters
        ----------
        masked_kspace : torch.Tensor
            Shape (N, coil, H, W, 2).
        sampling_mask : torch.Tensor
            Shape (N, 1, H, W, 1).
        sensitivity_map : torch.Tensor
            Shape (N, coil, H, W, 2), normalised so that sum_c |S_c|^2 = 1.
        return_details : bool
            Also return the iterates and denoiser outputs (for the UStab loss).
        """
        _check_inputs(masked_kspace, sampling_mask, sensitivity_map)
        # Data consistency stays in float32 under mixed precision: half-precision FFTs lose the DC solve.
        masked_kspace, sensitivity_map = masked_kspace.float(), sensitivity_map.float()
        generator = self._noise_generator(masked_kspace.device)
        draws = self.num_samples if self.is_randomized else 1
        details = UnrollDetails()

        adjoint = self._adjoint(masked_kspace, sampling_mask, sensitivity_map)
        x, rhs_offset = adjoint, None
        if self.smoothing == Smoothing.INPUT and self.is_randomized:
            # RS-E2E runs the whole MoDL on K noisy copies of A^H y at once (batch K*N).
            noise = self._noise((draws, *adjoint.shape), generator, adjoint)
            x = (adjoint.unsqueeze(0) + noise).flatten(0, 1)
            rhs_offset = noise.flatten(0, 1)
            masked_kspace, sampling_mask, sensitivity_map = (
                t.repeat(draws, *([1] * (t.ndim - 1))) for t in (masked_kspace, sampling_mask, sensitivity_map)
            )
        fixed_noise = None
        if self.reuse_noise and self.is_randomized and self.smoothing != Smoothing.INPUT:
            fixed_noise = self._noise((draws, *adjoint.shape), generator, adjoint)

        for _ in range(self.num_steps):
            noise = fixed_noise
            if noise is None and self.is_randomized and self.smoothing != Smoothing.INPUT:
                noise = self._noise((draws, *x.shape), generator, x)
            operands = (x, masked_kspace, sampling_mask, sensitivity_map, noise, rhs_offset)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x_next, denoised = torch.utils.checkpoint.checkpoint(self._unroll, *operands, use_reentrant=False)
            else:
                x_next, denoised = self._unroll(*operands)
            if return_details:
                details.iterates.append(x)
                details.denoised.append(denoised)
            x = x_next

        if self.smoothing == Smoothing.INPUT and self.is_randomized:
            x = x.unflatten(0, (draws, -1)).mean(0)
            if return_details:
                details.iterates = [it.unflatten(0, (draws, -1)) for it in details.iterates]
                details.denoised = [d[0].unflatten(0, (draws, -1)) for d in details.denoised]
        return (x, details) if return_details else x

    def _unroll(self, x, masked_kspace, sampling_mask, sensitivity_map, noise, rhs_offset):
        """One unroll; returns the next iterate and the denoiser outputs ``(K, N, H, W, 2)``."""
        if noise is None:
            denoised = self.denoise(x).unsqueeze(0)
            return self._data_consistency(denoised[0], masked_kspace, sampling_mask, sensitivity_map, rhs_offset), (
                denoised
            )
        draws = noise.shape[0]
        noisy = (x.unsqueeze(0) + noise).flatten(0, 1)
        denoised = self.denoise(noisy).unflatten(0, (draws, -1))
        if self.smoothing == Smoothing.STEP:
            repeat = lambda t: t.repeat(draws, *([1] * (t.ndim - 1)))  # noqa: E731
            solved = self._data_consistency(
                denoised.flatten(0, 1), repeat(masked_kspace), repeat(sampling_mask), repeat(sensitivity_map), None
            )
            return solved.unflatten(0, (draws, -1)).mean(0), denoised
        if self.weight_encoder is not None:
            weights = self.weight_encoder(noisy).unflatten(0, (draws, -1))  # (K, N)
            weights = weights[..., None, None, None]
            z = (weights * denoised).sum(0) / weights.sum(0).clamp_min(1e-8)
        else:
            z = denoised.mean(0)
        return self._data_consistency(z, masked_kspace, sampling_mask, sensitivity_map, rhs_offset), denoised

    def denoise(self, image: torch.Tensor) -> torch.Tensor:
        """Applies the denoiser to complex images ``(B, H, W, 2)``."""
        return apply_denoiser(self.denoiser, image)

    def _data_consistency(self, z, masked_kspace, sampling_mask, sensitivity_map, rhs_offset):
        # DIRECT's CG solves (A^H A + lambda I) x = A^H y + lambda z' from x = z'. RS-E2E's right-hand side
        # A^H y + eta + lambda z equals that with z' = z + eta / lambda.
        lambd = self.lambd.float().clamp_min(1e-6)
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            if rhs_offset is not None:
                z = z + rhs_offset / lambd
            return self.dc.cg(z, masked_kspace, sensitivity_map, sampling_mask, lambd, z)

    def _adjoint(self, masked_kspace, sampling_mask, sensitivity_map) -> torch.Tensor:
        """A^H y, SENSE-combined; the mask is applied again so k-space outside it never leaks in."""
        kspace = torch.where(sampling_mask == 0, torch.zeros_like(masked_kspace), masked_kspace)
        return reduce_operator(self.backward_operator(kspace, dim=self._spatial_dims), sensitivity_map, self._coil_dim)

    def forward_project(self, image: torch.Tensor, sampling_mask, sensitivity_map) -> torch.Tensor:
        """A x = M F S x, the multi-coil k-space of an image."""
        kspace = self.forward_operator(expand_operator(image, sensitivity_map, self._coil_dim), dim=self._spatial_dims)
        return torch.where(sampling_mask == 0, torch.zeros_like(kspace), kspace)

    def _noise_generator(self, device: torch.device) -> torch.Generator | None:
        if self.training or self.noise_seed is None or not self.is_randomized:
            return None
        return torch.Generator(device=device).manual_seed(int(self.noise_seed))

    def _noise(self, shape, generator, like: torch.Tensor) -> torch.Tensor:
        return self.sigma * torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


_ENGINE_ONLY_KEYS = {
    "model_name",
    "engine_name",
    "ustab_target",
    "ustab_detach_target",
    "ustab_frozen_denoiser_checkpoint",
    "robust_validation_budget",
    "robust_validation_steps",
    "robust_validation_seed",
}


def network_kwargs(kwargs: dict, smoothing: Smoothing, **fixed) -> dict:
    """Drops the engine-only config keys and fixes the family member's smoothing."""
    network = {k: v for k, v in kwargs.items() if k not in _ENGINE_ONLY_KEYS}
    return {**network, "smoothing": smoothing, **fixed}


def _check_inputs(masked_kspace: torch.Tensor, sampling_mask: torch.Tensor, sensitivity_map: torch.Tensor) -> None:
    if masked_kspace.ndim != 5 or masked_kspace.shape[-1] != 2:
        raise ValueError(
            "masked_kspace must have shape (N, coil, H, W, 2) (DIRECT's 2D convention), "
            f"got {tuple(masked_kspace.shape)}."
        )
    if sensitivity_map.shape != masked_kspace.shape:
        raise ValueError(
            f"sensitivity_map shape {tuple(sensitivity_map.shape)} must equal masked_kspace shape "
            f"{tuple(masked_kspace.shape)}."
        )
    n, _, h, w, _ = masked_kspace.shape
    if sampling_mask.ndim != 5 or tuple(sampling_mask.shape[2:4]) != (h, w) or sampling_mask.shape[0] not in (1, n):
        raise ValueError(f"sampling_mask must have shape (N, 1, {h}, {w}, 1), got {tuple(sampling_mask.shape)}.")
    if not torch.isfinite(masked_kspace).all():
        raise ValueError("masked_kspace contains NaN or Inf values; check the input file and the normalisation.")
