"""Where a perturbation lives: on the acquired k-space entries, or on the image A^H y and lifted to k-space.

The image-domain attack of the SMUG conference protocol (l_inf on A^H y) is realised as the forward projection
``delta_k = A delta_img = M F S delta_img`` of an image-domain variable ``delta_img``: the attack optimises
``delta_img``, and the model still receives a consistent k-space (adding to A^H y directly would bypass the
data-consistency steps, which read y).
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch

from smug_plugin.robustness.attacks.base import AttackedModel


class AttackDomain(StrEnum):
    KSPACE = "kspace"
    IMAGE = "image"


@dataclass(frozen=True)
class PerturbedSignal:
    """The signal a budget is measured on, the entries that may change, and the map to a k-space perturbation.

    Attributes
    ----------
    signal : torch.Tensor
        The measured k-space, or the zero-filled SENSE image A^H y.
    support : torch.Tensor
        Entries of the variable that may change (acquired k-space entries, or every pixel).
    lift : Callable
        Maps the variable to the k-space perturbation (identity in k-space, A in the image domain).
    """

    signal: torch.Tensor
    support: torch.Tensor
    lift: Callable[[torch.Tensor], torch.Tensor]


def perturbed_signal(domain: AttackDomain, model: AttackedModel, batch: dict) -> PerturbedSignal:
    """What a perturbation in ``domain`` acts on, for ``model`` on ``batch``."""
    kspace = batch["masked_kspace"]
    if AttackDomain(domain) == AttackDomain.KSPACE:
        return PerturbedSignal(kspace, batch["sampling_mask"] != 0, lambda variable: variable)
    operator = model.operator(batch)
    image = operator.adjoint(kspace)
    return PerturbedSignal(image, torch.ones_like(image[..., :1]), operator.forward)
