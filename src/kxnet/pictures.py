"""Pictures of a result a reader can read: LR, bicubic, SR and HR side by side, each panel titled
(with its PSNR where the caller knows the HR image); the kernel of every stage, each numbered,
beside the true one, framed and marked.

Both return a 3×H×W tensor in [0, 1] (what the loggers take); the titles are drawn with Pillow's
scalable default font.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = ["comparison_strip", "kernel_strip", "label_panels", "text_band", "TRUE_KERNEL_COLOUR"]

_GAP = 4
_KERNEL_GAP = 2
# The frame and label of the true kernel.
TRUE_KERNEL_COLOUR = (0.1, 0.75, 0.2)
_TEXT = (0, 0, 0)
_MIN_FONT, _MAX_FONT = 8, 28


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fitting_font(texts: Sequence[str], width: int, largest: int):
    """The largest font (at most ``largest`` px) in which every text fits ``width`` pixels."""
    size = max(_MIN_FONT, min(_MAX_FONT, largest))
    while size > _MIN_FONT and max(_font(size).getlength(t) for t in texts) > width:
        size -= 1
    return _font(size)


def _row(tiles: Iterable[Tensor], gap: int = _GAP) -> Tensor:
    """Tiles C×h×w (same C and h) → one C×h×W row with white gaps between them."""
    tiles = list(tiles)
    spacer = tiles[0].new_ones(tiles[0].shape[0], tiles[0].shape[1], gap)
    parts = [tiles[0]]
    for tile in tiles[1:]:
        parts += [spacer, tile]
    return torch.cat(parts, dim=-1)


def text_band(
    texts: Sequence[str],
    widths: Sequence[int],
    gap: int = _GAP,
    colours: Sequence[tuple[float, float, float]] | None = None,
    font_px: int | None = None,
) -> Tensor:
    """A white 3×h×W band with each text centred over its column (columns ``widths`` wide,
    ``gap`` apart): one font for all, the largest that fits every column."""
    narrowest = min(widths)
    font = _fitting_font(texts, narrowest - 2, font_px or narrowest // 7)
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (10, 2)
    height = ascent + descent + 6
    total = sum(widths) + gap * (len(widths) - 1)
    band = Image.new("RGB", (total, height), "white")
    draw = ImageDraw.Draw(band)
    left = 0
    for i, (text, width) in enumerate(zip(texts, widths, strict=True)):
        colour = _TEXT if colours is None else tuple(round(255 * c) for c in colours[i])
        x = left + (width - font.getlength(text)) / 2
        draw.text((x, 3), text, fill=colour, font=font)
        left += width + gap
    return torch.from_numpy(np.asarray(band).copy()).permute(2, 0, 1).float() / 255


def label_panels(row: Tensor, titles: Sequence[str], widths: Sequence[int], gap: int) -> Tensor:
    """A row of panels (3×H×W, panels ``widths`` wide and ``gap`` apart) with ``titles`` above."""
    return torch.cat([text_band(titles, widths, gap), row], dim=-2)


def _db(value: float | Tensor | None) -> str:
    return "" if value is None else f" {float(value):.2f} dB"


def comparison_strip(
    lr: Tensor,
    bicubic: Tensor,
    sr: Tensor,
    hr: Tensor | None = None,
    *,
    bicubic_psnr: float | Tensor | None = None,
    sr_psnr: float | Tensor | None = None,
    method: str = "KXNet",
    min_width: int = 160,
) -> Tensor:
    """One sample, titled panels: "LR" (lr 3×h×w enlarged by pixel repetition), "bicubic"
    and ``method`` (3×H×W each, with their PSNR when given) and "HR" when there is one.

    Panels narrower than ``min_width`` are enlarged by pixel repetition (an integer factor), so
    that the titles of small validation crops can be read. → 3×(title + H·f)×(4·W·f + gaps) in
    [0, 1] (3 panels without hr).
    """
    size = sr.shape[-2:]
    lr_big = F.interpolate(lr[None].float(), size=size, mode="nearest")[0]
    shown = [lr_big, bicubic, sr] + ([] if hr is None else [hr])
    titles = ["LR", f"bicubic{_db(bicubic_psnr)}", f"{method}{_db(sr_psnr)}"]
    titles += [] if hr is None else ["HR"]
    factor = max(1, math.ceil(min_width / size[-1]))
    panels = [t.detach().float().clamp(0, 1).cpu() for t in shown]
    if factor > 1:
        panels = [t.repeat_interleave(factor, -1).repeat_interleave(factor, -2) for t in panels]
    row = _row(panels)
    return label_panels(row, titles, [p.shape[-1] for p in panels], _GAP)


def _frame(tile: Tensor, colour: Sequence[float], width: int) -> Tensor:
    framed = tile.clone()
    paint = torch.tensor(colour, dtype=tile.dtype)[:, None, None]
    framed[:, :width], framed[:, -width:] = paint, paint
    framed[:, :, :width], framed[:, :, -width:] = paint, paint
    return framed


def kernel_strip(
    estimates: Iterable[Tensor],
    true: Tensor | None = None,
    zoom: int = 4,
    *,
    min_tile: int = 48,
) -> Tensor:
    """Kernels p×p of stages 0 … T, then the true one if known, all on one intensity scale
    (white = the largest value among them), each enlarged by ``zoom`` (more if a tile would be
    narrower than ``min_tile`` pixels) → 3×(p·zoom + label)×W.

    Under each estimate its stage number ("stage 0" is the initialisation); the true kernel is
    framed and labelled "true" in :data:`TRUE_KERNEL_COLOUR`.
    """
    estimates = [k.detach().float().cpu() for k in estimates]
    kernels = estimates + ([] if true is None else [true.detach().float().cpu()])
    peak = max(float(k.max()) for k in kernels) or 1.0
    zoom = max(zoom, math.ceil(min_tile / kernels[0].shape[-1]))
    tiles = [
        F.interpolate((k / peak)[None, None], scale_factor=zoom, mode="nearest")[0]
        .expand(3, -1, -1)
        .clamp(0, 1)
        for k in kernels
    ]
    labels = [f"stage {t}" for t in range(len(estimates))]
    colours = [(0.0, 0.0, 0.0)] * len(estimates)
    if true is not None:
        tiles[-1] = _frame(tiles[-1], TRUE_KERNEL_COLOUR, max(1, zoom // 2))
        labels.append("true")
        colours.append(TRUE_KERNEL_COLOUR)
    widths = [t.shape[-1] for t in tiles]
    band = text_band(labels, widths, _KERNEL_GAP, colours, font_px=widths[0] // 4)
    return torch.cat([_row(tiles, gap=_KERNEL_GAP), band], dim=-2)
