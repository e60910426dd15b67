"""The authors' formulation of KXNet's operators, re-implemented as the peer to measure against.

Same results as :mod:`kxnet.physics` (up to rounding), at the cost of the authors' forms
(jiahong-fu/KXNet):

- K-net gradient: the explicit patch matrix ``U_f(x)`` built with ``unfold`` (B × p² × C·h·w
  floats), then a matrix product with the residual;
- blur and downsample in the network: the kernel repeated once per colour channel, B·C groups,
  stride s; in data synthesis: the same blur at full resolution, then ``[..., ::s, ::s]``;
- ``k ⊗ₛᵀ e`` and the adjuster's ``k ⊗ₛᵀ 1``: transposed convolutions with the repeated kernel,
  the second one of a B×C×h×w tensor of ones, every stage.

:data:`AUTHORS` is the network's formulation of them (``KXNet(..., operators=AUTHORS)``), for a
like-for-like comparison: same network, same weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kxnet import physics

__all__ = [
    "unfold_kernel_gradient",
    "repeated_blur_downsample",
    "full_blur_downsample",
    "repeated_transpose_upsample",
    "transpose_conv_ones",
    "AUTHORS",
]

_CHANNELS = 3


def _repeat(k: Tensor, channels: int, dtype: torch.dtype) -> Tensor:
    """B×p×p → (B·C)×1×p×p: the kernel copied once per channel, for B·C groups."""
    batch, p, _ = k.shape
    return k.reshape(batch, 1, p, p).repeat(1, channels, 1, 1).reshape(-1, 1, p, p).to(dtype)


def unfold_kernel_gradient(x: Tensor, r: Tensor, p: int, scale: int) -> Tensor:
    """``(D_s U_f(x))ᵀ vec(r) / (C·h·w)``, ``U_f`` built: B×C×H×W, B×C×h×w → B×p×p."""
    batch, channels, _, _ = x.shape
    h, w = r.shape[-2:]
    cols = F.unfold(F.pad(x, [p // 2] * 4, mode="reflect"), p, stride=scale)
    cols = cols.reshape(batch, channels, p * p, h * w).permute(0, 2, 1, 3)
    cols = cols.reshape(batch, p * p, channels * h * w)
    grad = cols @ r.reshape(batch, channels * h * w, 1) / (channels * h * w)
    return grad.reshape(batch, p, p)


def repeated_blur_downsample(x: Tensor, k: Tensor, scale: int) -> Tensor:
    """``(x ⊗ k)↓s`` as a strided convolution with the kernel repeated per channel (B·C groups)."""
    batch, channels, _, _ = x.shape
    p = k.shape[-1]
    xp = F.pad(x, [p // 2] * 4, mode="reflect")
    xp = xp.reshape(1, batch * channels, *xp.shape[-2:])
    y = F.conv2d(xp, _repeat(k, channels, x.dtype), stride=scale, groups=batch * channels)
    return y.reshape(batch, channels, *y.shape[-2:])


def full_blur_downsample(x: Tensor, k: Tensor, scale: int) -> Tensor:
    """``(x ⊗ k)↓s`` as the full-resolution blur followed by ``[..., ::s, ::s]``."""
    return repeated_blur_downsample(x, k, 1)[..., ::scale, ::scale]


def repeated_transpose_upsample(e: Tensor, k: Tensor, scale: int) -> Tensor:
    """``k ⊗ₛᵀ e`` as a transposed convolution with the kernel repeated per channel."""
    batch, channels, h, w = e.shape
    p = k.shape[-1]
    out = F.conv_transpose2d(
        e.reshape(1, batch * channels, h, w),
        _repeat(k, channels, e.dtype),
        stride=scale,
        padding=p // 2,
        output_padding=scale - 1,
        groups=batch * channels,
    )
    return out.reshape(batch, channels, h * scale, w * scale)


def transpose_conv_ones(k: Tensor, size: tuple[int, int], scale: int) -> Tensor:
    """``k ⊗ₛᵀ 1`` as a transposed convolution of a B×3×h×w tensor of ones: B×3×H×W."""
    height, width = size
    ones = k.new_ones(k.shape[0], _CHANNELS, height // scale, width // scale)
    return repeated_transpose_upsample(ones, k, scale)


AUTHORS = physics.Operators(
    blur_downsample=repeated_blur_downsample,
    transpose_upsample=repeated_transpose_upsample,
    transpose_ones=transpose_conv_ones,
    kernel_gradient=unfold_kernel_gradient,
)
