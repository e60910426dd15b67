"""X-net: one image-update stage (paper Eq. 10-11)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    next auxiliary variable is channels 6s²+3 onwards.
    """

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.prox_net = ProxNet(xnet_channels(scale))

    def forward(
        self, x: Tensor, y: Tensor, k: Tensor, aux_x: Tensor, ones_t: Tensor
    ) -> tuple[Tensor, Tensor]:
        """x: B×3×H×W, y: B×3×h×w, k: B×p×p, aux_x: B×32×h×w, ones_t = k ⊗ₛᵀ 1: B×1×H×W.

        Returns the new image (B×3×H×W) and auxiliary variable (B×32×h×w).
        """
        s = self.scale
        residual = physics.blur_downsample(x, k, s) - y
        grad = physics.adjusted_gradient(physics.transpose_upsample(residual, k, s), ones_t)
        inp = torch.cat([F.pixel_unshuffle(x, s), F.pixel_unshuffle(grad, s), y, aux_x], 1)
        out = self.prox_net(inp)
        return F.pixel_shuffle(out[:, : 3 * s * s], s), out[:, 6 * s * s + 3 :]
