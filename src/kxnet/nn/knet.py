"""K-net: one kernel-update stage (paper Eq. 9)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from kxnet import physics
from kxnet.nn.proxnet import ProxNet

__all__ = ["KNet", "KERNEL_AUX_CHANNELS"]

KERNEL_AUX_CHANNELS = 24


class KNet(nn.Module):
    """A gradient step on the kernel, proxNet_K, then projection onto the simplex.

    ``K½ = K − (γ/10)·G_K`` with ``G_K`` the data gradient of :func:`physics.kernel_gradient`;
    proxNet_K sees K½ (repeated to 3 channels) beside the 24-channel kernel auxiliary variable;
    ``K = normalise(ReLU(mean(out[:, :3]) + 1e-5))`` is non-negative and sums to 1. Everything
    but proxNet_K runs in float32 also under autocast. With ``recompute_data_term`` the gradient
    step keeps only its inputs for the backward pass and runs again there (it is cheap; what it
    would keep, a padded copy of X, is not). ``operators`` is the formulation of the data terms.
    """

    def __init__(
        self,
        kernel_size: int,
        scale: int,
        channels_last: bool = False,
        recompute_data_term: bool = False,
        operators: physics.Operators = physics.OURS,
    ) -> None:
        super().__init__()
        self.operators = operators
        self.kernel_size = kernel_size
        self.scale = scale
        self.recompute_data_term = recompute_data_term
        self.gamma = nn.Parameter(torch.tensor(1.0))
        self.prox_net = ProxNet(3 + KERNEL_AUX_CHANNELS, channels_last=channels_last)

    def gradient_step(self, x: Tensor, y: Tensor, k: Tensor) -> Tensor:
        """``K½ = K − (γ/10)·G_K``: x B×3×H×W, y B×3×h×w, k B×p×p → B×p×p."""
        with physics.full_precision(x):
            ops = self.operators
            residual = ops.blur_downsample(x, k, self.scale) - y
            grad = ops.kernel_gradient(x, residual, self.kernel_size, self.scale)
            return k - (self.gamma / 10) * grad

    def forward(self, x: Tensor, y: Tensor, k: Tensor, aux_k: Tensor) -> tuple[Tensor, Tensor]:
        """x: B×3×H×W, y: B×3×h×w, k: B×p×p, aux_k: B×24×p×p → (B×p×p, B×24×p×p)."""
        if self.recompute_data_term and torch.is_grad_enabled():
            k_half = checkpoint(
                self.gradient_step, x, y, k, use_reentrant=False, preserve_rng_state=False
            )
        else:
            k_half = self.gradient_step(x, y, k)
        batch, p = k.shape[0], self.kernel_size
        inp = torch.cat([k_half.unsqueeze(1).expand(batch, 3, p, p), aux_k], 1)
        out = self.prox_net(inp).to(k.dtype)
        k_new = F.relu(out[:, :3].mean(dim=1) + 1e-5)
        return k_new / k_new.sum(dim=(-2, -1), keepdim=True), out[:, 3:]
