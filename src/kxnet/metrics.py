"""Image and kernel quality metrics as the paper's tables compute them: on the Y
channel of YCbCr (BT.601), with ``scale`` pixels cropped from every border.

PSNR and SSIM quantise both images to 8-bit RGB first (``round(clamp(x, 0, 1)·255)``), measure
on the Y channel of MATLAB's ``rgb2ycbcr`` (BT.601, Y in 16…235, kept as a float) or on RGB,
after cropping ``crop`` pixels from every border. PSNR is on the 0–255 range; SSIM is Wang et
al. 2004 with an 11×11 Gaussian window (σ = 1.5), "valid" filtering and C1 = (0.01·255)²,
C2 = (0.03·255)², averaged over pixels (and colour channels for RGB). Everything is computed in
float64. Training averages them over images and DDP ranks with the torchmetrics classes of
:mod:`kxnet.train.metrics` (not imported here: the evaluation and prediction commands start
without torchmetrics).
"""

from __future__ import annotations

import kornia
import torch
from torch import Tensor

__all__ = [
    "quantize",
    "rgb_to_y",
    "psnr",
    "ssim",
    "psnr_ssim",
    "kernel_error",
]

_Y_WEIGHTS = (65.481, 128.553, 24.966)
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_CPU_STRIP_ROWS = 32
_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2


def quantize(x: Tensor) -> Tensor:
    """8-bit quantisation: B×C×H×W in [0, 1] → float64 integers in 0…255."""
    return x.detach().to(torch.float64, copy=True).clamp_(0.0, 1.0).mul_(255.0).round_()


def rgb_to_y(rgb255: Tensor) -> Tensor:
    """MATLAB ``rgb2ycbcr`` luma, B×3×H×W on 0…255 → B×1×H×W: ``16 + 65.481·R + …``, R in [0, 1]."""
    r, g, b = rgb255.unbind(1)
    y = r * (_Y_WEIGHTS[0] / 255.0)
    y.add_(g, alpha=_Y_WEIGHTS[1] / 255.0).add_(b, alpha=_Y_WEIGHTS[2] / 255.0).add_(16.0)
    return y.unsqueeze(1)


def _prepare(
    sr: Tensor, hr: Tensor, crop: int, y_channel: bool, min_size: int
) -> tuple[Tensor, Tensor]:
    """Both images cropped, quantised and (if ``y_channel``) converted to Y, in float64."""
    if sr.dim() != 4 or sr.shape[1] != 3 or sr.shape != hr.shape:
        raise ValueError(
            f"metrics need two B×3×H×W images of one shape, got {tuple(sr.shape)} and "
            f"{tuple(hr.shape)}"
        )
    if crop < 0:
        raise ValueError(f"crop must be >= 0, got {crop}")
    height, width = sr.shape[-2] - 2 * crop, sr.shape[-1] - 2 * crop
    if min(height, width) < min_size:
        raise ValueError(
            f"image of {sr.shape[-2]}×{sr.shape[-1]} is too small to measure with crop {crop} "
            f"(needs at least {min_size} pixels left on each axis)"
        )
    window = (..., slice(crop, crop + height), slice(crop, crop + width))
    a, b = quantize(sr[window]), quantize(hr.to(sr.device)[window])
    return (rgb_to_y(a), rgb_to_y(b)) if y_channel else (a, b)


def _psnr(a: Tensor, b: Tensor) -> Tensor:
    mse = (a - b).pow_(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse)


def _ssim(a: Tensor, b: Tensor) -> Tensor:
    window = kornia.filters.get_gaussian_kernel1d(
        _SSIM_WINDOW, _SSIM_SIGMA, device=a.device, dtype=a.dtype
    )
    # Four local means: σa² + σb² needs only the mean of a² + b².
    moments = _valid_filter(torch.stack([a, b, a * a + b * b, a * b]), window.flatten())
    mu_a, mu_b, squares, ab = moments.unbind(0)
    mu_ab = mu_a * mu_b
    mu_squares = mu_a.pow_(2).add_(mu_b.pow_(2))
    num = (2 * mu_ab + _C1).mul_(ab.sub_(mu_ab).mul_(2).add_(_C2))
    den = (mu_squares + _C1).mul_(squares.sub_(mu_squares).add_(_C2))
    return num.div_(den).mean(dim=(1, 2, 3))


def psnr(sr: Tensor, hr: Tensor, crop: int, y_channel: bool = True) -> Tensor:
    """PSNR in dB on the 0–255 range, one value per image: B×3×H×W, B×3×H×W → (B,)."""
    return _psnr(*_prepare(sr, hr, crop, y_channel, 1))


def ssim(sr: Tensor, hr: Tensor, crop: int, y_channel: bool = True) -> Tensor:
    """Mean SSIM (11×11 Gaussian σ = 1.5, valid), one value per image: B×3×H×W ×2 → (B,)."""
    return _ssim(*_prepare(sr, hr, crop, y_channel, _SSIM_WINDOW))


def psnr_ssim(sr: Tensor, hr: Tensor, crop: int, y_channel: bool = True) -> tuple[Tensor, Tensor]:
    """:func:`psnr` and :func:`ssim` together, quantising and converting the images once."""
    a, b = _prepare(sr, hr, crop, y_channel, _SSIM_WINDOW)
    return _psnr(a, b), _ssim(a, b)


def _valid_filter(x: Tensor, window: Tensor) -> Tensor:
    """Separable "valid" correlation of the last two axes with a 1-D window of n taps.

    …×H×W → …×(H−n+1)×(W−n+1), as n shifted multiply-adds per axis: no padding to crop away.
    On a CPU the rows run in strips that stay in cache (SSIM is then several times faster than
    ``kornia.metrics.ssim`` in float64); on other devices in one piece.
    """
    taps = window.tolist()
    out_height = x.shape[-2] - len(taps) + 1
    strip = _CPU_STRIP_ROWS if x.device.type == "cpu" else out_height
    strips = [
        _valid_filter_strip(x[..., top : min(top + strip, out_height) + len(taps) - 1, :], taps)
        for top in range(0, out_height, strip)
    ]
    return strips[0] if len(strips) == 1 else torch.cat(strips, dim=-2)


def _valid_filter_strip(x: Tensor, taps: list[float]) -> Tensor:
    width = x.shape[-1] - len(taps) + 1
    rows = x[..., :width] * taps[0]
    for i, w in enumerate(taps[1:], start=1):
        rows.add_(x[..., i : i + width], alpha=w)
    height = x.shape[-2] - len(taps) + 1
    out = rows[..., :height, :] * taps[0]
    for i, w in enumerate(taps[1:], start=1):
        out.add_(rows[..., i : i + height, :], alpha=w)
    return out


def kernel_error(est: Tensor, true: Tensor) -> dict[str, Tensor]:
    """Per-kernel error of an estimate: B×p×p, B×p×p → ``{"l1": (B,), "psnr": (B,)}``.

    ``l1`` is the mean absolute difference (the kernel term of the training loss); ``psnr`` is
    ``10·log10(max(true)² / mean((est − true)²))``, the peak being the true kernel's maximum.
    """
    if est.dim() != 3 or est.shape != true.shape:
        raise ValueError(
            f"kernel_error needs two B×p×p kernels of one shape, got {tuple(est.shape)} and "
            f"{tuple(true.shape)}"
        )
    est = est.detach().to(torch.float64)
    true = true.detach().to(device=est.device, dtype=torch.float64)
    diff = est - true
    peak = true.flatten(1).amax(dim=1)
    return {
        "l1": diff.abs().mean(dim=(1, 2)),
        "psnr": 10.0 * torch.log10(peak**2 / diff.pow(2).mean(dim=(1, 2))),
    }
