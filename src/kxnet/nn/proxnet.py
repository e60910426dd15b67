"""proxNet: the learned proximal operator of K-net and X-net (paper Fig. 3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ProxNet"]


def _conv(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel_size=3, padding=1)


class ProxNet(nn.Module):
    """Four residual blocks and a residual output convolution, C→C channels, 3×3 kernels.

    ``x_i = ReLU(x_{i−1} + 0.1·f_i(x_{i−1}))`` for i = 1…4 with ``f = conv → ReLU → conv``, and
    ``out = ReLU(in + 0.1·conv(x_4))``. Input and output: B×C×h×w.

    With ``channels_last`` the input is laid out channels-last before the convolutions (the
    caller converts the weights), which is the faster layout of oneDNN and cuDNN convolutions.
    Under autocast the blocks run in the autocast dtype, residual sums included; the output's
    residual sum ``in + 0.1·conv(x_4)`` takes the input in its own precision.
    """

    def __init__(self, channels: int, res_scale: float = 0.1, channels_last: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.res_scale = res_scale
        self.channels_last = channels_last
        self.blocks = nn.ModuleList(
            nn.Sequential(_conv(channels), nn.ReLU(inplace=True), _conv(channels)) for _ in range(4)
        )
        self.out = _conv(channels)

    def forward(self, x: Tensor, split: Sequence[slice] | None = None) -> Tensor | list[Tensor]:
        """x: B×C×h×w → B×C×h×w; with ``split``, one tensor per slice of output channels.

        With ``split`` the output channels outside the slices are never computed (the output
        convolution runs on the rows of its weight that each slice names) and the slices come
        before the final ReLU, ``in + 0.1·conv(x_4)``: the caller applies it, after a
        rearrangement with which it commutes if that saves a copy.
        """
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # Under autocast the residual path runs in the autocast dtype: an input left in float32
        # would make every residual sum float32 too, stored for the backward pass beside the
        # low-precision copy that each convolution makes of it.
        device = x.device.type
        h = x.to(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else x
        for block in self.blocks:
            h = torch.add(h, block(h), alpha=self.res_scale).relu_()
        if split is None:
            return torch.add(x, self.out(h), alpha=self.res_scale).relu_()
        weight, bias, alpha = self.out.weight, self.out.bias, self.res_scale
        return [
            torch.add(x[:, part], F.conv2d(h, weight[part], bias[part], padding=1), alpha=alpha)
            for part in split
        ]
