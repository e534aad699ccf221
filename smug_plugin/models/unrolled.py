"""One smoothed unrolled network: MoDL, SMUG, SMUGv0, Weighted SMUG and RS-E2E differ only in where the
randomized smoothing sits.

Images are DIRECT-style complex tensors ``(N, H, W, 2)``; k-space ``(N, coil, H, W, 2)``; masks ``(N, 1, H, W, 1)``.
Every unroll applies the shared denoiser ``D`` and then the data-consistency (DC) solve of
``(A^H A + lambda I) x = A^H y + lambda z`` with DIRECT's conjugate gradient, ``A = M F S``.

Units (``intensity_scale``): ``direct`` runs on the data as DIRECT normalised them. ``paper`` runs every unroll on
``y / s`` and returns ``s`` times the result, s = max(|Re|, |Im|) of the slice's A^H y
(:func:`smug_plugin.units.measured_intensity_scale`): sigma and the clamp of noisy inputs to [-1, 1] are then
fractions of the slice's intensity, as in the papers, and ``f(c y) = c f(y)``. The papers' s is that of the fully
sampled image, which does not exist at inference; the two differ by the factor the undersampling makes.
"""

import inspect
import math
import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.utils.checkpoint
from direct.types import DirectEnum
from torch import nn

from smug_plugin.models.data_consistency import CGBackward, OperatorConjGrad
from smug_plugin.models.denoiser import apply_denoiser, build_denoiser, load_denoiser_state
from smug_plugin.models.weight_encoder import WeightEncoder
from smug_plugin.operators import MultiCoilOperator, repeat_batch
from smug_plugin.units import (
    IntensityScale,
    ScaleStatistic,
    check_clamp,
    clamp_noisy,
    from_unit_scale,
    measured_intensity_scale,
    parse_choice,
    to_unit_scale,
)


class Smoothing(DirectEnum):
    """Where the Gaussian smoothing average is taken."""

    NONE = "none"  # MoDL
    DENOISER = "denoiser"  # SMUG: z_n = E[D(x_n + eta)]
    STEP = "step"  # SMUGv0: x_{n+1} = E[DC(D(x_n + eta))]
    INPUT = "input"  # RS-E2E: x = E[F(A^H y + eta)] (see RSE2EDCInput for the DC right-hand sides)


class RSE2EDCInput(DirectEnum):
    """Which A^H y RS-E2E's data-consistency right-hand sides use; the noisy one is the first denoiser input in both."""

    CLEAN = "clean"  # the published code: the noise enters the first denoiser input only
    NOISY = "noisy"  # the journal's text, x = E[MoDL(A^H y + eta)] with A^H y + eta in every DC step


class AttackGradient(DirectEnum):
    """Which gradient with respect to the measured k-space the network gives an attack (a test-time setting)."""

    FULL = "full"  # the exact gradient of the reconstruction
    # The published code's CG backward: the k-space's gradient flows through the first denoiser input
    # x_0 = A^H y only, not through the DC right-hand sides A^H y (nor through the scale s, a constant there).
    PUBLISHED = "published"


@dataclass
class UnrollDetails:
    """What training losses need besides the reconstruction.

    Attributes
    ----------
    iterates : list[torch.Tensor]
        The denoiser inputs ``x_n`` of every unroll, ``(N, H, W, 2)`` (RS-E2E: ``(K, N, H, W, 2)``).
    denoised : list[torch.Tensor]
        The denoiser outputs at every unroll for each noise draw, ``(K, N, H, W, 2)`` (K = 1 without smoothing).
    scale : torch.Tensor, optional
        The intensity scale s ``(N,)`` of each slice with ``intensity_scale: paper``: ``iterates`` and ``denoised``
        are in units of s (the UStab target must be divided by it). ``None`` in DIRECT's units.
    draws : torch.Tensor, optional
        RS-E2E with noise: the reconstruction of every noise draw ``(K, N, H, W, 2)`` before the average, in units
        of s like ``iterates`` (the published training's loss is taken per draw). ``None`` for the other models.
    """

    iterates: list[torch.Tensor] = field(default_factory=list)
    denoised: list[torch.Tensor] = field(default_factory=list)
    scale: torch.Tensor | None = None
    draws: torch.Tensor | None = None


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """``value`` as a float, if it is finite and > 0 (>= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}.")
    return float(value)


def _integer(name: str, value: int, *, minimum: int | None = 1) -> int:
    """``value`` as an int, if it is a whole number (3 or 3.0, not 2.5 or True) of at least ``minimum``."""
    whole = not isinstance(value, bool) and isinstance(value, numbers.Real) and float(value).is_integer()
    if not whole or (minimum is not None and value < minimum):
        kind = "a positive integer" if minimum == 1 else "an integer"
        raise ValueError(f"{name} must be {kind}, got {value!r}.")
    return int(value)


# The test-time settings and their validation; no parameter depends on them.
_TEST_TIME_SETTINGS = {
    "num_steps": lambda value: _integer("num_steps", value),
    "sigma": lambda value: _positive("sigma", value, allow_zero=True),
    "num_samples": lambda value: _integer("num_samples (K)", value),
    "noise_seed": lambda value: _integer("noise_seed", value, minimum=None),
    "attack_gradient": lambda value: parse_choice(AttackGradient, "attack_gradient", value),
}
# MoDL draws no noise; it accepts a seed anyway so that evaluations can pass one to every model alike.
_UNSMOOTHED_SETTINGS = frozenset({"num_steps", "noise_seed", "attack_gradient"})


class SmoothedUnrolledNetwork(nn.Module):
    """MoDL with optional randomized smoothing (SMUG family).

    No parameter depends on ``num_steps``, ``sigma``, ``num_samples``, ``noise_seed`` or ``attack_gradient``:
    :meth:`test_time` changes them for an evaluation without retraining.
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
        cg_backward: CGBackward | str = CGBackward.IMPLICIT,
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
        denoiser_compile: bool = False,
        denoiser_checkpoint: str | None = None,
        gradient_checkpointing: bool = False,
        checkpoint_each_draw: bool = False,
        intensity_scale: IntensityScale | str = IntensityScale.DIRECT,
        intensity_scale_statistic: ScaleStatistic | str = ScaleStatistic.MAX,
        clamp_noisy_input: bool = False,
        rs_e2e_dc_input: RSE2EDCInput | str = RSE2EDCInput.NOISY,
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
        cg_backward : CGBackward
            ``implicit`` (default): the backward pass of each DC solve is one more CG solve for the adjoint, and
            memory does not grow with ``cg_iters``. ``autograd``: differentiate through every CG iteration.
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
        denoiser_compile : bool
            ``torch.compile`` the denoiser (see :func:`~smug_plugin.models.denoiser.build_denoiser`).
        denoiser_checkpoint : str, optional
            A ``direct train`` checkpoint (pre-trained ``smug.didn.DIDN`` or any family member) whose denoiser
            weights initialise this model's denoiser when training starts (:meth:`load_pretrained_denoiser`,
            called by the engine); building the model does not read it, so a trained model runs without it.
        gradient_checkpointing : bool
            Recompute each unroll in the backward pass instead of storing its activations, whenever gradients are
            taken: in training and in the attacks of ``smug evaluate`` (eval mode); never under ``torch.no_grad``.
        checkpoint_each_draw : bool
            With ``gradient_checkpointing``: recompute the denoiser one noise draw at a time instead of the whole
            unroll, so that SMUG with K draws holds about MoDL's memory rather than K times the denoiser's; its
            calls then see one draw each, which costs time on CPU (``benchmarks/vs_published.py``).
        intensity_scale : IntensityScale
            ``direct`` (default): run on the k-space as given, sigma in DIRECT's normalised units. ``paper``: run on
            ``y / s`` per slice and return ``s`` times the result, s = max(|Re|, |Im|) of A^H y, so that sigma
            (papers: 0.01) and the clamp are fractions of the slice's intensity, as in the papers (whose s is that
            of the fully sampled image, unknown at inference).
        intensity_scale_statistic : ScaleStatistic
            With ``intensity_scale: paper``: ``max`` (default, the papers' s) or ``quantile`` (the 99th percentile of
            |A^H y|, which one bright pixel cannot move; see :mod:`smug_plugin.robustness.threat_model`).
        clamp_noisy_input : bool
            Clamp every noisy denoiser input (x_n + eta; RS-E2E: A^H y + eta) to [-1, 1], as the published code
            does. Smoothed members only (MoDL adds no noise), and only with ``intensity_scale: paper``; inputs
            without noise (sigma 0) are never clamped.
        rs_e2e_dc_input : RSE2EDCInput
            RS-E2E only: ``noisy`` (default, the journal's text) puts the noisy A^H y + eta (clamped, with
            ``clamp_noisy_input``) into every DC right-hand side; ``clean`` (the published code) uses the measured
            A^H y there and the noise only in the first denoiser input.
        """
        super().__init__()
        _positive("lambda_init", lambda_init)
        _integer("cg_iters", cg_iters)
        if weighted and Smoothing(smoothing) != Smoothing.DENOISER:
            raise ValueError("weighted smoothing is defined for smoothing='denoiser' (Weighted SMUG) only.")
        intensity_scale = parse_choice(IntensityScale, "intensity_scale", intensity_scale)
        if clamp_noisy_input and Smoothing(smoothing) == Smoothing.NONE:
            raise ValueError(
                "clamp_noisy_input is defined for the smoothed models only: MoDL adds no noise, and never clamps. "
                "Remove clamp_noisy_input from the MoDL config."
            )
        check_clamp(clamp_noisy_input, intensity_scale)
        rs_e2e_dc_input = parse_choice(RSE2EDCInput, "rs_e2e_dc_input", rs_e2e_dc_input)
        if rs_e2e_dc_input != RSE2EDCInput.NOISY and Smoothing(smoothing) != Smoothing.INPUT:
            raise ValueError("rs_e2e_dc_input is a setting of smug.rs_e2e.RSE2E only: remove it from this config.")

        self.forward_operator = forward_operator
        self.backward_operator = backward_operator
        self.smoothing = Smoothing(smoothing)
        self.num_steps = _TEST_TIME_SETTINGS["num_steps"](num_steps)
        self.sigma = _TEST_TIME_SETTINGS["sigma"](sigma)
        self.num_samples = _TEST_TIME_SETTINGS["num_samples"](num_samples)
        self.reuse_noise = reuse_noise
        self.noise_seed = noise_seed
        self.gradient_checkpointing = gradient_checkpointing
        self.checkpoint_each_draw = checkpoint_each_draw
        self.denoiser_checkpoint = denoiser_checkpoint
        self.intensity_scale = intensity_scale
        self.intensity_scale_statistic = parse_choice(
            ScaleStatistic, "intensity_scale_statistic", intensity_scale_statistic
        )
        self.clamp_noisy_input = bool(clamp_noisy_input)
        self.rs_e2e_dc_input = rs_e2e_dc_input
        self.attack_gradient = AttackGradient.FULL
        self._scale_measurement: torch.Tensor | None = None  # see scale_from

        self.denoiser = build_denoiser(
            denoiser_hidden_channels, denoiser_num_dubs, denoiser_num_convs_recon, compiled=denoiser_compile
        )
        self.weight_encoder = WeightEncoder(weight_encoder_channels, weight_encoder_layers) if weighted else None
        if learn_lambda:
            self.lambd = nn.Parameter(torch.tensor([float(lambda_init)]))
        else:
            self.register_buffer("lambd", torch.tensor([float(lambda_init)]))
        self.dc = OperatorConjGrad(
            num_iters=int(cg_iters), tol=cg_tol, backward=parse_choice(CGBackward, "cg_backward", cg_backward)
        )

    def load_pretrained_denoiser(self) -> bool:
        """Initialise the denoiser from ``denoiser_checkpoint``, if one is set (the engine calls this when
        training starts); returns whether it did."""
        if not self.denoiser_checkpoint:
            return False
        load_denoiser_state(self.denoiser, self.denoiser_checkpoint)
        return True

    @property
    def is_smoothed(self) -> bool:
        """True for the smoothed members of the family (sigma and K matter), False for MoDL."""
        return self.smoothing != Smoothing.NONE

    @property
    def is_randomized(self) -> bool:
        """True when the forward pass draws noise (smoothing with sigma > 0)."""
        return self.smoothing != Smoothing.NONE and self.sigma > 0

    def supported_test_time_settings(self) -> frozenset[str]:
        """The settings :meth:`test_time` accepts: sigma and K only for the smoothed members."""
        return frozenset(_TEST_TIME_SETTINGS) if self.is_smoothed else _UNSMOOTHED_SETTINGS

    @contextmanager
    def test_time(
        self,
        num_steps: int | None = None,
        sigma: float | None = None,
        num_samples: int | None = None,
        noise_seed: int | None = None,
        attack_gradient: AttackGradient | str | None = None,
    ) -> Iterator["SmoothedUnrolledNetwork"]:
        """Runs the model with other test-time settings inside the ``with`` block, then restores the previous ones
        (also when the block raises). ``None`` keeps a setting as it is.

        Parameters
        ----------
        num_steps : int, optional
            Number of unrolls N.
        sigma : float, optional
            Smoothing noise std (>= 0; smoothed members only).
        num_samples : int, optional
            Monte Carlo draws K (smoothed members only).
        noise_seed : int, optional
            Seed of the evaluation noise.
        attack_gradient : AttackGradient, optional
            ``full`` (default) or ``published``: the gradient w.r.t. the k-space then flows through the first
            denoiser input x_0 = A^H y only, as with the published code's CG backward (see :class:`AttackGradient`).

        Raises
        ------
        ValueError
            A setting this model does not have (sigma or K for MoDL), or an invalid value (2.5 unrolls, sigma < 0).
        """
        requested = {
            "num_steps": num_steps,
            "sigma": sigma,
            "num_samples": num_samples,
            "noise_seed": noise_seed,
            "attack_gradient": attack_gradient,
        }
        requested = {name: value for name, value in requested.items() if value is not None}
        unsupported = sorted(requested.keys() - self.supported_test_time_settings())
        if unsupported:
            raise ValueError(
                f"{type(self).__name__} has no test-time setting {', '.join(unsupported)}; it supports "
                f"{', '.join(sorted(self.supported_test_time_settings()))}."
            )
        values = {name: _TEST_TIME_SETTINGS[name](value) for name, value in requested.items()}
        previous = {name: getattr(self, name) for name in values}
        for name, value in values.items():
            setattr(self, name, value)
        try:
            yield self
        finally:
            for name, value in previous.items():
                setattr(self, name, value)

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

        operator = self.operator(sampling_mask, sensitivity_map)
        adjoint = operator.adjoint(masked_kspace)
        published = self.attack_gradient == AttackGradient.PUBLISHED
        scale = None
        if self.intensity_scale == IntensityScale.PAPER:
            scale = self._intensity_scale(operator, adjoint, published)
            masked_kspace, adjoint = to_unit_scale(masked_kspace, scale), to_unit_scale(adjoint, scale)
        if published:
            masked_kspace = masked_kspace.detach()  # the k-space of the DC right-hand sides only; x_0 keeps its own
        details.scale = scale
        x, rhs_offset = adjoint, None
        if self.smoothing == Smoothing.INPUT and self.is_randomized:
            # RS-E2E runs the whole MoDL on K noisy copies of A^H y at once (batch K*N).
            noise = self._noise((draws, *adjoint.shape), generator, adjoint)
            noisy = self._noisy(adjoint.unsqueeze(0), noise)
            x = noisy.flatten(0, 1)
            if self.rs_e2e_dc_input == RSE2EDCInput.NOISY:
                # The DC right-hand side A^H y + offset is the noisy input itself (clamped, if the input is).
                rhs_offset = (noisy - adjoint.unsqueeze(0) if self.clamp_noisy_input else noise).flatten(0, 1)
                rhs_offset = rhs_offset.detach() if published else rhs_offset
            masked_kspace, operator = repeat_batch(masked_kspace, draws), operator.repeat(draws)
        dc_adjoint = operator.adjoint(masked_kspace)  # A^H y of every DC right-hand side, computed once
        fixed_noise = None
        if self.reuse_noise and self.is_randomized and self.smoothing != Smoothing.INPUT:
            fixed_noise = self._noise((draws, *adjoint.shape), generator, adjoint)

        # Whenever gradients are taken: in training, and in eval mode while an attack differentiates the output with
        # respect to the k-space (the noise is drawn outside the recomputed unroll, so both passes see the same).
        checkpointed = self.gradient_checkpointing and torch.is_grad_enabled()
        for _ in range(self.num_steps):
            noise = fixed_noise
            if noise is None and self.is_randomized and self.smoothing != Smoothing.INPUT:
                noise = self._noise((draws, *x.shape), generator, x)
            operands = (x, dc_adjoint, operator, noise, rhs_offset, draws)
            if checkpointed and not self.checkpoint_each_draw:
                x_next, denoised = torch.utils.checkpoint.checkpoint(
                    self._unroll, *operands, False, use_reentrant=False
                )
            else:
                x_next, denoised = self._unroll(*operands, checkpointed)
            if return_details:
                details.iterates.append(x)
                details.denoised.append(denoised)
            x = x_next

        if self.smoothing == Smoothing.INPUT and self.is_randomized:
            x = x.unflatten(0, (draws, -1))
            if return_details:
                details.draws = x
            x = x.mean(0)
            if return_details:
                details.iterates = [it.unflatten(0, (draws, -1)) for it in details.iterates]
                details.denoised = [d[0].unflatten(0, (draws, -1)) for d in details.denoised]
        x = from_unit_scale(x, scale)
        return (x, details) if return_details else x

    @contextmanager
    def scale_from(self, measurement: torch.Tensor | None) -> Iterator["SmoothedUnrolledNetwork"]:
        """Inside the ``with`` block, the intensity scale s (``intensity_scale: paper``) is computed from
        ``measurement`` (the clean masked k-space of the same batch) instead of the k-space the model receives, and
        is a constant for gradients: the threat model in which the attacker cannot steer the normalisation, as in the
        published code (each slice normalised once, before the attack) and in DIRECT's transforms. ``None`` keeps s
        computed from the input. Without ``intensity_scale: paper`` nothing changes."""
        previous = self._scale_measurement
        self._scale_measurement = measurement
        try:
            yield self
        finally:
            self._scale_measurement = previous

    def _intensity_scale(self, operator: MultiCoilOperator, adjoint: torch.Tensor, published: bool) -> torch.Tensor:
        """s per slice: of A^H y of the input, or (:meth:`scale_from`) of the given clean measurement, detached."""
        measurement = self._scale_measurement
        if measurement is None:
            scale = self.input_scale(adjoint)
            return scale.detach() if published else scale
        if measurement.shape[0] != adjoint.shape[0]:
            raise ValueError(
                f"scale_from: the reference measurement holds {measurement.shape[0]} slices, the input batch "
                f"{adjoint.shape[0]}; they must be the same batch."
            )
        with torch.no_grad():
            return self.input_scale(operator.adjoint(measurement.to(adjoint.device).float()))

    def input_scale(self, adjoint: torch.Tensor) -> torch.Tensor:
        """s of A^H y ``(N, H, W, 2)`` by this network's statistic (``intensity_scale: paper``)."""
        return measured_intensity_scale(adjoint, self.intensity_scale_statistic)

    def _unroll(self, x, dc_adjoint, operator, noise, rhs_offset, draws, checkpoint_draws):
        """One unroll; returns the next iterate and the denoiser outputs ``(K, N, H, W, 2)``."""
        if noise is None:  # MoDL (one draw), or RS-E2E's K draws in the batch since its noisy input
            denoised = self._denoise_draws(x, draws, checkpoint_draws).unsqueeze(0)
            return self._data_consistency(denoised[0], dc_adjoint, operator, rhs_offset), denoised
        noisy = self._noisy(x.unsqueeze(0), noise).flatten(0, 1)
        denoised = self._denoise_draws(noisy, draws, checkpoint_draws).unflatten(0, (draws, -1))
        if self.smoothing == Smoothing.STEP:
            solved = self._data_consistency(
                denoised.flatten(0, 1), repeat_batch(dc_adjoint, draws), operator.repeat(draws), None
            )
            return solved.unflatten(0, (draws, -1)).mean(0), denoised
        if self.weight_encoder is not None:
            weights = self._weights(noisy, draws, checkpoint_draws).unflatten(0, (draws, -1))  # (K, N)
            weights = weights[..., None, None, None]
            z = (weights * denoised).sum(0) / weights.sum(0).clamp_min(1e-8)
        else:
            z = denoised.mean(0)
        return self._data_consistency(z, dc_adjoint, operator, rhs_offset), denoised

    def denoise(self, image: torch.Tensor) -> torch.Tensor:
        """Applies the denoiser to complex images ``(B, H, W, 2)``."""
        return apply_denoiser(self.denoiser, image)

    def _denoise_draws(self, images: torch.Tensor, draws: int, checkpointed: bool) -> torch.Tensor:
        """The denoiser on the K draws of a batch, ``(K * N, H, W, 2)``: in one call, or (``checkpoint_each_draw``)
        one checkpointed call per draw. Checkpointing the denoiser rather than the whole unroll keeps the DC solve
        out of the recomputation (its implicit backward stores little), and checkpointing it draw by draw recomputes
        and frees one draw's activations at a time in the backward pass instead of all K draws' at once (K times
        the denoiser's memory); the denoiser still runs twice per unroll and step. The denoiser treats the images
        of a batch independently, so the outputs are those of the one call."""
        if not checkpointed:
            return self.denoise(images)
        return torch.cat(
            [torch.utils.checkpoint.checkpoint(self.denoise, draw, use_reentrant=False) for draw in images.chunk(draws)]
        )

    def _weights(self, noisy: torch.Tensor, draws: int, checkpointed: bool) -> torch.Tensor:
        """Weighted SMUG's weights of the K draws, ``(K * N,)``. With ``checkpoint_each_draw`` in eval mode (attacks)
        the encoder is recomputed one draw at a time like the denoiser (its K-draw activations in every unroll were
        the largest term of a checkpointed attack); in training its batch norm takes statistics over the whole K-draw
        batch and a recomputation would update them twice, so it runs in one call."""
        if not checkpointed or self.training:
            return self.weight_encoder(noisy)
        return torch.cat(
            [
                torch.utils.checkpoint.checkpoint(self.weight_encoder, draw, use_reentrant=False)
                for draw in noisy.chunk(draws)
            ]
        )

    def _data_consistency(self, z, dc_adjoint, operator, rhs_offset):
        # DIRECT's CG solves (A^H A + lambda I) x = A^H y + lambda z' from x = z'. RS-E2E's right-hand side
        # A^H y + eta + lambda z equals that with z' = z + eta / lambda.
        lambd = self.lambd.float().clamp_min(1e-6)
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            if rhs_offset is not None:
                z = z + rhs_offset / lambd
            return self.dc.solve_from_adjoint(operator, dc_adjoint, z, lambd)

    def operator(self, sampling_mask: torch.Tensor, sensitivity_map: torch.Tensor) -> MultiCoilOperator:
        """A = M F S of a batch, with the engine's FFTs."""
        return MultiCoilOperator(self.forward_operator, self.backward_operator, sensitivity_map, sampling_mask)

    def forward_project(self, image: torch.Tensor, sampling_mask, sensitivity_map) -> torch.Tensor:
        """A x = M F S x, the multi-coil k-space of an image."""
        return self.operator(sampling_mask, sensitivity_map).forward(image)

    def _noise_generator(self, device: torch.device) -> torch.Generator | None:
        if self.training or self.noise_seed is None or not self.is_randomized:
            return None
        return torch.Generator(device=device).manual_seed(int(self.noise_seed))

    def _noise(self, shape, generator, like: torch.Tensor) -> torch.Tensor:
        return self.sigma * torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)

    def _noisy(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The noisy denoiser input image + eta, clamped with ``clamp_noisy_input`` (:func:`units.clamp_noisy`)."""
        noisy = image + noise
        return clamp_noisy(noisy, image) if self.clamp_noisy_input else noisy


_NETWORK_KEYS = frozenset(inspect.signature(SmoothedUnrolledNetwork.__init__).parameters) - {"self"}


def network_kwargs(kwargs: dict, smoothing: Smoothing, **fixed) -> dict:
    """The config keys that are network arguments (the engine's keys, e.g. the UStab target, are dropped), with
    the family member's smoothing fixed."""
    network = {k: v for k, v in kwargs.items() if k in _NETWORK_KEYS}
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
