"""``smug.modl.MoDL``: the unsmoothed baseline of the family."""

from smug_plugin.models import unknown_name_error
from smug_plugin.models.unrolled import SmoothedUnrolledNetwork, Smoothing, network_kwargs


class MoDL(SmoothedUnrolledNetwork):
    """MoDL (Aggarwal et al.): N unrolls of a shared DIDN denoiser and a conjugate-gradient DC solve.

    Keyword arguments are those of :class:`SmoothedUnrolledNetwork` without the smoothing ones; unknown keys of
    ``MoDLConfig`` (the engine's loss settings) are accepted and ignored.
    """

    def __init__(self, forward_operator, backward_operator, **kwargs):
        super().__init__(forward_operator, backward_operator, **network_kwargs(kwargs, Smoothing.NONE))


def __getattr__(name: str):
    raise unknown_name_error(__name__, name)
