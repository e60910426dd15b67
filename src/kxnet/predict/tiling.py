"""Restoring a large image tile by tile with kernels estimated once for the whole image.

KXNet's kernel is global: it is estimated once (on the whole image or a central crop) and the
per-stage kernels K⁽¹⁾ … K⁽ᵀ⁾ of that run are given to X-net for every tile
(``KXNet.forward(lr, stage_kernels=…)``). With the kernels fixed, an output pixel depends only
on the LR pixels within :func:`receptive_radius` of it, so a tile that sees that much context on
every side reproduces the untiled result on its core. Contexts are clipped at the image border
(never padded), so border tiles see the true border and the network's own reflect padding there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from kxnet.nn.kxnet import KXNet

__all__ = [
    "Tile",
    "receptive_radius",
    "min_input_size",
    "plan_tiles",
    "run_tile",
    "central_crop",
]

_PROXNET_REACH = 9
_BICUBIC_REACH = 2


def receptive_radius(scale: int, kernel_size: int, stages: int) -> int:
    """LR pixels of context per side that make a tile exact: ``2 + T·(9 + ⌊r/s⌋ + ⌈r/s⌉)``.

    r = p//2. Bicubic X⁽⁰⁾ reaches 2 LR pixels (the image auxiliary variable 1); in each stage the
    residual ``A_k X − Y`` and its transpose ``k ⊗ₛᵀ ·`` together reach ``⌊r/s⌋ + ⌈r/s⌉`` LR
    pixels and proxNet_X's nine 3×3 convolutions reach 9. The adjuster ``k ⊗ₛᵀ 1`` depends on
    the distance to the image border, which stays within the same reach. This bounds the
    dependence exactly and is tight to within one pixel (the bicubic taps of the sub-pixel rows
    that the blur reaches first can fall one short).
    """
    r = kernel_size // 2
    per_stage = _PROXNET_REACH + r // scale + -(-r // scale)
    return _BICUBIC_REACH + stages * per_stage


def min_input_size(scale: int, kernel_size: int, stages: int) -> int:
    """The smallest LR side the network takes: reflect padding by r = p//2 needs r < s·h."""
    return (kernel_size // 2) // scale + 1 if stages else 1


@dataclass(frozen=True)
class Tile:
    """A core (the LR pixels this tile restores) and its context (the LR window it is fed).

    Both are (top, left, bottom, right) in LR pixels, bottom and right exclusive.
    """

    core: tuple[int, int, int, int]
    context: tuple[int, int, int, int]

    def window(self, lr: Tensor) -> Tensor:
        """The context of the tile in a whole LR image (…×h×w)."""
        top, left, bottom, right = self.context
        return lr[..., top:bottom, left:right]

    def hr_crop(self, scale: int) -> tuple[slice, slice]:
        """Where the core lies in the HR output of the context."""
        top, left, bottom, right = self.core
        ctop, cleft = self.context[:2]
        return (
            slice((top - ctop) * scale, (bottom - ctop) * scale),
            slice((left - cleft) * scale, (right - cleft) * scale),
        )


def _segments(length: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(core start, core end, context start, context end) along one axis."""
    if length <= size:
        return [(0, length, 0, length)]
    core = size - 2 * overlap
    if core < 1:
        raise ValueError(f"tile size {size} leaves no core inside an overlap of {overlap}")
    count = -(-length // core)
    bounds = [i * length // count for i in range(count + 1)]
    return [
        (a, b, max(0, a - overlap), min(length, b + overlap))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def plan_tiles(height: int, width: int, size: int, overlap: int) -> list[list[Tile]]:
    """Rows of tiles whose cores partition an h×w LR image; contexts are at most size×size.

    An axis no longer than ``size`` is not split. Otherwise cores of nearly equal length, at
    most ``size − 2·overlap``, are widened by ``overlap`` on each side and clipped to the image.
    """
    rows = _segments(height, size, overlap)
    cols = _segments(width, size, overlap)
    return [
        [Tile((r0, c0, r1, c1), (rc0, cc0, rc1, cc1)) for c0, c1, cc0, cc1 in cols]
        for r0, r1, rc0, rc1 in rows
    ]


def run_tile(
    model: KXNet, window: Tensor, tile: Tile, stage_kernels: Sequence[Tensor]
) -> list[Tensor]:
    """The per-stage HR images (B×3×ch·s×cw·s) of a tile's core from its context ``window``."""
    out = model(window, stage_kernels=stage_kernels)
    rows, cols = tile.hr_crop(model.scale)
    return [x[..., rows, cols] for x in out.images]


def central_crop(lr: Tensor, size: int) -> Tensor:
    """The central window of at most size×size LR pixels (the whole image if it is smaller)."""
    height, width = lr.shape[-2:]
    crop_h, crop_w = min(height, size), min(width, size)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return lr[..., top : top + crop_h, left : left + crop_w]
