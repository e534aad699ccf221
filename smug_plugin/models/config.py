"""DIRECT model configurations (``model:`` section) of the plugin models.

DIRECT looks up ``direct.nn.smug.config.<Class>Config`` for ``model_name: smug.<module>.<Class>``. The
``model:`` section is the only place a plugin may put settings, so the training-loss settings of the family
(the UStab target) live here too; the engines read them, the networks ignore them.
"""

from dataclasses import dataclass

from direct.config.defaults import ModelConfig

from smug_plugin.losses.smoothing import RSE2ETarget, UStabTarget
from smug_plugin.models import unknown_name_error
from smug_plugin.models.data_consistency import CGBackward
from smug_plugin.models.unrolled import RSE2EDCInput
from smug_plugin.units import BudgetConvention, IntensityScale, NormType, ScaleStatistic


@dataclass
class MoDLConfig(ModelConfig):
    num_steps: int = 8
    lambda_init: float = 1.0
    learn_lambda: bool = False
    cg_iters: int = 10
    cg_tol: float = 1e-6
    # implicit: the DC solve's backward pass is one more CG solve (memory independent of cg_iters); autograd:
    # differentiate through every CG iteration (DIRECT's way, for comparison).
    cg_backward: CGBackward = CGBackward.IMPLICIT
    denoiser_hidden_channels: int = 64
    denoiser_num_dubs: int = 3
    denoiser_num_convs_recon: int = 9
    # torch.compile the denoiser: on CPU about 20 % less time per denoiser step once compiled, after a first step
    # that compiles (tens of seconds; needs a C++ compiler). Weights and checkpoints are unchanged.
    denoiser_compile: bool = False
    denoiser_checkpoint: str | None = None
    gradient_checkpointing: bool = False
    # With gradient_checkpointing: recompute the denoiser one noise draw at a time (SMUG's memory about MoDL's) instead
    # of the whole unroll (K times the denoiser's memory, less time on CPU).
    checkpoint_each_draw: bool = False
    # The units of sigma and of the clamp. direct: DIRECT's normalised k-space (k-space / 99th percentile of
    # |masked k-space|; image maxima of a few units). paper: every slice runs divided by its intensity scale
    # s = max(|Re|, |Im|) of A^H y (the papers' s is that of the fully sampled image, unknown at inference) and the
    # output is multiplied back, so sigma 0.01 is 1 % of the slice's intensity, as in the papers.
    intensity_scale: IntensityScale = IntensityScale.DIRECT
    # With intensity_scale paper: the statistic of A^H y divided by, max (the papers' s) or quantile (the 99th
    # percentile of |A^H y|, robust to one bright pixel under the `attacked` threat model).
    intensity_scale_statistic: ScaleStatistic = ScaleStatistic.MAX
    # Read by the engine for the loss `ustab_loss` (for MoDL, with no noise, it reduces to ||D(x_n) - anchor||^2).
    ustab_target: UStabTarget = UStabTarget.DENOISED_TARGET
    ustab_detach_target: bool = False
    ustab_frozen_denoiser_checkpoint: str | None = None
    # Read by the engine: PGD robustness logged with the validation metrics as <metric>_pgd (0 = off). The budget
    # is in robust_validation_units: direct = absolute in DIRECT's normalised k-space, paper = a fraction of each
    # slice's s_ref (max |Re|, |Im| of its fully sampled coil-combined image; the papers' eps 0.02).
    robust_validation_budget: float = 0.0
    robust_validation_units: IntensityScale = IntensityScale.DIRECT
    robust_validation_steps: int = 5
    robust_validation_seed: int = 0
    # Read by the engine: adversarial training (0 = off). On adversarial_training_share of the training batches
    # (evenly spread over DIRECT's iteration index) the loss is taken on the batch attacked by the evaluation's k-space
    # PGD (acquired entries, the network's intensity scale held at its clean value, MSE to the target). The budget is
    # in adversarial_training_convention, the evaluation's budget conventions: absolute = DIRECT's normalised k-space,
    # paper = a fraction of each slice's s_ref (the journal's eps 0.02, linf per real/imaginary entry).
    adversarial_training_budget: float = 0.0
    adversarial_training_convention: BudgetConvention = BudgetConvention.ABSOLUTE
    adversarial_training_norm: NormType = NormType.LINF
    adversarial_training_steps: int = 5
    adversarial_training_step_fraction: float = 1.0 / 3.0
    adversarial_training_random_start: bool = True
    adversarial_training_share: float = 1.0
    adversarial_training_seed: int = 0


@dataclass
class SMUGConfig(MoDLConfig):
    sigma: float = 0.01
    num_samples: int = 10
    reuse_noise: bool = False
    noise_seed: int | None = 0
    # Clamp noisy denoiser inputs to [-1, 1] as the published code does; needs intensity_scale: paper. MoDL has no
    # noise and no such key.
    clamp_noisy_input: bool = False


@dataclass
class SMUGv0Config(SMUGConfig):
    """SMUG's settings; DIRECT finds a model's config by its class name, hence the subclass."""


@dataclass
class WeightedSMUGConfig(SMUGConfig):
    weight_encoder_channels: int = 16
    weight_encoder_layers: int = 5


@dataclass
class RSE2EConfig(SMUGConfig):
    """SMUG's settings (sigma, K, noise seed) for end-to-end smoothing, and the published variant's."""

    # noisy: A^H y + eta in every DC right-hand side (the journal's text; the default, so that earlier runs keep
    # their meaning). clean: the measured A^H y there, the noise in the first denoiser input only (published code).
    rs_e2e_dc_input: RSE2EDCInput = RSE2EDCInput.NOISY
    # Read by the engine. ground_truth: the reconstruction losses compare with the fully sampled image. teacher:
    # with the reconstruction of the same batch by a frozen MoDL (the published training), read from
    # rs_e2e_teacher_checkpoint (a `direct train` model_<iteration>.pt of smug.modl.MoDL with this config's
    # num_steps, lambda, CG, denoiser and intensity_scale settings).
    rs_e2e_target: RSE2ETarget = RSE2ETarget.GROUND_TRUTH
    rs_e2e_teacher_checkpoint: str | None = None


@dataclass
class DIDNConfig(ModelConfig):
    """The denoiser alone, pre-trained with E||D(t + eta) - t||^2 (loss ``denoiser_loss``).

    With ``intensity_scale: paper`` each target t is divided by its own s = max(|Re|, |Im|) (the papers' scale of the
    fully sampled image, known in training) before the noise is added.
    """

    denoiser_hidden_channels: int = 64
    denoiser_num_dubs: int = 3
    denoiser_num_convs_recon: int = 9
    denoiser_compile: bool = False
    sigma: float = 0.01
    noise_seed: int | None = 0
    intensity_scale: IntensityScale = IntensityScale.DIRECT
    clamp_noisy_input: bool = False


def __getattr__(name: str):
    # DIRECT reports a failed lookup with this message: list what exists instead of a bare AttributeError.
    raise unknown_name_error(__name__, name)
