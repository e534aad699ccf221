"""The training-free cyclic-consistency defense (Saberi, Zhang, Akcakaya; CycMit-MRI) around any model.

At test time the measured k-space y is moved inside a small l_inf ball, y + d with ||d||_inf <= radius on the
acquired entries, to minimise a cyclic measurement-consistency loss over J extra masks M_j (other random column
masks with the same number of columns and the same calibration centre):

    x = f(y + d; M),   x_j = f(M_j F S x; M_j),   L(d) = (1 / J) sum_j ||A x_j - y||^2 / ||y||^2,

(reconstruct, re-sample the reconstruction with another mask, reconstruct again, compare with the measurements) by
``iterations`` signed-gradient steps of ``step_fraction * radius``, projected onto the ball; the output is
f(y + d*). The gradient an attack gets through the defense is BPDA's: d* is computed on detached inputs and enters
as a constant, so d f(y + delta + d*) / d delta is the wrapped model's gradient at the purified point.
"""

import dataclasses
import math
import pathlib
from dataclasses import dataclass

import torch

from smug_plugin.operators import MultiCoilOperator
from smug_plugin.robustness.attacks.ball import project
from smug_plugin.robustness.attacks.budgets import NormType
from smug_plugin.robustness.reconstructors.interface import Reconstructor, TestTimeSettings

DEFENSE_SECTION = "defense"


@dataclass(frozen=True)
class DefenseSettings:
    """The defense's settings (the ``defense:`` section of its YAML).

    Parameters
    ----------
    wraps : str
        The name of the defended model among the run's ``--model`` entries.
    radius : float
        l_inf radius of the ball around the measured k-space, in DIRECT's normalised k-space units.
    extra_masks : int
        J, the masks the reconstruction is re-sampled with.
    iterations : int
        Signed-gradient steps (the paper: about 100).
    step_fraction : float
        Step size as a fraction of ``radius``.
    seed : int
        Seed of the extra masks.
    """

    wraps: str
    radius: float = 0.01
    extra_masks: int = 2
    iterations: int = 10
    step_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.wraps, str) or not self.wraps:
            raise ValueError("'wraps' must name another --model of the run.")
        for key in ("radius", "step_fraction"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"'{key}' must be a finite number > 0, got {value!r}.")
        for key, least in (("extra_masks", 1), ("iterations", 0), ("seed", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"'{key}' must be an integer >= {least}, got {value!r}.")


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

    def supported_settings(self) -> frozenset[str]:
        return self.inner.supported_settings()

    def use_dimensionality(self, ndim: int) -> None:
        self.inner.use_dimensionality(ndim)

    def purification(self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings) -> torch.Tensor:
        """d*: the shift of the (perturbed) k-space inside the ball that minimises the cyclic loss; detached."""
        kspace = batch["masked_kspace"] if kspace_delta is None else batch["masked_kspace"] + kspace_delta
        kspace = kspace.detach()
        support = (batch["sampling_mask"] != 0).expand_as(kspace).to(kspace.dtype)
        radius = torch.full((kspace.shape[0],), self.settings.radius, device=kspace.device)
        masks = extra_masks(batch["sampling_mask"], self.settings.extra_masks, self.settings.seed)
        shift = torch.zeros_like(kspace)
        step = self.settings.step_fraction * self.settings.radius
        with torch.enable_grad():
            for _ in range(self.settings.iterations):
                shift.requires_grad_(True)
                loss = cyclic_loss(self.inner, batch, kspace + shift, masks, settings).sum()
                (gradient,) = torch.autograd.grad(loss, shift)
                shift = project(shift.detach() - step * gradient.sign(), radius, NormType.LINF, support)
        return shift.detach()

    def reconstruct(self, batch: dict, kspace_delta: torch.Tensor | None, settings: TestTimeSettings) -> torch.Tensor:
        shift = self.purification(batch, kspace_delta, settings)
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
        passes = self.settings.iterations * (1 + self.settings.extra_masks)
        return {
            "name": self.name,
            **self.provenance,
            "model_name": f"cyclic_defense({self.inner.describe()['model_name']})",
            "defense": dataclasses.asdict(self.settings),
            "cost": f"{passes} forward and backward passes of {self.inner.name} + 1 reconstruction",
            "attack_gradient": "BPDA: the purification shift enters as a constant",
            "randomized": self.is_randomized(TestTimeSettings()),
        }
