"""Every use of a private DIRECT function, in one place (``tests/test_robustness_direct_adapter.py`` checks that
DIRECT still provides what is relied on here).

DIRECT has no public call for "the output image of one batch as ``direct predict`` computes it": its
``reconstruct_volumes`` runs ``engine._do_iteration`` and post-processes with ``_compute_resolution`` and
``_process_output``. The evaluation needs the same on single, differentiable batches, so it calls the same three.
"""

import torch
from direct.data.transforms import modulus_if_complex


def engine_magnitude(engine, data: dict) -> torch.Tensor:
    """The engine's output for one batch as a magnitude image (batch, height, width) in DIRECT's normalised units.

    Goes through ``engine._do_iteration`` like ``reconstruct_volumes``, so engine-specific processing (sensitivity-map
    normalisation or a learned sensitivity model, sampling models) is included; differentiable w.r.t. the inputs.
    """
    output = engine._do_iteration(data, loss_fns=None).output_image
    # Some engines (RIM) override _do_iteration and return the complex image.
    return modulus_if_complex(output, complex_axis=-1)


def output_resolution(crop: str | None, batch: dict) -> list[int] | None:
    """The crop of the inference config (``inference.crop``: None or ``header``) for ``batch``."""
    from direct.nn.mri_models import _compute_resolution

    return _compute_resolution(crop, batch.get("reconstruction_size"))


def scaled_image(image: torch.Tensor, batch: dict, resolution: list[int] | None) -> torch.Tensor:
    """A magnitude (or complex) image as ``direct predict`` writes it: unnormalised, cropped, (batch, H, W)."""
    from direct.nn.mri_models import _process_output

    return _process_output(image, batch["scaling_factor"], resolution).squeeze(1)


def parse_fastmri_header(xml_header: str | bytes) -> dict:
    """What DIRECT's FastMRI dataset reads from an ISMRMRD header: ``encoding_size``, ``reconstruction_size``,
    ``padding_left`` and ``padding_right`` (the k-space columns outside them are zeroed)."""
    from direct.data.datasets import _parse_fastmri_header

    return _parse_fastmri_header(xml_header)


def set_local_process_group(group) -> None:
    """Give DIRECT the process group of this node's ranks (None: none), as DIRECT's launcher sets it for its workers.

    DIRECT's set-up asks ``direct.utils.communication.get_local_rank()`` once torch.distributed is initialised, which
    fails unless this group is set; DIRECT sets it only in its own launcher (``direct.launch``).
    """
    from direct.utils import communication

    communication._LOCAL_PROCESS_GROUP = group
