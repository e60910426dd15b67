"""The realistic training degradation: the paper's blur and downsampling, then what real LR
photos carry (``data/degradation=realistic``).

After :class:`~kxnet.data.synthesis.SeededBlurDownsample` (whose Gaussian kernel stays the
batch's ground-truth kernel), each round applies, each with its own probability per sample and
its own ranges: motion blur (kornia's ``RandomMotionBlur``), Poisson-like shot noise, white
Gaussian noise (kornia's ``RandomGaussianNoise``) and JPEG compression (kornia's ``RandomJPEG``,
``kornia.enhance.jpeg_codec_differentiable``), in that order, on the LR image; a second round of
the same operators may follow, then the clamp and 8-bit rounding. Every parameter comes from the
step's generator (:class:`~kxnet.data.synthesis.Seeded`).

Batch entries (B values each, ``_2`` appended for the second round): ``motion_size``,
``motion_angle`` (degrees), ``motion_direction``, ``poisson_peak``, ``noise`` (σ, 0–255 units)
and ``jpeg_quality``; NaN where the operator was not applied (``noise``: 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from kornia.augmentation import IntensityAugmentationBase2D, RandomJPEG, RandomMotionBlur
from torch import Tensor

from kxnet.data.synthesis import (
    Degradation,
    Quantize,
    Seeded,
    SeededBlurDownsample,
    SeededGaussianNoise,
    uniform,
)

__all__ = [
    "OPERATORS",
    "SeededJPEG",
    "SeededMotionBlur",
    "SeededPoissonNoise",
    "realistic_degradation",
]


class SeededMotionBlur(Seeded, RandomMotionBlur):
    """kornia's ``RandomMotionBlur`` (reflect border) on the LR image.

    Args:
        kernel_size: range of the odd motion-kernel size, one size per batch (as kornia draws it).
        angle: range of the motion direction in degrees (anti-clockwise).
        direction: range of kornia's direction in [−1, 1] (0: even weight along the line).
        p: probability per sample.
    """

    def __init__(
        self,
        kernel_size: Sequence[int] = (3, 7),
        angle: Sequence[float] = (-180.0, 180.0),
        direction: Sequence[float] = (-1.0, 1.0),
        p: float = 0.5,
        suffix: str = "",
    ) -> None:
        low, high = (int(v) for v in kernel_size)
        if not (3 <= low <= high and low % 2 and high % 2):
            raise ValueError(
                f"motion_blur kernel_size must be odd sizes 3 <= a <= b, got {low, high}"
            )
        super().__init__((low, high), tuple(angle), tuple(direction), border_type="reflect", p=p)
        self.size_range, self.angle_range, self.direction_range = (low, high), angle, direction
        self.suffix = suffix

    def draw(self, batch_shape, generator, dtype):
        batch = batch_shape[0]
        low, high = self.size_range
        half = torch.randint(
            low // 2, high // 2 + 1, (1,), generator=generator, device=generator.device
        )
        return {
            "ksize_factor": (2 * half + 1).to(torch.int32).expand(batch),
            "angle_factor": uniform([batch], self.angle_range, generator, dtype),
            "direction_factor": uniform([batch], self.direction_range, generator, dtype),
            "idx": torch.zeros(1, dtype=torch.long),
        }

    def entries(self, params):
        angle = params["angle_factor"]
        return {
            f"motion_size{self.suffix}": self.only_applied(
                params, params["ksize_factor"].to(angle)
            ),
            f"motion_angle{self.suffix}": self.only_applied(params, angle),
            f"motion_direction{self.suffix}": self.only_applied(params, params["direction_factor"]),
        }


class SeededPoissonNoise(Seeded, IntensityAugmentationBase2D):
    """Signal-dependent shot noise: ``y + sqrt(max(y, 0) / peak) · ε``, ε ~ N(0, 1).

    The Gaussian approximation of ``Poisson(peak · y) / peak``, a sensor that collects ``peak``
    photo-electrons at white (variance ``y / peak``, Foi et al. 2008). ``peak`` is drawn
    log-uniformly from its range per sample; the field ε is drawn with the parameters (B×C×h×w),
    as kornia's Gaussian noise is, so a draw replays exactly.
    """

    def __init__(
        self, peak: Sequence[float] = (100.0, 3000.0), p: float = 0.5, suffix: str = ""
    ) -> None:
        super().__init__(p=p)
        low, high = (float(v) for v in peak)
        if not 0 < low <= high:
            raise ValueError(f"poisson_noise peak must be a range 0 < a <= b, got {list(peak)}")
        self.peak = (low, high)
        self.suffix = suffix

    def draw(self, batch_shape, generator, dtype):
        log_peak = uniform([batch_shape[0]], [math.log(v) for v in self.peak], generator, dtype)
        eps = torch.randn(
            tuple(batch_shape), generator=generator, device=generator.device, dtype=dtype
        )
        return {"peak": log_peak.exp(), "shot_noise": eps}

    def entries(self, params):
        return {f"poisson_peak{self.suffix}": self.only_applied(params, params["peak"])}

    def apply_transform(self, input, params, flags, transform=None) -> Tensor:
        peak = params["peak"].view(-1, 1, 1, 1)
        return input + params["shot_noise"] * (input.clamp(min=0.0) / peak).sqrt()


class SeededJPEG(Seeded, RandomJPEG):
    """kornia's ``RandomJPEG`` (differentiable JPEG coding and decoding, 4:2:0) at a quality
    ~ U[quality] per sample; its input is clamped to [0, 1] first, as kornia does."""

    def __init__(
        self, quality: Sequence[float] = (30.0, 95.0), p: float = 0.5, suffix: str = ""
    ) -> None:
        super().__init__(jpeg_quality=tuple(float(q) for q in quality), p=p)
        self.quality = (float(quality[0]), float(quality[1]))
        self.suffix = suffix

    def draw(self, batch_shape, generator, dtype):
        return {"jpeg_quality": uniform([batch_shape[0]], self.quality, generator, dtype)}

    def entries(self, params):
        return {f"jpeg_quality{self.suffix}": self.only_applied(params, params["jpeg_quality"])}


# The operators of a round, in the order they are applied.
OPERATORS: dict[str, type[Seeded]] = {
    "motion_blur": SeededMotionBlur,
    "poisson_noise": SeededPoissonNoise,
    "gaussian_noise": SeededGaussianNoise,
    "jpeg": SeededJPEG,
}


def _round(operators: Mapping[str, Any] | None, suffix: str) -> list[Seeded]:
    """The operators of one round: ``{name: {p, ranges…}}``; None or p = 0 leaves one out."""
    operators = dict(operators or {})
    unknown = set(operators) - set(OPERATORS)
    if unknown:
        raise ValueError(f"unknown degradation operators {sorted(unknown)}: use {list(OPERATORS)}")
    on = {name: dict(o) for name, o in operators.items() if o is not None and o.get("p", 1) > 0}
    return [OPERATORS[name](**on[name], suffix=suffix) for name in OPERATORS if name in on]


def realistic_degradation(
    setting: str,
    scale: int,
    kernel_size: int | None = None,
    sigma_range: Sequence[float] | None = None,
    first_round: Mapping[str, Any] | None = None,
    second_round: Mapping[str, Any] | None = None,
    quantize: bool = True,
) -> Degradation:
    """The paper's blur and downsampling (setting, scale, kernel_size, sigma_range as in
    :class:`~kxnet.data.synthesis.SeededBlurDownsample`), then the operators of ``first_round``
    and ``second_round`` (each ``{motion_blur, poisson_noise, gaussian_noise, jpeg}``, an
    operator's options, or None or p = 0 to leave it out; a round None: none), the clamp and,
    with ``quantize``, 8-bit rounding."""
    blur = SeededBlurDownsample(setting, scale, kernel_size, sigma_range)
    operators = _round(first_round, "") + _round(second_round, "_2")
    return Degradation(blur, *operators, Quantize(quantize))
