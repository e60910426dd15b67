"""Pictures of a result: LR, bicubic, SR and HR side by side; the kernel of every stage."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["comparison_strip", "kernel_strip"]

_GAP = 4


def _row(tiles: Iterable[Tensor], gap: int = _GAP) -> Tensor:
    """Tiles C×h×w (same C and h) → one C×h×W row with white gaps between them."""
    tiles = list(tiles)
    spacer = tiles[0].new_ones(tiles[0].shape[0], tiles[0].shape[1], gap)
    parts = [tiles[0]]
    for tile in tiles[1:]:
        parts += [spacer, tile]
    return torch.cat(parts, dim=-1)


def comparison_strip(lr: Tensor, bicubic: Tensor, sr: Tensor, hr: Tensor | None = None) -> Tensor:
    """One sample: lr 3×h×w (shown enlarged by pixel repetition), bicubic, sr and (when there is
    one) hr 3×H×W → 3×H×(4W + gaps) in [0, 1] (3W + gaps without hr)."""
    size = sr.shape[-2:]
    lr_big = F.interpolate(lr[None].float(), size=size, mode="nearest")[0]
    shown = (lr_big, bicubic, sr) if hr is None else (lr_big, bicubic, sr, hr)
    return _row(t.detach().float().clamp(0, 1).cpu() for t in shown)


def kernel_strip(estimates: Iterable[Tensor], true: Tensor | None = None, zoom: int = 4) -> Tensor:
    """Kernels p×p of stages 0 … T, then the true one if known → 3×(p·zoom)×W, all on one
    intensity scale (white = the largest value among them)."""
    kernels = [k.detach().float().cpu() for k in (*estimates, *([] if true is None else [true]))]
    peak = max(float(k.max()) for k in kernels) or 1.0
    tiles = [
        F.interpolate((k / peak)[None, None], scale_factor=zoom, mode="nearest")[0].expand(
            3, -1, -1
        )
        for k in kernels
    ]
    return _row(tiles, gap=2)
