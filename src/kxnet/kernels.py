"""Gaussian blur kernels: isotropic and rotated anisotropic, random draws and fixed banks (§5.1).

Every kernel is p×p (p odd) on the grid −(p//2) … p//2, centred at index p//2, non-negative and
normalised to sum 1. ``x`` is the column (width) offset and ``y`` the row (height) offset; an
anisotropic kernel has covariance ``Σ = R(θ)·diag(σx², σy²)·R(θ)ᵀ`` in the (x, y) frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from kxnet.description import SETTINGS, kernel_size

__all__ = [
    "isotropic_gaussian",
    "anisotropic_gaussian",
    "random_isotropic",
    "random_anisotropic",
    "test_bank",
    "auxiliary_bank",
]

_GAUSSIAN8 = {2: (0.8, 1.6), 3: (1.35, 2.40), 4: (1.8, 3.2)}
_SETTING2_SIGMAS = ((0.8, 1.6), (2.0, 4.0))
_ANGLES_DEG = (0.0, 45.0, 90.0, 135.0)


def _grid(p: int, device=None, dtype=None) -> tuple[Tensor, Tensor]:
    if p < 1 or p % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer, got p={p}")
    axis = torch.arange(p, device=device, dtype=dtype) - p // 2
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return xx, yy


def _normalise(k: Tensor) -> Tensor:
    return k / k.sum(dim=(-2, -1), keepdim=True)


def isotropic_gaussian(sigma: Tensor, p: int) -> Tensor:
    """Isotropic Gaussians ``∝ exp(−(x²+y²)/(2σ²))``: σ of shape B → B×p×p (σ's device/dtype)."""
    sigma = torch.as_tensor(sigma).reshape(-1, 1, 1)
    if not sigma.is_floating_point():
        sigma = sigma.float()
    xx, yy = _grid(p, sigma.device, sigma.dtype)
    return _normalise(torch.exp(-(xx**2 + yy**2) / (2 * sigma**2)))


def anisotropic_gaussian(sigma_x: Tensor, sigma_y: Tensor, theta: Tensor, p: int) -> Tensor:
    """Rotated Gaussians ``∝ exp(−½·[x y]Σ⁻¹[x y]ᵀ)``, θ in radians: each of shape B → B×p×p."""
    sigma_x = torch.as_tensor(sigma_x).reshape(-1, 1, 1)
    if not sigma_x.is_floating_point():
        sigma_x = sigma_x.float()
    sigma_y = torch.as_tensor(sigma_y, dtype=sigma_x.dtype, device=sigma_x.device).reshape(-1, 1, 1)
    theta = torch.as_tensor(theta, dtype=sigma_x.dtype, device=sigma_x.device).reshape(-1, 1, 1)
    xx, yy = _grid(p, sigma_x.device, sigma_x.dtype)
    cos, sin = torch.cos(theta), torch.sin(theta)
    u = cos * xx + sin * yy
    v = -sin * xx + cos * yy
    return _normalise(torch.exp(-0.5 * (u**2 / sigma_x**2 + v**2 / sigma_y**2)))


def _uniform(n: int, low: float, high: float, generator, device, dtype) -> Tensor:
    if not low <= high:
        raise ValueError(f"empty range [{low}, {high}]")
    u = torch.rand(n, generator=generator, device=device, dtype=dtype)
    return low + (high - low) * u


def random_isotropic(
    batch: int,
    p: int,
    sigma_range: Sequence[float],
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
) -> tuple[Tensor, Tensor]:
    """B isotropic kernels with σ ~ U[sigma_range]: returns (B×p×p kernels, σ of shape B)."""
    sigma = _uniform(batch, *sigma_range, generator, device, dtype)
    return isotropic_gaussian(sigma, p), sigma


def random_anisotropic(
    batch: int,
    p: int,
    sigma_range: Sequence[float],
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
) -> tuple[Tensor, Tensor]:
    """B rotated kernels, σx, σy ~ U[sigma_range], θ ~ U[−π, π]: (B×p×p, B×3 of σx, σy, θ)."""
    params = torch.stack(
        [
            _uniform(batch, *sigma_range, generator, device, dtype),
            _uniform(batch, *sigma_range, generator, device, dtype),
            _uniform(batch, -math.pi, math.pi, generator, device, dtype),
        ],
        dim=1,
    )
    return anisotropic_gaussian(params[:, 0], params[:, 1], params[:, 2], p), params


def test_bank(setting: str, scale: int, dtype=torch.float64) -> tuple[Tensor, list[dict]]:
    """The eight test kernels of a setting and scale: (8×p×p, their parameters).

    Setting 1 is "Gaussian8" (σ evenly spaced in the per-scale range, p = 21); Setting 2 is
    (σx, σy) ∈ {(0.8, 1.6), (2.0, 4.0)} × θ ∈ {0°, 45°, 90°, 135°} with p = 11/15/21.
    """
    p = kernel_size(setting, scale)
    if setting == "iso":
        sigmas = torch.linspace(*_GAUSSIAN8[scale], 8, dtype=dtype)
        params = [{"sigma": round(float(s), 6)} for s in sigmas]
        return isotropic_gaussian(sigmas, p), params
    combos = [(sx, sy, t) for sx, sy in _SETTING2_SIGMAS for t in _ANGLES_DEG]
    sx, sy, deg = (torch.tensor(c, dtype=dtype) for c in zip(*combos, strict=True))
    params = [{"sigma_x": a, "sigma_y": b, "theta_deg": t} for a, b, t in combos]
    return anisotropic_gaussian(sx, sy, torch.deg2rad(deg), p), params


def auxiliary_bank(setting: str, p: int, dtype=torch.float32) -> Tensor:
    """The 24 kernels that initialise K-net's auxiliary variable: 24×p×p.

    Setting 1: isotropic, σ = linspace(0.2, 4.0, 24). Setting 2: anisotropic,
    σx ∈ {1.0, 2.5, 4.0} × σy ∈ {3.5, 5.0} × θ ∈ {0°, 45°, 90°, 135°} (in that nesting order).
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if setting == "iso":
        return isotropic_gaussian(torch.linspace(0.2, 4.0, 24, dtype=torch.float64), p).to(dtype)
    combos = [(sx, sy, t) for sx in (1.0, 2.5, 4.0) for sy in (3.5, 5.0) for t in _ANGLES_DEG]
    sx, sy, deg = (torch.tensor(c, dtype=torch.float64) for c in zip(*combos, strict=True))
    return anisotropic_gaussian(sx, sy, torch.deg2rad(deg), p).to(dtype)
