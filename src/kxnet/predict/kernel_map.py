"""Kernels that vary across the frame (``kernel=tiled``): a blind run per tile, blended.

Real blur changes across a photo (defocus with depth, motion, lens fall-off). Here each tile of
:func:`~kxnet.predict.tiling.plan_tiles` is restored by the whole network on its context (the
tile with its overlap): K-net estimates the tile's own kernel, and X-net restores the tile with
it, stage by stage. Neighbouring tiles' HR images are blended across their shared boundary with
linear ramps of ``band`` LR pixels on either side (weights that sum to 1 everywhere), so that
the kernel change leaves no seam. The kernels, one per tile, make the kernel map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kxnet.predict.tiling import Tile, plan_tiles

__all__ = ["KernelMap", "blend_band", "ramp", "tiled_kernel_forward", "kernel_map_picture"]


@dataclass
class KernelMap:
    """The SR image (B×3×H×W) and the final kernel of each tile (rows×cols×B×p×p)."""

    sr: Tensor
    kernels: Tensor
    tiles: list[list[Tile]]


def blend_band(tiles: list[list[Tile]], overlap: int) -> int:
    """LR pixels each side of a core boundary over which neighbours are blended: half the
    overlap, and no more than half the shortest core (so that the ramps of a core never meet)."""
    shortest = min(min(t.core[2] - t.core[0], t.core[3] - t.core[1]) for r in tiles for t in r)
    return max(0, min(overlap, shortest) // 2)


def ramp(core: tuple[int, int], context: tuple[int, int], length: int, scale: int, band: int):
    """The blending weight along one axis at the HR pixels of ``context`` (LR, end exclusive):
    1 on the core, falling linearly to 0 over ``band`` LR pixels each side of a core boundary
    that is not the image's border."""
    start, end = core
    x = (torch.arange(context[0] * scale, context[1] * scale, dtype=torch.float64) + 0.5) / scale
    if band == 0:
        return ((x >= start) & (x < end)).double()
    weight = torch.ones_like(x)
    if start > 0:
        weight = torch.minimum(weight, ((x - (start - band)) / (2 * band)).clamp(0, 1))
    if end < length:
        weight = torch.minimum(weight, (((end + band) - x) / (2 * band)).clamp(0, 1))
    return weight


@torch.inference_mode()
def tiled_kernel_forward(model: nn.Module, lr: Tensor, size: int, overlap: int) -> KernelMap:
    """Restore lr (B×3×h×w) tile by tile, each tile with the kernels K-net estimates on its
    context; tiles of at most ``size``² LR pixels, ``overlap`` LR pixels of context a side."""
    s = model.scale
    batch, channels, height, width = lr.shape
    tiles = plan_tiles(height, width, size, overlap)
    band = blend_band(tiles, overlap)
    sr = lr.new_zeros(batch, channels, height * s, width * s)
    kernels = []
    for row in tiles:
        kernels.append([])
        for tile in row:
            top, left, bottom, right = tile.context
            out = model(tile.window(lr), keep_stages=False)
            rows = ramp((tile.core[0], tile.core[2]), (top, bottom), height, s, band)
            cols = ramp((tile.core[1], tile.core[3]), (left, right), width, s, band)
            weight = (rows[:, None] * cols[None]).to(sr.dtype)
            sr[..., top * s : bottom * s, left * s : right * s] += out.sr * weight
            kernels[-1].append(out.kernel)
    stacked = torch.stack([torch.stack(row) for row in kernels])
    return KernelMap(sr, stacked, tiles)


def kernel_map_picture(lr: Tensor, kernels: Tensor, tiles: list[list[Tile]]) -> Tensor:
    """A 3×H×W picture: the LR image (3×h×w) in dimmed gray, enlarged by a whole factor until
    each core holds at least two pixels per kernel tap, with each tile's kernel (rows×cols×p×p,
    scaled to its maximum, in yellow) drawn at its core's centre, as large as the core allows."""
    p = kernels.shape[-1]
    shortest = min(min(t.core[2] - t.core[0], t.core[3] - t.core[1]) for row in tiles for t in row)
    factor = max(1, math.ceil(2 * p / (0.8 * shortest)))
    gray = lr.float().mean(0, keepdim=True) * 0.45
    canvas = gray.repeat_interleave(factor, -2).repeat_interleave(factor, -1).repeat(3, 1, 1)
    tap = max(1, int(0.8 * shortest * factor) // p)
    colour = torch.tensor([1.0, 0.85, 0.1])[:, None, None]
    for row, row_kernels in zip(tiles, kernels, strict=True):
        for tile, k in zip(row, row_kernels, strict=True):
            k = k.float() / k.float().max().clamp_min(1e-12)
            big = k.repeat_interleave(tap, 0).repeat_interleave(tap, 1)
            top, left, bottom, right = (c * factor for c in tile.core)
            y0 = max(0, (top + bottom - big.shape[0]) // 2)
            x0 = max(0, (left + right - big.shape[1]) // 2)
            region = canvas[:, y0 : y0 + big.shape[0], x0 : x0 + big.shape[1]]
            big = big[: region.shape[1], : region.shape[2]]
            region.copy_(region * (1 - big) + colour * big)
    return canvas
