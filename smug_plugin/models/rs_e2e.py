"""``smug.rs_e2e.RSE2E``: randomized smoothing of the whole MoDL, end to end."""

from smug_plugin.models import unknown_name_error
from smug_plugin.models.unrolled import SmoothedUnrolledNetwork, Smoothing, network_kwargs


class RSE2E(SmoothedUnrolledNetwork):
    """x = mean over K draws of MoDL(A^H y + eta): the noisy A^H y is the first denoiser input; the DC right-hand
    sides use the noisy A^H y (``rs_e2e_dc_input: noisy``, the journal's text) or the measured one (``clean``, the
    published code)."""

    def __init__(self, forward_operator, backward_operator, **kwargs):
        super().__init__(forward_operator, backward_operator, **network_kwargs(kwargs, Smoothing.INPUT))


def __getattr__(name: str):
    raise unknown_name_error(__name__, name)
