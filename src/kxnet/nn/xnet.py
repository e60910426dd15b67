"""X-net: one image-update stage (paper Eq. 10-11)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from kxnet import physics
from kxnet.nn.proxnet import ProxNet

__all__ = ["XNet", "IMAGE_AUX_CHANNELS", "xnet_channels"]

IMAGE_AUX_CHANNELS = 32


def xnet_channels(scale: int) -> int:
    """Channels of proxNet_X: X and Ĝ_X in space-to-depth form, Y, the image auxiliary variable."""
    return 6 * scale**2 + 3 + IMAGE_AUX_CHANNELS


class XNet(nn.Module):
    """Data gradient of the image, the adjuster, then proxNet_X at LR resolution.

    proxNet_X sees space-to-depth(X), space-to-depth(Ĝ_X), Y and the image auxiliary variable
    (6s² + 35 channels); the new X is depth-to-space of the first 3s² output channels and the
    next auxiliary variable is channels 6s²+3 onwards. The output channels in between are never
    used, so proxNet_X's last convolution skips them. Everything but proxNet_X runs in float32
    also under autocast. With ``recompute_data_term`` the adjusted gradient keeps only its inputs
    for the backward pass and runs again there. ``operators`` is the formulation of the data
    terms.
    """

    def __init__(
        self,
        scale: int,
        channels_last: bool = False,
        recompute_data_term: bool = False,
        operators: physics.Operators = physics.OURS,
    ) -> None:
        super().__init__()
        self.operators = operators
        self.scale = scale
        self.recompute_data_term = recompute_data_term
        self.prox_net = ProxNet(xnet_channels(scale), channels_last=channels_last)
        self.used_channels = (slice(0, 3 * scale**2), slice(6 * scale**2 + 3, None))

    def adjusted_gradient(self, x: Tensor, y: Tensor, k: Tensor) -> Tensor:
        """``Ĝ_X = (K ⊗ₛᵀ (A_K X − Y)) / (K ⊗ₛᵀ 1 + 1e−10)``: B×3×H×W, B×3×h×w, B×p×p → B×3×H×W."""
        s, ops = self.scale, self.operators
        with physics.full_precision(x):
            residual = ops.blur_downsample(x, k, s) - y
            ones_t = ops.transpose_ones(k, x.shape[-2:], s)
            return physics.adjusted_gradient(ops.transpose_upsample(residual, k, s), ones_t)

    def forward(self, x: Tensor, y: Tensor, k: Tensor, aux_x: Tensor) -> tuple[Tensor, Tensor]:
        """x: B×3×H×W, y: B×3×h×w, k: B×p×p, aux_x: B×32×h×w.

        Returns the new image (B×3×H×W) and auxiliary variable (B×32×h×w), in x's dtype also under
        autocast: only proxNet_X runs in the autocast precision.
        """
        s = self.scale
        if self.recompute_data_term and torch.is_grad_enabled():
            grad = checkpoint(
                self.adjusted_gradient, x, y, k, use_reentrant=False, preserve_rng_state=False
            )
        else:
            grad = self.adjusted_gradient(x, y, k)
        parts = [F.pixel_unshuffle(x, s), F.pixel_unshuffle(grad, s), y, aux_x]
        x_part, aux_part = self.prox_net(torch.cat(parts, 1), self.used_channels)
        # ReLU after depth-to-space: its saved output is then the new X itself, not a copy
        return F.pixel_shuffle(x_part, s).to(x.dtype).relu_(), aux_part.to(x.dtype).relu_()
