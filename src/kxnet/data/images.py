"""Reading image files robustly: any common format, depth and mode in, RGB tensors out.

Pillow decodes everything except the one case it gets wrong: it reads 16-bit RGB and RGBA PNG and
TIFF files as 8-bit (keeping the high byte). Those files are decoded by kornia's reader
(kornia-rs), which keeps all 16 bits. Gray+alpha 16-bit PNG and 16-bit RGBA TIFF, which kornia-rs
cannot decode, fall back to Pillow's 8-bit reading. EXIF orientation is applied in every case.
Decoded images stored raw (``.npy``, H×W×3, as a prepared training folder holds them, see
:mod:`kxnet.data.prepared`) are read as they are.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from kxnet.errors import ImageReadError

__all__ = [
    "IMAGE_SUFFIXES",
    "ARRAY_SUFFIX",
    "CHECKS",
    "ImageInfo",
    "exif_orientation",
    "read_image",
    "decode_image",
    "to_float",
    "image_info",
    "list_images",
    "scan_images",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# A decoded image stored raw (H×W×3 uint8 or uint16, numpy's .npy): a prepared training folder.
ARRAY_SUFFIX = ".npy"
CHECKS = ("header", "verify", "decode")
_ORIENTATION = 0x0112
# What decoding a malformed file raises (Pillow's plug-ins raise more than OSError).
_READ_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    ArithmeticError,
    TypeError,
    KeyError,
    IndexError,
    Image.DecompressionBombError,
)


@dataclass(frozen=True)
class ImageInfo:
    """An image file and its size as stored in its header (EXIF rotation may swap the two);
    ``deep``: its pixels have more than 8 bits (16-bit or float)."""

    path: Path
    width: int
    height: int
    deep: bool = False


def _rawmode(img: Image.Image) -> str:
    """How the file stores its pixels (e.g. ``RGB;16B``), read before decoding; '' if unknown."""
    if not img.tile:
        return ""
    args = img.tile[0].args
    return args if isinstance(args, str) else str(args[0]) if args else ""


def _is_deep_colour(img: Image.Image) -> bool:
    """16-bit RGB/RGBA PNG or 16-bit RGB TIFF: the files Pillow would cut to 8 bits."""
    raw = _rawmode(img)
    if img.format == "PNG":
        return raw.startswith(("RGB;16", "RGBA;16"))
    return img.format == "TIFF" and raw.startswith("RGB;16")


def exif_orientation(img: Image.Image) -> int:
    """The EXIF Orientation of an open image: 1 (as stored) unless the tag is an integer in
    1…8. A file can hold anything there (+inf, NaN, text, 70000): all of it means "as stored"."""
    try:
        value = img.getexif().get(_ORIENTATION, 1)
    except _READ_ERRORS:
        return 1
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        return 1
    return int(value) if 1 <= value <= 8 else 1


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1–8) to an H×W×C array, as ``ImageOps.exif_transpose`` does."""
    if orientation in (5, 6, 7, 8):
        arr = arr.swapaxes(0, 1)
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    return arr


def _decode_deep_colour(path: Path, orientation: int) -> np.ndarray:
    """H×W×3 uint16 from a 16-bit RGB(A) PNG/TIFF through kornia-rs (alpha dropped)."""
    from kornia.io import ImageLoadType, load_image

    arr = load_image(path, ImageLoadType.UNCHANGED, device="cpu").permute(1, 2, 0).numpy()
    if arr.dtype != np.uint16 or arr.shape[2] not in (3, 4):
        raise ValueError(f"unexpected 16-bit decode ({arr.dtype}, {arr.shape[2]} channels)")
    return _orient(arr[..., :3], orientation)


def _pillow_to_rgb(img: Image.Image, raw: str) -> np.ndarray:
    """H×W×3 array from a decoded Pillow image: uint8, uint16 (16-bit gray) or float32 (float)."""
    if img.mode.startswith("I;16") or (img.mode == "I" and ";16" in raw):
        arr = np.asarray(img).astype(np.uint16)
    elif img.mode == "I":
        raise ValueError("32-bit integer pixels have no defined range; save as 8- or 16-bit")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)  # clipped to [0, 1] once checked finite
    else:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
        return np.asarray(img.convert("RGB"))
    return np.repeat(arr[..., None], 3, axis=2)


def _open_array(path: Path) -> np.ndarray:
    """A decoded image stored as an H×W×3 uint8 or uint16 ``.npy`` file, memory-mapped."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ImageReadError(path, f"not a readable image array ({err})") from err
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(
            path, f"not an H×W×3 uint8/uint16 image array ({array.shape} {array.dtype})"
        )
    return array


def _non_empty_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or ImageReadError if it is not a file or is empty."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    return path


def decode_image(path: str | os.PathLike) -> Tensor:
    """Decode an image file as a 3×H×W RGB tensor in its stored depth.

    The dtype is uint8 for 8-bit (and lower) files, uint16 for 16-bit files (gray or RGB), float32
    in [0, 1] for float TIFFs (clipped; a NaN or inf pixel is refused); :func:`to_float` maps any
    of them to [0, 1]. Gray becomes R=G=B, alpha is dropped (the stored colour is kept), palettes
    are expanded, EXIF orientation is applied. Anything unreadable raises
    :class:`ImageReadError` naming the file.
    """
    path = _non_empty_file(path)
    if path.suffix == ARRAY_SUFFIX:
        return _to_tensor(path, np.array(_open_array(path)))
    try:
        with Image.open(path) as img:
            raw = _rawmode(img)
            deep = _is_deep_colour(img)  # before the EXIF, whose reading may decode a PNG
            orientation = exif_orientation(img)
            if deep:
                try:
                    arr = _decode_deep_colour(path, orientation)
                except (ValueError, OSError, RuntimeError):
                    arr = None
                if arr is not None:
                    return _to_tensor(path, arr)
            img.load()
            arr = _orient(_pillow_to_rgb(img, raw), orientation)
    except _READ_ERRORS as err:
        raise ImageReadError(path, f"not a readable image ({err})") from err
    return _to_tensor(path, arr)


def _to_tensor(path: Path, arr: np.ndarray) -> Tensor:
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(path, "image has no pixels")
    if arr.dtype.kind == "f":
        bad = arr.size - int(np.isfinite(arr).sum())
        if bad:
            raise ImageReadError(
                path,
                f"{bad // 3} float pixel(s) are NaN or inf, which have no brightness: fix or "
                "drop those pixels (or save the image as 8- or 16-bit)",
            )
        arr = np.clip(arr, 0.0, 1.0)
    arr = np.require(arr, requirements=["C", "W"])
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def to_float(img: Tensor) -> Tensor:
    """float32 in [0, 1] from a uint8, uint16 or float tensor of :func:`decode_image`."""
    if img.dtype == torch.uint8:
        return img.to(torch.float32).div_(255.0)
    if img.dtype == torch.uint16:
        return img.to(torch.float32).div_(65535.0)
    return img.to(torch.float32)


def read_image(path: str | os.PathLike) -> Tensor:
    """Read an image file as a 3×H×W float32 RGB tensor in [0, 1].

    Gray, RGBA (alpha dropped), palette, 16-bit (gray and RGB) and EXIF-rotated images are
    handled; anything unreadable raises :class:`ImageReadError` naming the file.
    """
    return to_float(decode_image(path))


def image_info(path: str | os.PathLike, check: str = "header") -> ImageInfo:
    """The size of an image file, after checking that it can be read, at one of three costs.

    ``header``: the file opens as an image (reads a few bytes). ``verify``: also the whole file is
    sound: every PNG chunk's CRC and the end marker (reads the file, decodes nothing); a JPEG is
    decoded at 1/8 scale, which reads its whole entropy-coded stream; other formats are decoded.
    ``decode``: a full :func:`decode_image`. Raises :class:`ImageReadError` naming the file.
    """
    if check not in CHECKS:
        raise ValueError(f"check must be one of {', '.join(CHECKS)}, not {check!r}")
    path = _non_empty_file(path)
    if path.suffix == ARRAY_SUFFIX:
        array = _open_array(path)
        return ImageInfo(path, array.shape[1], array.shape[0], array.dtype != np.uint8)
    try:
        with Image.open(path) as img:
            width, height = img.size
            deep = img.mode.startswith(("I", "F")) or _is_deep_colour(img)
            if check == "verify" and img.format == "PNG":
                img.verify()
            elif check == "verify" and img.format == "JPEG":
                img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                img.load()
    except _READ_ERRORS as err:
        raise ImageReadError(path, f"not a readable image ({err})") from err
    if check == "decode" or (check == "verify" and img.format not in ("PNG", "JPEG")):
        decode_image(path)
    if width == 0 or height == 0:
        raise ImageReadError(path, "image has no pixels")
    return ImageInfo(path, width, height, deep)


def _visible(name: str) -> bool:
    """Not a hidden file or folder (``.DS_Store``, ``._x.png`` resource forks) nor ``__MACOSX``."""
    return not name.startswith(".") and name != "__MACOSX"


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files (by suffix, any case) in ``folder``, sorted by path; raises if it is missing.

    With ``recursive``, subfolders are searched too (following links, each real folder once);
    hidden files and folders and ``__MACOSX`` are left out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    if not recursive:
        files = (p for p in folder.iterdir() if p.is_file() and _visible(p.name))
        return sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES)
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if _visible(d)]
        found.extend(
            Path(dirpath) / f
            for f in filenames
            if _visible(f) and Path(f).suffix.lower() in IMAGE_SUFFIXES
        )
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def scan_images(
    files: list[Path], check: str = "verify", threads: int | None = None
) -> tuple[list[ImageInfo], list[ImageReadError]]:
    """:func:`image_info` of every file, in order, on a few threads (decoders release the GIL).

    Returns the readable files' infos and the errors of the others (each naming its file).
    """

    def one(path: Path) -> ImageInfo | ImageReadError:
        try:
            return image_info(path, check)
        except ImageReadError as err:
            return err

    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(one, files))
    infos = [r for r in results if isinstance(r, ImageInfo)]
    return infos, [r for r in results if isinstance(r, ImageReadError)]
