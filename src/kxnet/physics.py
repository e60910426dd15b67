"""The degradation model ``y = (x ⊗ k)↓s`` and the operators KXNet unrolls (paper Eq. 1, 5-11).

==========================  =====================================================  ===========
function                    operator                                               paper
==========================  =====================================================  ===========
:func:`blur_downsample`     ``A_k x = (x ⊗ k)↓s``; the residuals e_k, E_x          Eq. 1, 9, 10
:func:`kernel_gradient`     ``∇f(k) = (D_s U_f(x))ᵀ vec(A_k x − y)``, G_k          Eq. 5, 6, 9
:func:`transpose_upsample`  ``k ⊗ₛᵀ e``, the X gradient G_x                        Eq. 8, 10
:func:`transpose_ones`      ``k ⊗ₛᵀ 1``, the adjuster's denominator                Eq. 11
:func:`adjusted_gradient`   ``Ĝ_x = G_x / (k ⊗ₛᵀ 1)``                              Eq. 10, 11
==========================  =====================================================  ===========

Shapes: ``x`` is B×C×H×W (HR), ``k`` is B×p×p (one kernel per sample, p odd), ``s`` the scale,
``y`` is B×C×h×w with h = H/s, w = W/s. The blur is a correlation after reflect padding of
(p-1)/2; the s-fold downsampler keeps the upper-left pixel of every s×s block. Nothing here
forms the full-resolution blurred image or the unfolded p²×(C·h·w) patch matrix: the blur is a
strided convolution and the kernel gradient is the weight gradient of that convolution.

The convolutions are depthwise: the B·C image planes are the channels of a single image, each
with its own filter (the sample's kernel, repeated over colours), the form oneDNN and cuDNN
run fastest (2-4× faster on CPU than using the batch as groups and the colours as the batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Operators",
    "OURS",
    "EXPORTABLE",
    "full_precision",
    "check_shapes",
    "blur_downsample",
    "transpose_upsample",
    "transpose_ones",
    "adjusted_gradient",
    "kernel_gradient",
    "kernel_gradient_by_correlation",
]


def full_precision(like: Tensor) -> torch.autocast:
    """A context that turns autocast off on ``like``'s device: these operators run in float32.

    The data terms (residuals, gradients, the adjuster and the kernel normalisation) lose too much
    in bfloat16, and they cost little next to the proximal networks that autocast speeds up.
    """
    return torch.autocast(device_type=like.device.type, enabled=False)


def _check_kernels(k: Tensor, batch: int, scale: int) -> None:
    if k.dim() != 3 or k.shape[-1] != k.shape[-2]:
        raise ValueError(f"kernels must be B×p×p, got shape {tuple(k.shape)}")
    if k.shape[0] != batch:
        raise ValueError(f"{k.shape[0]} kernels for a batch of {batch} images")
    if k.shape[-1] % 2 == 0:
        raise ValueError(f"kernel size must be odd, got p={k.shape[-1]}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")


def check_shapes(x: Tensor, k: Tensor, scale: int) -> None:
    """Raise ``ValueError`` unless x (B×C×H×W), k (B×p×p, p odd) and ``scale`` fit together."""
    if x.dim() != 4:
        raise ValueError(f"image must be B×C×H×W, got shape {tuple(x.shape)}")
    _check_kernels(k, x.shape[0], scale)
    p = k.shape[-1]
    height, width = x.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(
            f"image size {height}×{width} is not divisible by scale {scale}: mod-crop it first"
        )
    if p // 2 >= min(height, width):
        raise ValueError(
            f"kernel size p={p} is too large for a {height}×{width} image "
            f"(reflect padding needs (p-1)/2 < height and width)"
        )


def _pad(x: Tensor, p: int) -> Tensor:
    return F.pad(x, [p // 2] * 4, mode="reflect")


def _planes(t: Tensor) -> Tensor:
    """B×C×H×W → 1×(B·C)×H×W: every image plane a channel of one image."""
    return t.reshape(1, -1, *t.shape[-2:])


def _filters(k: Tensor, channels: int, dtype: torch.dtype) -> Tensor:
    """B×p×p → (B·C)×1×p×p: each sample's kernel once per colour, the depthwise filters."""
    batch, p, _ = k.shape
    return k.to(dtype).unsqueeze(1).expand(batch, channels, p, p).reshape(-1, 1, p, p)


def blur_downsample(x: Tensor, k: Tensor, scale: int) -> Tensor:
    """``A_k x = (x ⊗ k)↓s`` (Eq. 1): B×C×H×W, B×p×p → B×C×(H/s)×(W/s), one strided convolution.

    The residuals of K-net (e_k, Eq. 9) and X-net (E_x, Eq. 10) are ``blur_downsample(x, k) − y``.
    """
    check_shapes(x, k, scale)
    batch, channels = x.shape[:2]
    xp = _planes(_pad(x, k.shape[-1]))
    y = F.conv2d(xp, _filters(k, channels, x.dtype), stride=scale, groups=batch * channels)
    return y.reshape(batch, channels, *y.shape[-2:])


def transpose_upsample(e: Tensor, k: Tensor, scale: int) -> Tensor:
    """``k ⊗ₛᵀ e`` (Eq. 8; G_x of Eq. 10), the transpose of the zero-padded ``A_k``:
    B×C×h×w → B×C×(h·s)×(w·s)."""
    if e.dim() != 4:
        raise ValueError(f"residual must be B×C×h×w, got shape {tuple(e.shape)}")
    _check_kernels(k, e.shape[0], scale)
    batch, channels = e.shape[:2]
    out = F.conv_transpose2d(
        _planes(e),
        _filters(k, channels, e.dtype),
        stride=scale,
        padding=k.shape[-1] // 2,
        output_padding=scale - 1,
        groups=batch * channels,
    )
    return out.reshape(batch, channels, *out.shape[-2:])


def _coverage(size: int, p: int, scale: int, like: Tensor) -> Tensor:
    """0/1 matrix M (size×p): M[I, u] = 1 when kernel row u reaches HR row I from some LR row."""
    rows = torch.arange(size, device=like.device).unsqueeze(1)
    taps = torch.arange(p, device=like.device).unsqueeze(0)
    offset = rows + p // 2 - taps
    lr_rows = size // scale
    hit = (offset % scale == 0) & (offset >= 0) & (offset < scale * lr_rows)
    return hit.to(like.dtype)


def transpose_ones(k: Tensor, size: tuple[int, int], scale: int) -> Tensor:
    """``k ⊗ₛᵀ 1`` (Eq. 11) for an HR size (H, W): B×1×H×W, the same for every channel.

    Row and column coverage are independent, so the result is ``M_H · k · M_Wᵀ`` with 0/1
    coverage matrices: two small matrix products instead of a transposed convolution.
    """
    height, width = size
    p = k.shape[-1]
    rows = _coverage(height, p, scale, k)
    cols = _coverage(width, p, scale, k)
    return (rows @ k @ cols.T).unsqueeze(1)


def adjusted_gradient(grad: Tensor, ones_t: Tensor, eps: float = 1e-10) -> Tensor:
    """The gradient adjuster ``Ĝ = G / (k ⊗ₛᵀ 1 + eps)`` (Eq. 11; Ĝ_x of Eq. 10):
    B×C×H×W, B×1×H×W → B×C×H×W."""
    return grad / (ones_t + eps)


def kernel_gradient(x: Tensor, r: Tensor, p: int, scale: int) -> Tensor:
    """K-net data gradient ``(D_s U_f(x))ᵀ vec(r) / (C·h·w)`` (Eq. 6; G_k of Eq. 9):
    B×C×H×W, B×C×h×w → B×p×p.

    ``G[u, v] = Σ_{c,i,j} r[c,i,j] · xpad[c, s·i+u, s·j+v] / (C·h·w)``, the weight gradient of
    the strided convolution in :func:`blur_downsample`, i.e. the gradient with respect to ``k`` of
    ``½‖A_k x − y‖² / (C·h·w)`` for ``r = A_k x − y``. It is differentiable in ``x`` and ``r``.
    """
    batch, channels, height, width = x.shape
    if r.shape != (batch, channels, height // scale, width // scale):
        raise ValueError(
            f"residual shape {tuple(r.shape)} does not match image {tuple(x.shape)} at x{scale}"
        )
    planes = batch * channels
    grad = torch.nn.grad.conv2d_weight(
        _planes(_pad(x, p)), (planes, 1, p, p), _planes(r.to(x.dtype)), stride=scale, groups=planes
    )
    return grad.reshape(batch, channels, p, p).sum(1) / (channels * r.shape[-2] * r.shape[-1])


def kernel_gradient_by_correlation(x: Tensor, r: Tensor, p: int, scale: int) -> Tensor:
    """:func:`kernel_gradient` as a forward convolution: each padded plane correlated with its
    residual dilated by s, cropped to p×p. Same result; forward operators only, as an exporter
    (ONNX) needs them, at the cost of an h×w filter."""
    batch, channels, height, width = x.shape
    h, w = r.shape[-2:]
    if r.shape != (batch, channels, height // scale, width // scale):
        raise ValueError(
            f"residual shape {tuple(r.shape)} does not match image {tuple(x.shape)} at x{scale}"
        )
    planes = batch * channels
    grad = F.conv2d(
        _planes(_pad(x, p)),
        r.to(x.dtype).reshape(planes, 1, h, w),
        dilation=scale,
        groups=planes,
    )[..., :p, :p]
    return grad.reshape(batch, channels, p, p).sum(1) / (channels * h * w)


@dataclass(frozen=True)
class Operators:
    """The four operators K-net and X-net are built on, in one formulation; the network takes one
    of these (:data:`OURS` by default)."""

    blur_downsample: Callable[[Tensor, Tensor, int], Tensor]
    transpose_upsample: Callable[[Tensor, Tensor, int], Tensor]
    transpose_ones: Callable[[Tensor, tuple[int, int], int], Tensor]
    kernel_gradient: Callable[[Tensor, Tensor, int, int], Tensor]


OURS = Operators(blur_downsample, transpose_upsample, transpose_ones, kernel_gradient)
# What an exporter can trace: forward operators only.
EXPORTABLE = replace(OURS, kernel_gradient=kernel_gradient_by_correlation)
