"""The data-consistency solve of every unroll: DIRECT's conjugate gradient on the package's one operator A."""

import torch
from direct.nn.conjgradnet.conjgrad import ConjGrad

from smug_plugin.operators import MultiCoilOperator


class OperatorConjGrad(ConjGrad):
    """DIRECT's :class:`ConjGrad` with A^H and A^H A taken from :class:`MultiCoilOperator`.

    DIRECT's CG iteration calls these two hooks only, so overriding them keeps its numbers while A = M F S is
    written once, in :mod:`smug_plugin.operators`.
    """

    def _operator(self, sensitivity_map: torch.Tensor, sampling_mask: torch.Tensor) -> MultiCoilOperator:
        return MultiCoilOperator(self.forward_operator, self.backward_operator, sensitivity_map, sampling_mask)

    def _A_star_op(self, kspace: torch.Tensor, sensitivity_map: torch.Tensor, sampling_mask: torch.Tensor):
        return self._operator(sensitivity_map, sampling_mask).adjoint(kspace)

    def _A_star_A_op(self, image: torch.Tensor, sensitivity_map: torch.Tensor, sampling_mask: torch.Tensor):
        return self._operator(sensitivity_map, sampling_mask).normal(image)

    def solve(
        self, operator: MultiCoilOperator, kspace: torch.Tensor, z: torch.Tensor, lambd: torch.Tensor
    ) -> torch.Tensor:
        """x = (A^H A + lambda I)^-1 (A^H y + lambda z), from x = z (DIRECT's ``ConjGrad.forward``).

        Parameters
        ----------
        operator : MultiCoilOperator
            A of the batch; its FFTs must be this solver's (the model builds both from the engine's).
        kspace : torch.Tensor
            Measured k-space y ``(N, coil, H, W, 2)``.
        z : torch.Tensor
            Denoised image ``(N, H, W, 2)``, the starting point and the prior term.
        lambd : torch.Tensor
            DC weight lambda ``(1,)``.
        """
        return self.cg(z, kspace, operator.sensitivity_map, operator.sampling_mask, lambd, z)
