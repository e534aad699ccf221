"""DIRECT model configurations (``model:`` section) of the plugin models.

DIRECT looks up ``direct.nn.smug.config.<Class>Config`` for ``model_name: smug.<module>.<Class>``. The
``model:`` section is the only place a plugin may put settings, so the training-loss settings of the family
(the UStab target) live here too; the engines read them, the networks ignore them.
"""

from dataclasses import dataclass

from direct.config.defaults import ModelConfig

from smug_plugin.losses.smoothing import UStabTarget
from smug_plugin.models import unknown_name_error


@dataclass
class MoDLConfig(ModelConfig):
    num_steps: int = 8
    lambda_init: float = 1.0
    learn_lambda: bool = False
    cg_iters: int = 10
    cg_tol: float = 1e-6
    denoiser_hidden_channels: int = 64
    denoiser_num_dubs: int = 3
    denoiser_num_convs_recon: int = 9
    denoiser_checkpoint: str | None = None
    gradient_checkpointing: bool = False
    # Read by the engine for the loss `ustab_loss` (for MoDL, with no noise, it reduces to ||D(x_n) - anchor||^2).
    ustab_target: UStabTarget = UStabTarget.DENOISED_TARGET
    ustab_detach_target: bool = False
    ustab_frozen_denoiser_checkpoint: str | None = None
    # Read by the engine: PGD robustness logged with the validation metrics as <metric>_pgd (0 = off).
    robust_validation_budget: float = 0.0
    robust_validation_steps: int = 5
    robust_validation_seed: int = 0


@dataclass
class SMUGConfig(MoDLConfig):
    sigma: float = 0.01
    num_samples: int = 10
    reuse_noise: bool = False
    noise_seed: int | None = 0


@dataclass
class SMUGv0Config(SMUGConfig):
    """SMUG's settings; DIRECT finds a model's config by its class name, hence the subclass."""


@dataclass
class WeightedSMUGConfig(SMUGConfig):
    weight_encoder_channels: int = 16
    weight_encoder_layers: int = 5


@dataclass
class RSE2EConfig(SMUGConfig):
    """SMUG's settings (sigma, K, noise seed) for end-to-end smoothing."""


@dataclass
class DIDNConfig(ModelConfig):
    """The denoiser alone, pre-trained with E||D(t + eta) - t||^2 (loss ``denoiser_loss``)."""

    denoiser_hidden_channels: int = 64
    denoiser_num_dubs: int = 3
    denoiser_num_convs_recon: int = 9
    sigma: float = 0.01
    noise_seed: int | None = 0


def __getattr__(name: str):
    # DIRECT reports a failed lookup with this message: list what exists instead of a bare AttributeError.
    raise unknown_name_error(__name__, name)
