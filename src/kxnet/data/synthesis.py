"""Training degradations synthesised on the batch's device: ``y = (x ⊗ k)↓s + n`` (SPEC §1-2).

Data-loader workers only read and crop HR images; :class:`Degradation` turns a batch of HR crops
into LR inputs with fresh random kernels (and noise in Setting 2) wherever the batch lives, GPU
included. Every draw comes from an explicit ``torch.Generator``; :func:`step_generator` gives
each (seed, rank, step) its own stream, so two ranks never draw the same kernels and a run can
be repeated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kxnet import kernels, physics

__all__ = ["Degradation", "step_generator"]


def step_generator(seed: int, rank: int, step: int, device: torch.device | str) -> torch.Generator:
    """A generator on ``device`` seeded from a hash of (seed, rank, step): one stream per step."""
    digest = hashlib.blake2b(f"{seed}/{rank}/{step}".encode(), digest_size=8).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest, "little") >> 1)
    return generator


class Degradation(nn.Module):
    """Random blur, s-fold downsampling and noise for a batch of HR crops.

    Args:
        setting: "iso" (Setting 1: isotropic kernels, no noise) or "aniso" (Setting 2: rotated
            anisotropic kernels, θ ~ U[−π, π], and noise).
        scale: SR factor s.
        kernel_size: p; defaults to the setting's (21, or 11/15/21 at x2/x3/x4 in Setting 2).
        sigma_range: range of σ (iso) or of σx and σy (aniso); defaults to SPEC §2.
        noise_max: noise σ is drawn from U[0, noise_max] per sample, in 0–255 units; defaults to
            0 for "iso" and 25 for "aniso".
        quantize: round the LR image to 8 bit after the noise and the clamp, as the authors'
            training does (``round(255·LR)/255``) and as the test sets are (SPEC §5).

    ``forward(hr, generator)`` with hr B×3×H×W (H, W multiples of s) returns the training batch
    ``{"lr": B×3×(H/s)×(W/s), "hr", "kernel": B×p×p, "kernel_params": B×3 (σx, σy, θ; iso: σ, σ,
    0), "noise": B}`` on hr's device. LR is clamped to [0, 1] and, with ``quantize``, on the 8-bit
    grid.
    """

    def __init__(
        self,
        setting: str,
        scale: int,
        kernel_size: int | None = None,
        sigma_range: Sequence[float] | None = None,
        noise_max: float | None = None,
        quantize: bool = True,
    ) -> None:
        super().__init__()
        self.setting = str(setting)
        self.scale = int(scale)
        default_p = kernels.kernel_size(self.setting, self.scale)
        self.kernel_size = int(kernel_size) if kernel_size is not None else default_p
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        low, high = (
            sigma_range
            if sigma_range is not None
            else kernels.train_sigma_range(self.setting, self.scale)
        )
        if not 0 < low <= high:
            raise ValueError(f"sigma_range must satisfy 0 < low <= high, got [{low}, {high}]")
        self.sigma_range = (float(low), float(high))
        if noise_max is None:
            noise_max = 0.0 if self.setting == "iso" else 25.0
        if noise_max < 0:
            raise ValueError(f"noise_max must be >= 0, got {noise_max}")
        self.noise_max = float(noise_max)
        self.quantize = bool(quantize)

    def extra_repr(self) -> str:
        return (
            f"setting={self.setting}, scale={self.scale}, kernel_size={self.kernel_size}, "
            f"sigma_range={self.sigma_range}, noise_max={self.noise_max}, quantize={self.quantize}"
        )

    def sample_kernels(
        self, batch: int, generator: torch.Generator, device, dtype
    ) -> tuple[Tensor, Tensor]:
        """``batch`` random kernels B×p×p and their parameters B×3 (σx, σy, θ)."""
        args = (batch, self.kernel_size, self.sigma_range, generator, device, dtype)
        if self.setting == "iso":
            k, sigma = kernels.random_isotropic(*args)
            return k, torch.stack([sigma, sigma, torch.zeros_like(sigma)], dim=1)
        return kernels.random_anisotropic(*args)

    def forward(self, hr: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        if hr.dim() != 4 or hr.shape[1] != 3:
            raise ValueError(f"Degradation expects HR crops B×3×H×W, got {tuple(hr.shape)}")
        dtype = hr.dtype if hr.is_floating_point() else torch.float32
        hr = hr.to(dtype)
        batch = hr.shape[0]
        k, params = self.sample_kernels(batch, generator, hr.device, dtype)
        lr = physics.blur_downsample(hr, k, self.scale)
        noise = torch.zeros(batch, device=hr.device, dtype=dtype)
        if self.noise_max > 0:
            noise = self.noise_max * torch.rand(
                batch, generator=generator, device=hr.device, dtype=dtype
            )
            eps = torch.randn(lr.shape, generator=generator, device=hr.device, dtype=dtype)
            lr = lr + eps * (noise / 255.0).view(-1, 1, 1, 1)
        lr = lr.clamp(0.0, 1.0)
        if self.quantize:
            lr = lr.mul(255.0).round_().div_(255.0)
        return {
            "lr": lr,
            "hr": hr,
            "kernel": k,
            "kernel_params": params,
            "noise": noise,
        }
