"""The training-free cyclic-consistency defense (Saberi, Zhang, Akcakaya; CycMit-MRI) around any model, in two variants.

``variant: published`` (the default) follows the paper's code. The network input, the zero-filled image
x_in = A^H (y + delta) of the (attacked) measurements, is moved by d inside an l_inf box ||d||_inf <= radius per
real/imaginary entry (radius 0.01 x max |A^H (y + delta)| per slice: budget convention `relative_zero_filled`) by
reverse PGD: ``iterations`` (100) signed-gradient descent steps of step_fraction x radius (0.005 in the paper's
units), decayed linearly to radius / iterations at the last, on the loss

    k = y + delta + A d,  x = f(k),  k_dc = (1 - M) F S x + k,
    for stage s = 1..S (2), mask j = 1..J (3):  x_j = f(M_j (k_j + n_j); M_j),  k_j <- (1 - M) F S x_j + k,
    L(d) = (1 / (S J)) sum_{s, j} ||M F S x_j - k|| / ||k||        (k_j starts at k_dc)

(the relative l2 distance between the current input's measurements and their cyclic re-synthesis, on the acquired
lines). n_j is noise jittering: complex Gaussian noise per coil of ``noise_scale`` (6) times the coil's noise level
estimated from the residual M F S f(y + delta) - (y + delta) on the acquired lines. The iterate with the lowest loss
is kept (no oracle) and the output is f(y + delta + A d*). The perturbation a model receives is the lift A d of the
image shift, so it stays on the acquired entries and every model (which reads k-space) can be defended.

``variant: reduced`` is this plugin's earlier, cheaper form: the measured k-space itself is shifted inside an l_inf
ball of ``radius`` (DIRECT's normalised units by default), one cyclic stage, no jittering, the squared loss
L(d) = (1 / J) sum_j ||A x_j - y||^2 / ||y||^2 against the measurements as given, and the last iterate is kept.

The gradient an attack gets through the defense is BPDA's by default: d* is computed on detached inputs and enters
as a constant, so d f(y + delta + d*) / d delta is the wrapped model's gradient at the purified point. Under the
test-time setting ``defense_gradient: unrolled`` (the ``unrolled_pgd`` attack) the purification is unrolled instead:
every step keeps its graph (``create_graph``), and the sign of each step, whose derivative is zero almost
everywhere, is differentiated as tanh(g / mean |g|) (a straight-through estimate; forward values are exact).
"""

import dataclasses
import math
import pathlib
from dataclasses import dataclass
from enum import StrEnum

import torch

from smug_plugin.operators import MultiCoilOperator
from smug_plugin.robustness.attacks.ball import project
from smug_plugin.robustness.attacks.budgets import Budget, BudgetConvention, NormType, parse_enum
from smug_plugin.robustness.reconstructors.interface import Reconstructor, TestTimeSettings

DEFENSE_SECTION = "defense"
DEFENSE_GRADIENT = "defense_gradient"  # the test-time setting an adaptive attack sets to unroll the purification


class DefenseVariant(StrEnum):
    PUBLISHED = "published"  # the paper's code: reverse PGD on the network input, stages, jittering, best iterate
    REDUCED = "reduced"  # a k-space shift, one stage, no jittering, last iterate


class DefenseGradient(StrEnum):
    """The gradient an attack gets through the purification."""

    BPDA = "bpda"  # the purification shift enters as a constant
    UNROLLED = "unrolled"  # differentiated through every purification step


# Each variant's values of the settings left unset; `published` holds the paper's.
VARIANT_DEFAULTS = {
    DefenseVariant.PUBLISHED: dict(
        radius=0.01,
        convention=BudgetConvention.RELATIVE_ZERO_FILLED,
        extra_masks=3,
        iterations=100,
        step_fraction=0.5,
        stages=2,
        noise_scale=6.0,
    ),
    DefenseVariant.REDUCED: dict(
        radius=0.01,
        convention=BudgetConvention.ABSOLUTE,
        extra_masks=2,
        iterations=10,
        step_fraction=0.25,
        stages=1,
        noise_scale=0.0,
    ),
}


@dataclass(frozen=True)
class DefenseSettings:
    """The defense's settings (the ``defense:`` section of its YAML); a setting left unset (None) takes its variant's
    value (`VARIANT_DEFAULTS`: the paper's for ``published``).

    Parameters
    ----------
    wraps : str
        The name of the defended model among the run's ``--model`` entries.
    variant : DefenseVariant
        ``published`` (the paper's code) or ``reduced`` (a k-space shift, one stage, no jittering, last iterate).
    radius : float
        l_inf radius of the box, in the unit of ``convention`` (published: 0.01).
    convention : BudgetConvention
        Unit of ``radius``: ``relative_zero_filled`` (x max |A^H y| per slice, published) or ``absolute`` (DIRECT's
        normalised units, reduced); the box is on the zero-filled image (published) or on the k-space (reduced).
    extra_masks : int
        J, the masks the reconstruction is re-sampled with (published: 3).
    iterations : int
        Signed-gradient steps (published: 100); 0 leaves the input as it is.
    step_fraction : float
        Step size as a fraction of ``radius`` (published: 0.5, i.e. 0.005; decayed linearly there).
    stages : int
        Cyclic stages S (published: 2; reduced: 1 only).
    noise_scale : float
        Noise jittering: the multiple of the per-coil noise estimate added to the re-sampled k-space (published: 6;
        reduced: 0 only).
    seed : int
        Seed of the extra masks and of the jittering noise.
    """

    wraps: str
    variant: DefenseVariant = DefenseVariant.PUBLISHED
    radius: float | None = None
    convention: BudgetConvention | None = None
    extra_masks: int | None = None
    iterations: int | None = None
    step_fraction: float | None = None
    stages: int | None = None
    noise_scale: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.wraps, str) or not self.wraps:
            raise ValueError("'wraps' must name another --model of the run.")
        object.__setattr__(self, "variant", parse_enum(DefenseVariant, self.variant, "defense variant"))
        for key, value in VARIANT_DEFAULTS[self.variant].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        object.__setattr__(self, "convention", parse_enum(BudgetConvention, self.convention, "radius convention"))
        if self.convention not in (BudgetConvention.ABSOLUTE, BudgetConvention.RELATIVE_ZERO_FILLED):
            raise ValueError(f"'convention' must be absolute or relative_zero_filled, got {self.convention.value!r}.")
        for key in ("radius", "step_fraction", "noise_scale"):
            value = getattr(self, key)
            bad = isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            if bad or value < 0 or (value == 0 and key != "noise_scale"):
                raise ValueError(
                    f"'{key}' must be a finite number > 0{' (or 0)' * (key == 'noise_scale')}, got {value!r}."
                )
        for key, least in (("extra_masks", 1), ("iterations", 0), ("stages", 1), ("seed", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"'{key}' must be an integer >= {least}, got {value!r}.")
        if self.variant == DefenseVariant.REDUCED and (self.stages != 1 or self.noise_scale != 0):
            raise ValueError("the reduced variant has one stage and no jittering: set 'variant: published' for these.")

    @classmethod
    def published(cls, wraps: str, **changes) -> "DefenseSettings":
        """The paper's defense (its values unless changed)."""
        return cls(wraps, DefenseVariant.PUBLISHED, **changes)

    @classmethod
    def reduced(cls, wraps: str, **changes) -> "DefenseSettings":
        """The reduced defense: a k-space shift, one stage, no jittering, the last iterate."""
        return cls(wraps, DefenseVariant.REDUCED, **changes)

    @property
    def radius_budget(self) -> Budget:
        return Budget(float(self.radius), self.convention, NormType.LINF)

    def model_calls(self) -> dict[str, int]:
        """Calls of the wrapped model per slice for one defended reconstruction: ``forward`` (without a graph),
        ``forward_backward`` (a forward pass and its backward) and ``total_reconstructions``, the cost as a multiple
        of one reconstruction, a backward counted as two forward passes."""
        per_loss = 1 + self.stages * self.extra_masks
        if self.iterations == 0:
            forward, forward_backward = 1, 0
        elif self.variant == DefenseVariant.PUBLISHED:
            # the noise estimate, the final iterate's loss, the output; a loss with its gradient per step
            forward, forward_backward = 1 + per_loss + 1, self.iterations * per_loss
        else:
            forward, forward_backward = 1, self.iterations * per_loss
        return {
            "forward": forward,
            "forward_backward": forward_backward,
            "total_reconstructions": forward + 3 * forward_backward,
        }


def read_defense_settings(path: pathlib.Path, section: dict) -> DefenseSettings:
    """`DefenseSettings` from a YAML's ``defense:`` mapping; errors name the file, the key and the fix."""
    keys = [f.name for f in dataclasses.fields(DefenseSettings)]
    if "wraps" not in section:
        raise ValueError(f"{path}: '{DEFENSE_SECTION}:' needs 'wraps', the name of the --model it defends.")
    unknown = sorted(set(section) - set(keys))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown} in '{DEFENSE_SECTION}:'; the valid keys are {keys}.")
    try:
        return DefenseSettings(**section)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: in '{DEFENSE_SECTION}:', {error}") from None


def extra_masks(mask: torch.Tensor, count: int, seed: int) -> list[torch.Tensor]:
    """``count`` random column masks like ``mask`` (N, 1, H, W, 1): the same number of columns per slice, always
    with its centre run of sampled columns (the calibration region)."""
    generator = torch.Generator().manual_seed(seed)
    columns = mask[:, 0, 0, :, 0] != 0  # (N, W)
    masks = []
    for _ in range(count):
        drawn = torch.zeros_like(columns)
        for i, sampled in enumerate(columns):
            centre = _centre_run(sampled)
            free = torch.nonzero(~centre).flatten()
            chosen = free[torch.randperm(len(free), generator=generator)[: int(sampled.sum() - centre.sum())]]
            drawn[i, centre] = True
            drawn[i, chosen.to(columns.device)] = True
        masks.append(drawn[:, None, None, :, None].expand_as(mask).to(mask.dtype))
    return masks


def _centre_run(sampled: torch.Tensor) -> torch.Tensor:
    """The contiguous run of sampled columns through the centre (empty if the centre column is not sampled)."""
    run = torch.zeros_like(sampled)
    middle = len(sampled) // 2
    left = right = middle
    while left >= 0 and sampled[left]:
        left -= 1
    while right < len(sampled) and sampled[right]:
        right += 1
    if right > left + 1:
        run[left + 1 : right] = True
    return run


def cyclic_loss(
    model: Reconstructor, batch: dict, kspace: torch.Tensor, masks: list[torch.Tensor], settings: TestTimeSettings
) -> torch.Tensor:
    """L per slice (batch,): reconstruct ``kspace``, re-sample with each extra mask, reconstruct, compare with the
    measured data of ``batch`` through the original mask."""
    operator = model.operator(batch)
    measured = batch["masked_kspace"]
    first = model.reconstruct({**batch, "masked_kspace": kspace}, None, settings)
    image = _with_phase(first, operator, kspace)
    loss = torch.zeros(measured.shape[0], device=measured.device)
    for mask in masks:
        resampled = MultiCoilOperator(
            operator.forward_operator, operator.backward_operator, operator.sensitivity_map, mask
        )
        second = model.reconstruct({**batch, "masked_kspace": resampled(image), "sampling_mask": mask}, None, settings)
        residual = operator(_with_phase(second, operator, kspace)) - measured
        loss = loss + residual.flatten(1).pow(2).sum(1) / measured.flatten(1).pow(2).sum(1).clamp_min(1e-30)
    return loss / len(masks)


def _with_phase(magnitude: torch.Tensor, operator: MultiCoilOperator, kspace: torch.Tensor) -> torch.Tensor:
    """A complex image from a model's magnitude output and the phase of the zero-filled image of ``kspace``:
    the evaluation's models return magnitudes, and re-sampling needs a complex image."""
    zero_filled = operator.adjoint(kspace)
    unit = zero_filled / zero_filled.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return magnitude[..., None] * unit


def noise_level(residual: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-coil noise level (N, coil): the root mean square of the real and imaginary parts of ``residual``
    (N, coil, H, W, 2) on the acquired entries of ``mask`` (the standard deviation of zero-mean noise)."""
    acquired = (mask != 0).expand_as(residual).to(residual.dtype)
    count = acquired.sum(dim=(2, 3, 4)).clamp_min(1)
    return ((residual.detach() * acquired) ** 2).sum(dim=(2, 3, 4)).div(count).sqrt()


def jitter(level: torch.Tensor, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise shaped as ``like`` (N, coil, H, W, 2) with standard deviation ``level`` (N, coil) per coil in
    each real and imaginary part."""
    noise = torch.randn(like.shape, generator=generator, device=generator.device, dtype=like.dtype)
    return noise * level[:, :, None, None, None]


def published_loss(
    model: Reconstructor,
    batch: dict,
    kspace: torch.Tensor,
    masks: list[torch.Tensor],
    stages: int,
    level: torch.Tensor,
    generator: torch.Generator,
    settings: TestTimeSettings,
) -> torch.Tensor:
    """The published cyclic loss per slice (batch,) of the network input ``kspace`` (see the module docstring)."""
    operator = model.operator(batch)
    acquired = (batch["sampling_mask"] != 0).to(kspace.dtype)
    first = model.reconstruct({**batch, "masked_kspace": kspace}, None, settings)
    consistent = operator.fully_sampled(_with_phase(first, operator, kspace)) * (1 - acquired) + kspace
    current = [consistent] * len(masks)
    norm = kspace.flatten(1).norm(dim=1).clamp_min(1e-30)
    loss = torch.zeros(kspace.shape[0], device=kspace.device, dtype=kspace.dtype)
    for _ in range(stages):
        for j, mask in enumerate(masks):
            resampled = MultiCoilOperator(
                operator.forward_operator, operator.backward_operator, operator.sensitivity_map, mask
            )
            synthesised = (current[j] + jitter(level, kspace, generator)) * (mask != 0).to(kspace.dtype)
            second = model.reconstruct({**batch, "masked_kspace": synthesised, "sampling_mask": mask}, None, settings)
            full = operator.fully_sampled(_with_phase(second, resampled, synthesised))
            loss = loss + ((full - kspace) * acquired).flatten(1).norm(dim=1) / norm
            current[j] = full * (1 - acquired) + kspace
    return loss / (stages * len(masks))


def _signed(gradient: torch.Tensor, unrolled: bool) -> torch.Tensor:
    """sign(g); unrolled, with the gradient of tanh(g / mean |g|) per slice (straight-through)."""
    if not unrolled:
        return gradient.sign()
    scale = gradient.detach().abs().flatten(1).mean(1).clamp_min(1e-30).view(-1, *[1] * (gradient.ndim - 1))
    smooth = torch.tanh(gradient / scale)
    return smooth + (gradient.sign() - smooth).detach()


class DefendedReconstructor(Reconstructor):
    """``inner`` behind the cyclic-consistency defense; the same test-time settings as ``inner``.

    Parameters
    ----------
    name : str
        Display name.
    settings : DefenseSettings
        Radius, extra masks, iterations, step.
    inner : Reconstructor
        The defended model (DIRECT, plugin or CS).
    provenance : dict
        Where it came from (its YAML), for the report.
    """

    def __init__(self, name: str, settings: DefenseSettings, inner: Reconstructor, provenance: dict | None = None):
        self.name = name
        self.settings = settings
        self.inner = inner
        self.provenance = provenance or {}
        self.data_model = getattr(inner, "data_model", inner)  # the loop reads its batches from a DIRECT model

    def use_dimensionality(self, ndim: int) -> None:
        self.inner.use_dimensionality(ndim)

    def supported_settings(self) -> frozenset[str]:
        return self.inner.supported_settings() | {DEFENSE_GRADIENT}

    def purification(
        self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings, unrolled: bool = False
    ) -> torch.Tensor:
        """The k-space shift of the (perturbed) input that minimises the cyclic loss inside the box; detached unless
        ``unrolled`` (then differentiable with respect to ``kspace_delta``)."""
        if self.settings.iterations == 0:
            return torch.zeros_like(batch["masked_kspace"])
        if self.settings.variant == DefenseVariant.PUBLISHED:
            return self._published(batch, kspace_delta, settings, unrolled)
        return self._reduced(batch, kspace_delta, settings, unrolled)

    def _published(
        self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings, unrolled: bool
    ) -> torch.Tensor:
        measured = batch["masked_kspace"] if kspace_delta is None else batch["masked_kspace"] + kspace_delta
        measured = measured if unrolled else measured.detach()
        operator = self.inner.operator(batch)
        image = operator.adjoint(measured)
        radius = self.settings.radius_budget.resolve(image, torch.ones_like(image), None, image).detach()
        step = self.settings.step_fraction * radius.view(-1, *[1] * (image.ndim - 1))
        masks = extra_masks(batch["sampling_mask"], self.settings.extra_masks, self.settings.seed)
        generator = torch.Generator(device=measured.device).manual_seed(self.settings.seed)
        with torch.no_grad():
            first = self.inner.reconstruct({**batch, "masked_kspace": measured.detach()}, None, settings)
            residual = operator(_with_phase(first, operator, measured.detach())) - measured.detach()
        level = self.settings.noise_scale * noise_level(residual, batch["sampling_mask"])
        shift = torch.zeros_like(image, requires_grad=True)
        best, best_loss = shift, torch.full((image.shape[0],), math.inf, device=image.device)
        iterations = self.settings.iterations
        with torch.enable_grad():
            for i in range(iterations + 1):
                if not unrolled:
                    shift = shift.detach().requires_grad_(True)
                last = i == iterations
                with torch.set_grad_enabled(not last or unrolled):
                    args = (self.inner, batch, measured + operator(shift), masks, self.settings.stages, level)
                    loss = published_loss(*args, generator, settings)
                better = loss.detach() < best_loss
                best = torch.where(better.view(-1, *[1] * (image.ndim - 1)), shift, best)
                best_loss = torch.where(better, loss.detach(), best_loss)
                if last:
                    break
                (gradient,) = torch.autograd.grad(loss.sum(), shift, create_graph=unrolled)
                decayed = step * (1 - i / iterations)
                shift = project(shift - decayed * _signed(gradient, unrolled), radius, NormType.LINF, torch.ones(1))
        lifted = operator(best)
        return lifted if unrolled else lifted.detach()

    def _reduced(
        self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings, unrolled: bool
    ) -> torch.Tensor:
        kspace = batch["masked_kspace"] if kspace_delta is None else batch["masked_kspace"] + kspace_delta
        kspace = kspace if unrolled else kspace.detach()
        support = (batch["sampling_mask"] != 0).expand_as(kspace).to(kspace.dtype)
        zero_filled = self.inner.operator(batch).adjoint(kspace)
        radius = self.settings.radius_budget.resolve(kspace, support, None, zero_filled).detach()
        masks = extra_masks(batch["sampling_mask"], self.settings.extra_masks, self.settings.seed)
        shift = torch.zeros_like(kspace, requires_grad=True)
        with torch.enable_grad():
            for _ in range(self.settings.iterations):
                if not unrolled:
                    shift = shift.detach().requires_grad_(True)
                step = self.settings.step_fraction * radius.view(-1, *[1] * (kspace.ndim - 1))
                loss = cyclic_loss(self.inner, batch, kspace + shift, masks, settings).sum()
                (gradient,) = torch.autograd.grad(loss, shift, create_graph=unrolled)
                shift = project(shift - step * _signed(gradient, unrolled), radius, NormType.LINF, support)
        return shift if unrolled else shift.detach()

    def reconstruct(self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings) -> torch.Tensor:
        gradient = DefenseGradient(settings.defense_gradient or DefenseGradient.BPDA)
        settings = dataclasses.replace(settings, defense_gradient=None)
        unrolled = gradient == DefenseGradient.UNROLLED and kspace_delta is not None and kspace_delta.requires_grad
        shift = self.purification(batch, kspace_delta, settings, unrolled)
        total = shift if kspace_delta is None else kspace_delta + shift
        return self.inner.reconstruct(batch, total, settings)

    def normalisation_shift(
        self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings
    ) -> torch.Tensor | None:
        return self.inner.normalisation_shift(batch, kspace_delta, settings)

    def operator(self, batch: dict) -> MultiCoilOperator:
        return self.inner.operator(batch)

    def is_randomized(self, settings: TestTimeSettings) -> bool:
        return self.inner.is_randomized(settings)

    def describe(self) -> dict:
        calls = self.settings.model_calls()
        defense = {k: v.value if isinstance(v, StrEnum) else v for k, v in dataclasses.asdict(self.settings).items()}
        box = "the zero-filled image A^H y" if self.settings.variant == DefenseVariant.PUBLISHED else "the k-space"
        return {
            "name": self.name,
            **self.provenance,
            "model_name": f"cyclic_defense({self.inner.describe()['model_name']})",
            "defense": defense,
            "radius": f"{self.settings.radius_budget.describe()} on {box}",
            "model_calls_per_slice": calls,
            "cost": (
                f"{calls['forward_backward']} forward and backward passes and {calls['forward']} forward passes of "
                f"{self.inner.name}: {calls['total_reconstructions']} reconstructions per slice"
            ),
            "attack_gradient": "BPDA: the purification shift enters as a constant (unrolled under defense_gradient)",
            "randomized": self.is_randomized(TestTimeSettings()),
        }
