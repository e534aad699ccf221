"""Training losses of the SMUG family, usable by name in DIRECT's ``training.loss.losses``."""

from smug_plugin.losses.smoothing import (
    PLUGIN_LOSSES,
    RSE2ETarget,
    UStabTarget,
    complex_mse_loss,
    complex_target_image,
    denoiser_pretraining_loss,
    ustab_loss,
)

__all__ = [
    "PLUGIN_LOSSES",
    "RSE2ETarget",
    "UStabTarget",
    "complex_mse_loss",
    "complex_target_image",
    "denoiser_pretraining_loss",
    "ustab_loss",
]
