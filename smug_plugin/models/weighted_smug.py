"""``smug.weighted_smug.WeightedSMUG``: SMUG with a learned weight per noise draw."""

from smug_plugin.models import unknown_name_error
from smug_plugin.models.unrolled import SmoothedUnrolledNetwork, Smoothing, network_kwargs


class WeightedSMUG(SmoothedUnrolledNetwork):
    """z_n = sum_i w_i D(x_n + eta_i) / sum_i w_i, w_i from a weight encoder trained jointly with D."""

    def __init__(self, forward_operator, backward_operator, **kwargs):
        super().__init__(
            forward_operator, backward_operator, **network_kwargs(kwargs, Smoothing.DENOISER, weighted=True)
        )


def __getattr__(name: str):
    raise unknown_name_error(__name__, name)
