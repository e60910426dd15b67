"""Reading and writing images robustly: any common format and mode in, float RGB tensors out."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "read_image", "list_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _to_float_rgb(img: Image.Image) -> np.ndarray:
    """H×W×3 float32 in [0, 1] from any PIL mode (8/16/32-bit, gray, RGBA, palette, CMYK)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0
    elif img.mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        arr = arr / (65535.0 if arr.max(initial=0) > 255 else 255.0)
    elif img.mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    else:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA").convert("RGB")
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    arr = arr.astype(np.float32)
    return np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr[..., :3]


def read_image(path: str | os.PathLike) -> Tensor:
    """Read an image file as a 3×H×W float32 RGB tensor in [0, 1].

    Gray, RGBA (alpha dropped), palette, 16-bit and EXIF-rotated images are handled; anything
    unreadable raises :class:`ImageReadError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            arr = _to_float_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(path, f"not a readable image ({err})") from err
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(path, "image has no pixels")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (by suffix) directly in ``folder``, sorted by name; raises if it is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
