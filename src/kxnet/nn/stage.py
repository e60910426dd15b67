"""One stage of the unrolled network: K-net, then X-net on the new kernel."""

from __future__ import annotations

from torch import Tensor, nn

from kxnet import physics
from kxnet.nn.knet import KNet
from kxnet.nn.xnet import XNet

__all__ = ["Stage"]


class Stage(nn.Module):
    """``K⁽ᵗ⁾ = K-net(X⁽ᵗ⁻¹⁾, K⁽ᵗ⁻¹⁾)``, then ``X⁽ᵗ⁾ = X-net(X⁽ᵗ⁻¹⁾, K⁽ᵗ⁾)``.

    With ``true_kernel`` given, K-net is skipped and X-net uses that kernel (the paper's non-blind
    check, "KXNet (GT kernel)"). ``channels_last``, ``recompute_data_terms`` and ``operators`` are
    passed to K-net and X-net.
    """

    def __init__(
        self,
        scale: int,
        kernel_size: int,
        channels_last: bool = False,
        recompute_data_terms: bool = False,
        operators: physics.Operators = physics.OURS,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.knet = KNet(kernel_size, scale, channels_last, recompute_data_terms, operators)
        self.xnet = XNet(scale, channels_last, recompute_data_terms, operators)

    def forward(
        self,
        x: Tensor,
        y: Tensor,
        k: Tensor,
        aux_x: Tensor,
        aux_k: Tensor,
        true_kernel: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Shapes as in K-net and X-net; returns (x, k, aux_x, aux_k) of the next stage."""
        if true_kernel is None:
            k, aux_k = self.knet(x, y, k, aux_k)
        else:
            k = true_kernel
        x, aux_x = self.xnet(x, y, k, aux_x)
        return x, k, aux_x, aux_k
