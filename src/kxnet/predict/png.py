"""Writing PNG files strip by strip, so that a large output never has to be whole in memory.

Pillow and the other PNG writers at hand take a whole image (or pull its rows from an
iterator); prediction produces rows a strip of tiles at a time, for several images at once (the
SR image and each stage's), so this small encoder takes them as they come: 8- or 16-bit gray or
RGB, every row Paeth-filtered (computed with numpy from the raw rows, many rows at a time),
zlib-compressed into IDAT chunks at level 1 by default: on the x4 bicubic outputs of the
RealSRSet photos 4.2× faster to write than zlib's default level 6 for files 12 % larger
(``experiments/png_level.py``), and writing is most of what a large bicubic or small-network
prediction costs.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

__all__ = ["PngStreamWriter"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE = {1: 0, 3: 2}
_PAETH = 4
_ROWS_PER_CHUNK = 16
_IDAT_SIZE = 1 << 20


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _paeth(raw: np.ndarray, above: np.ndarray, bpp: int) -> np.ndarray:
    """Paeth-filtered scanlines with their filter-type byte: n×L uint8, L uint8 → n×(L+1)."""
    up = np.concatenate([above[None], raw[:-1]]).astype(np.int16)
    cur = raw.astype(np.int16)
    left = np.zeros_like(cur)
    left[:, bpp:] = cur[:, :-bpp]
    up_left = np.zeros_like(cur)
    up_left[:, bpp:] = up[:, :-bpp]
    guess = left + up - up_left
    dist_left, dist_up, dist_ul = (
        np.abs(guess - left),
        np.abs(guess - up),
        np.abs(guess - up_left),
    )
    pred = np.where(
        (dist_left <= dist_up) & (dist_left <= dist_ul),
        left,
        np.where(dist_up <= dist_ul, up, up_left),
    )
    out = np.empty((raw.shape[0], raw.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = _PAETH
    out[:, 1:] = (cur - pred).astype(np.uint8)
    return out


class PngStreamWriter:
    """A PNG of ``height`` × ``width`` pixels written to ``file`` in strips of whole rows.

    ``write(rows)`` takes n×W×C arrays (C = 1 or 3; uint8 for ``bit_depth=8``, uint16 for 16)
    from the top down; ``close()`` checks that all ``height`` rows came and ends the file. The
    file object is not closed.
    """

    def __init__(
        self,
        file: BinaryIO,
        width: int,
        height: int,
        channels: int = 3,
        bit_depth: int = 8,
        level: int = 1,
    ) -> None:
        if channels not in _COLOUR_TYPE:
            raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {channels}")
        if bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
        if width < 1 or height < 1:
            raise ValueError(f"a PNG needs at least one pixel, got {width}×{height}")
        self.file = file
        self.width, self.height, self.channels, self.bit_depth = width, height, channels, bit_depth
        self.rows_written = 0
        self._dtype = np.dtype(">u2") if bit_depth == 16 else np.dtype(np.uint8)
        self._bpp = channels * self._dtype.itemsize
        self._above = np.zeros(width * self._bpp, dtype=np.uint8)
        self._zlib = zlib.compressobj(level)
        self._pending = bytearray()
        header = struct.pack(">IIBBBBB", width, height, bit_depth, _COLOUR_TYPE[channels], 0, 0, 0)
        file.write(_SIGNATURE + _chunk(b"IHDR", header))

    def write(self, rows: np.ndarray) -> None:
        """Append n×W×C rows (uint8 for 8-bit, uint16 for 16-bit)."""
        expected = np.uint8 if self.bit_depth == 8 else np.uint16
        if rows.ndim == 2 and self.channels == 1:
            rows = rows[..., None]
        if rows.dtype != expected or rows.shape[1:] != (self.width, self.channels):
            raise ValueError(
                f"rows must be n×{self.width}×{self.channels} {np.dtype(expected).name}, "
                f"got {rows.shape} {rows.dtype}"
            )
        if self.rows_written + rows.shape[0] > self.height:
            raise ValueError(f"more than the {self.height} rows of the image")
        for start in range(0, rows.shape[0], _ROWS_PER_CHUNK):
            part = rows[start : start + _ROWS_PER_CHUNK]
            raw = np.ascontiguousarray(part, dtype=self._dtype).view(np.uint8)
            raw = raw.reshape(part.shape[0], -1)
            self._pending += self._zlib.compress(_paeth(raw, self._above, self._bpp).tobytes())
            self._above = raw[-1].copy()
            self._flush(final=False)
        self.rows_written += rows.shape[0]

    def _flush(self, final: bool) -> None:
        while len(self._pending) >= _IDAT_SIZE or (final and self._pending):
            self.file.write(_chunk(b"IDAT", bytes(self._pending[:_IDAT_SIZE])))
            del self._pending[:_IDAT_SIZE]

    def close(self) -> None:
        """End the image; raises if rows are missing (the file is then not a valid PNG)."""
        if self.rows_written != self.height:
            raise ValueError(f"{self.rows_written} of {self.height} rows were written")
        self._pending += self._zlib.flush()
        self._flush(final=True)
        self.file.write(_chunk(b"IEND", b""))
