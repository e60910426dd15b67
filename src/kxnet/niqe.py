"""NIQE, a no-reference quality figure: lower is closer to pristine natural images.

Mittal, Soundararajan and Bovik, "Making a 'Completely Blind' Image Quality Analyzer", IEEE
Signal Processing Letters 20(3), 2013. The luma is normalised by its local mean and deviation
(MSCN coefficients, Eq. 1, a 7×7 Gaussian window, replicated borders), cut into 96×96 blocks
(the image cropped to whole blocks from the top left), and each block described by 18 features
(Eq. 2-8): the generalised Gaussian shape and spread of the coefficients, and the asymmetric
generalised Gaussian (AGGD) shape, mean and two spreads of their products with the neighbour
to the right, below and on both diagonals. The same at half size (MATLAB ``imresize``, bicubic
with antialiasing) gives 18 more. A multivariate Gaussian fitted to the blocks' 36 features is
compared with the pristine one (Eq. 10):
``sqrt((ν₁ − ν₂)ᵀ ((Σ₁ + Σ₂) / 2)⁺ (ν₁ − ν₂))``.

The pristine Gaussian and the window are those of the authors' MATLAB release, shipped as
``niqe_pris_params.npz`` (copied from BasicSR, Apache-2.0: ``niqe_pris_params.LICENSE``). The
steps follow the MATLAB release (as BasicSR does): the luma is MATLAB's ``rgb2ycbcr`` Y of the
8-bit image, rounded; the AGGD shape is the grid point of 0.2:0.001:10 whose moment ratio is
nearest; features of a block with no negative or no positive value are NaN and the fit skips
them.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kxnet.metrics import quantize, rgb_to_y

__all__ = ["niqe", "niqe_y", "niqe_features", "matlab_downscale_matrix", "BLOCK"]

BLOCK = 96
_PARAMS = Path(__file__).with_name("niqe_pris_params.npz")
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@cache
def _pristine() -> tuple[Tensor, Tensor, Tensor]:
    """The pristine mean (36), covariance (36×36) and the 7×7 window, float64."""
    with np.load(_PARAMS) as params:
        return tuple(
            torch.from_numpy(params[key]).double()
            for key in ("mu_pris_param", "cov_pris_param", "gaussian_window")
        )


@cache
def _aggd_grid() -> tuple[Tensor, Tensor]:
    """Shapes α = 0.2:0.001:10 and their ratios Γ(2/α)² / (Γ(1/α)·Γ(3/α))."""
    alpha = torch.arange(9801, dtype=torch.float64) * 0.001 + 0.2
    ratio = torch.exp(
        2 * torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)
    )
    return alpha, ratio


def _gamma_ratio(a: Tensor, b: Tensor) -> Tensor:
    return torch.exp(torch.lgamma(a) - torch.lgamma(b))


def _aggd(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """AGGD shape α and left/right spreads βl, βr of each row of x (N×M) by moment matching."""
    negative, positive = x < 0, x > 0
    left = torch.sqrt((x.square() * negative).sum(1) / negative.sum(1))
    right = torch.sqrt((x.square() * positive).sum(1) / positive.sum(1))
    gamma_hat = left / right
    r_hat = x.abs().mean(1).square() / x.square().mean(1)
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    grid, ratio = _aggd_grid()
    alpha = grid[(ratio[None] - r_norm[:, None]).square().argmin(1)]
    spread = torch.sqrt(_gamma_ratio(1 / alpha, 3 / alpha))
    return alpha, left * spread, right * spread


def _block_features(blocks: Tensor) -> Tensor:
    """The 18 features of each MSCN block (N×b×b) → N×18."""
    flat = blocks.flatten(1)
    alpha, left, right = _aggd(flat)
    features = [alpha, (left + right) / 2]
    for shift in _SHIFTS:
        pairs = (blocks * torch.roll(blocks, shift, dims=(1, 2))).flatten(1)
        alpha, left, right = _aggd(pairs)
        mean = (right - left) * _gamma_ratio(2 / alpha, 1 / alpha)
        features += [alpha, mean, left, right]
    return torch.stack(features, 1)


def _mscn(y: Tensor, window: Tensor) -> Tensor:
    """(y − μ) / (σ + 1) with μ, σ the local mean and deviation (window, replicated borders)."""
    pad = window.shape[-1] // 2
    stacked = F.pad(torch.stack([y, y.square()])[:, None], [pad] * 4, mode="replicate")
    mu, second = F.conv2d(stacked, window[None, None])[:, 0]
    sigma = torch.sqrt((second - mu.square()).abs())
    return (y - mu) / (sigma + 1)


def _cubic(x: Tensor) -> Tensor:
    """MATLAB imresize's cubic kernel (a = −0.5)."""
    a = x.abs()
    inner = (1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1)
    outer = (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2))
    return inner + outer


def matlab_downscale_matrix(length: int, scale: float) -> Tensor:
    """The ⌈length·scale⌉×length matrix of MATLAB ``imresize`` (bicubic, antialiasing, scale < 1)
    along one axis: the kernel widened by 1/scale, taps past the border mirrored."""
    out = math.ceil(length * scale)
    width = 4 / scale
    centre = torch.arange(1, out + 1, dtype=torch.float64) / scale + 0.5 * (1 - 1 / scale)
    first = torch.floor(centre - width / 2)
    taps = first[:, None] + torch.arange(math.ceil(width) + 2, dtype=torch.float64)
    weights = scale * _cubic(scale * (centre[:, None] - taps))
    weights /= weights.sum(1, keepdim=True)
    mirror = torch.cat([torch.arange(length), torch.arange(length - 1, -1, -1)])
    index = mirror[(taps.long() - 1) % (2 * length)]
    matrix = torch.zeros(out, length, dtype=torch.float64)
    return matrix.scatter_add_(1, index, weights)


def niqe_features(y: Tensor, block: int = BLOCK) -> Tensor:
    """The 36 features of every block of a luma plane (h×w, 0…255) → N×36.

    The plane is cropped to whole blocks from the top left; at least one block is needed.
    """
    rows, cols = y.shape[0] // block, y.shape[1] // block
    if rows == 0 or cols == 0:
        raise ValueError(
            f"NIQE needs an image of at least {block}×{block} pixels, got {tuple(y.shape)}"
        )
    _, _, window = _pristine()
    y = y[: rows * block, : cols * block].double()
    features = []
    for size in (block, block // 2):
        mscn = _mscn(y, window)
        blocks = mscn.reshape(rows, size, cols, size).permute(2, 0, 1, 3).reshape(-1, size, size)
        features.append(_block_features(blocks))
        height, width = y.shape
        y = matlab_downscale_matrix(height, 0.5) @ y @ matlab_downscale_matrix(width, 0.5).T
    return torch.cat(features, 1)


def niqe_y(y: Tensor) -> float:
    """NIQE of a luma plane (h×w, 0…255, at least 96×96)."""
    mu_pristine, cov_pristine, _ = _pristine()
    features = niqe_features(y)
    mean = features.nanmean(0)
    complete = features[~features.isnan().any(1)]
    cov = torch.cov(complete.T)
    difference = (mu_pristine[0] - mean)[None]
    inverse = torch.linalg.pinv((cov_pristine + cov) / 2)
    return math.sqrt((difference @ inverse @ difference.T).item())


def niqe(rgb: Tensor) -> float:
    """NIQE of an RGB image (3×h×w in [0, 1], at least 96×96): of its MATLAB Y, 8-bit rounded."""
    if rgb.dim() != 3 or rgb.shape[0] != 3:
        raise ValueError(f"niqe expects a 3×h×w image, got shape {tuple(rgb.shape)}")
    return niqe_y(rgb_to_y(quantize(rgb[None]))[0, 0].round())
