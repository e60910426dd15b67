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
The three convolutions these operators are made of (the strided correlation, its transpose in
the image and its transpose in the kernel) are each other's gradients, and autograd is given
them so (``_Correlate``, ``_Spread``, ``_Taps``): every forward and backward pass then runs
forward convolutions only, which oneDNN runs 3-5× faster than its backward of a depthwise p×p
convolution. Under ``torch.compile`` the plain convolutions go to Inductor, which differentiates
them itself (faster there, and the only form it compiles for images of changing size); under
``torch.export`` (ONNX) the kernel gradient is the forward convolution.

The convolutions are depthwise: the B·C image planes are the channels of a single image, each
with its own filter (the sample's kernel, repeated over colours), the form oneDNN and cuDNN
run fastest (2-4× faster on CPU than using the batch as groups and the colours as the batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.compiler import is_compiling, is_exporting

__all__ = [
    "Operators",
    "OURS",
    "full_precision",
    "check_shapes",
    "blur_downsample",
    "transpose_upsample",
    "transpose_ones",
    "adjusted_gradient",
    "kernel_gradient",
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


def _filters(k: Tensor, channels: int) -> Tensor:
    """B×p×q → (B·C)×1×p×q: each sample's filter once per colour, the depthwise filters."""
    batch, p, q = k.shape
    return k.unsqueeze(1).expand(batch, channels, p, q).reshape(-1, 1, p, q)


def _correlate(xp: Tensor, k: Tensor, scale: int) -> Tensor:
    """The strided valid correlation: B×C×L×M, B×p×p → B×C×h×w, ``xp[s·i+u, s·j+v]·k[u, v]``."""
    batch, channels = xp.shape[:2]
    y = F.conv2d(_planes(xp), _filters(k, channels), stride=scale, groups=batch * channels)
    return y.reshape(batch, channels, *y.shape[-2:])


def _spread(e: Tensor, k: Tensor, scale: int) -> Tensor:
    """The transpose of :func:`_correlate` in ``xp``: B×C×h×w, B×p×p → B×C×(h·s+p−1)×(w·s+p−1),
    the padded size of an image of h·s×w·s."""
    batch, channels = e.shape[:2]
    out = F.conv_transpose2d(
        _planes(e),
        _filters(k, channels),
        stride=scale,
        output_padding=scale - 1,
        groups=batch * channels,
    )
    return out.reshape(batch, channels, *out.shape[-2:])


def _taps(xp: Tensor, e: Tensor, p: int, scale: int) -> Tensor:
    """The transpose of :func:`_correlate` in ``k``, per plane: B×C×L×M, B×C×h×w → B×C×p×p.

    ``Σ_{i,j} e[i, j]·xp[s·i+u, s·j+v]``: each plane correlated with its own e dilated by s.
    """
    batch, channels, h, w = e.shape
    planes = batch * channels
    # the last s − 1 rows and columns of the padded image are reached by no tap
    reached = _planes(xp)[..., : xp.shape[-2] - scale + 1, : xp.shape[-1] - scale + 1]
    g = F.conv2d(reached, e.reshape(planes, 1, h, w), dilation=scale, groups=planes)
    return g.reshape(batch, channels, p, p)


class _Correlate(torch.autograd.Function):
    """:func:`_correlate` with its gradients as forward convolutions (:func:`_spread`,
    :func:`_taps`): oneDNN's backward of a depthwise p×p convolution is several times slower."""

    @staticmethod
    def forward(ctx, xp: Tensor, k: Tensor, scale: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(xp, k)
        ctx.scale = scale
        return _correlate(xp, k, scale)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        xp, k = ctx.saved_tensors
        need_xp, need_k, _ = ctx.needs_input_grad
        grad_xp = _Spread.apply(g, k, ctx.scale) if need_xp else None
        grad_k = _Taps.apply(xp, g, k.shape[-1], ctx.scale).sum(1) if need_k else None
        return grad_xp, grad_k, None


class _Spread(torch.autograd.Function):
    """:func:`_spread`, its gradients as :func:`_correlate` and :func:`_taps`."""

    @staticmethod
    def forward(ctx, e: Tensor, k: Tensor, scale: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(e, k)
        ctx.scale = scale
        return _spread(e, k, scale)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        e, k = ctx.saved_tensors
        need_e, need_k, _ = ctx.needs_input_grad
        grad_e = _Correlate.apply(g, k, ctx.scale) if need_e else None
        grad_k = _Taps.apply(g, e, k.shape[-1], ctx.scale).sum(1) if need_k else None
        return grad_e, grad_k, None


class _Taps(torch.autograd.Function):
    """:func:`_taps`, its gradients as :func:`_spread` and :func:`_correlate` with per-plane
    filters."""

    @staticmethod
    def forward(ctx, xp: Tensor, e: Tensor, p: int, scale: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(xp, e)
        ctx.scale = scale
        return _taps(xp, e, p, scale)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        xp, e = ctx.saved_tensors
        need_xp, need_e, _, _ = ctx.needs_input_grad
        # every plane an image of one channel, so that g's B·C planes are its kernels
        filters = g.reshape(-1, *g.shape[-2:])
        grad_xp = grad_e = None
        if need_xp:
            plane_e = e.reshape(-1, 1, *e.shape[-2:])
            grad_xp = _Spread.apply(plane_e, filters, ctx.scale).reshape(xp.shape)
        if need_e:
            plane_xp = xp.reshape(-1, 1, *xp.shape[-2:])
            grad_e = _Correlate.apply(plane_xp, filters, ctx.scale).reshape(e.shape)
        return grad_xp, grad_e, None, None


def _differentiable(function: type[torch.autograd.Function], plain: Callable, *args):
    """``function.apply(*args)``; under torch.compile and torch.export the ``plain`` convolution,
    which they differentiate themselves."""
    return plain(*args) if is_compiling() else function.apply(*args)


def blur_downsample(x: Tensor, k: Tensor, scale: int) -> Tensor:
    """``A_k x = (x ⊗ k)↓s`` (Eq. 1): B×C×H×W, B×p×p → B×C×(H/s)×(W/s), one strided convolution.

    The residuals of K-net (e_k, Eq. 9) and X-net (E_x, Eq. 10) are ``blur_downsample(x, k) − y``.
    """
    check_shapes(x, k, scale)
    xp, k = _pad(x, k.shape[-1]), k.to(x.dtype)
    return _differentiable(_Correlate, _correlate, xp, k, scale)


def transpose_upsample(e: Tensor, k: Tensor, scale: int) -> Tensor:
    """``k ⊗ₛᵀ e`` (Eq. 8; G_x of Eq. 10), the transpose of the zero-padded ``A_k``:
    B×C×h×w → B×C×(h·s)×(w·s)."""
    if e.dim() != 4:
        raise ValueError(f"residual must be B×C×h×w, got shape {tuple(e.shape)}")
    _check_kernels(k, e.shape[0], scale)
    height, width = e.shape[-2] * scale, e.shape[-1] * scale
    p = k.shape[-1]
    full = _differentiable(_Spread, _spread, e, k.to(e.dtype), scale)
    return full[..., p // 2 : p // 2 + height, p // 2 : p // 2 + width]


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
    ``½‖A_k x − y‖² / (C·h·w)`` for ``r = A_k x − y``: each padded plane correlated with its
    residual dilated by s (a forward convolution, so exporters can trace it). It is
    differentiable in ``x`` and ``r``.
    """
    batch, channels, height, width = x.shape
    if r.shape != (batch, channels, height // scale, width // scale):
        raise ValueError(
            f"residual shape {tuple(r.shape)} does not match image {tuple(x.shape)} at x{scale}"
        )
    xp, r = _pad(x, p), r.to(x.dtype)
    if is_exporting():
        grad = _taps(xp, r, p, scale)
    elif is_compiling():
        # Inductor cannot lower a convolution whose filter (r) changes size with the image
        planes = batch * channels
        grad = torch.nn.grad.conv2d_weight(
            _planes(xp), (planes, 1, p, p), _planes(r), stride=scale, groups=planes
        ).reshape(batch, channels, p, p)
    else:
        grad = _Taps.apply(xp, r, p, scale)
    return grad.sum(1) / (channels * r.shape[-2] * r.shape[-1])


@dataclass(frozen=True)
class Operators:
    """The four operators K-net and X-net are built on, in one formulation; the network takes one
    of these (:data:`OURS` by default)."""

    blur_downsample: Callable[[Tensor, Tensor, int], Tensor]
    transpose_upsample: Callable[[Tensor, Tensor, int], Tensor]
    transpose_ones: Callable[[Tensor, tuple[int, int], int], Tensor]
    kernel_gradient: Callable[[Tensor, Tensor, int, int], Tensor]


OURS = Operators(blur_downsample, transpose_upsample, transpose_ones, kernel_gradient)
