"""``smug.smug.SMUG`` (smoothing of the denoiser) and ``smug.smug.SMUGv0`` (smoothing of the whole unroll)."""

from smug_plugin.models import unknown_name_error
from smug_plugin.models.unrolled import SmoothedUnrolledNetwork, Smoothing, network_kwargs


class SMUG(SmoothedUnrolledNetwork):
    """SMUG: z_n = mean over K draws of D(x_n + eta), then the DC solve."""

    def __init__(self, forward_operator, backward_operator, **kwargs):
        super().__init__(forward_operator, backward_operator, **network_kwargs(kwargs, Smoothing.DENOISER))


class SMUGv0(SmoothedUnrolledNetwork):
    """SMUGv0: x_{n+1} = mean over K draws of DC(D(x_n + eta)) (average after the DC solve)."""

    def __init__(self, forward_operator, backward_operator, **kwargs):
        super().__init__(forward_operator, backward_operator, **network_kwargs(kwargs, Smoothing.STEP))


def __getattr__(name: str):
    raise unknown_name_error(__name__, name)
