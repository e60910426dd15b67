"""proxNet: the learned proximal operator of K-net and X-net (paper Fig. 3)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ProxNet"]


def _conv(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel_size=3, padding=1)


class ProxNet(nn.Module):
    """Four residual blocks and a residual output convolution, C→C channels, 3×3 kernels.

    ``x_i = ReLU(x_{i−1} + 0.1·f_i(x_{i−1}))`` for i = 1…4 with ``f = conv → ReLU → conv``, and
    ``out = ReLU(in + 0.1·conv(x_4))``. Input and output: B×C×h×w.
    """

    def __init__(self, channels: int, res_scale: float = 0.1) -> None:
        super().__init__()
        self.channels = channels
        self.res_scale = res_scale
        self.blocks = nn.ModuleList(
            nn.Sequential(_conv(channels), nn.ReLU(inplace=True), _conv(channels)) for _ in range(4)
        )
        self.out = _conv(channels)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for block in self.blocks:
            h = F.relu(h + self.res_scale * block(h))
        return F.relu(x + self.res_scale * self.out(h))
