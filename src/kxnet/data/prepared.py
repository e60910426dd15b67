"""Prepared training folders: every image decoded once and stored raw, so that a crop reads only
its own rows.

``python -m kxnet.data prepare SRC DEST`` decodes each image of SRC (as training reads it: RGB,
EXIF orientation applied, 8 or 16 bits) into ``DEST/<same relative path>.npy``, an H×W×3 array
in numpy's own ``.npy`` format, and lists them in ``DEST/manifest.json``. Data-loader workers
memory-map those files (:func:`read_crop`): a 256² crop of a 2040×1356 image touches 256 rows of
the file instead of decoding the whole PNG, and the pages are shared through the page cache by
every worker and DDP rank on the machine. numpy's memory-mapped ``.npy`` files do what an LMDB of
raw arrays would (BasicSR's LMDB holds PNG bytes, which still have to be decoded whole), without
another dependency.

Every array is written under a temporary name and renamed (:mod:`kxnet.atomic`); the manifest is
rewritten every few images, so an interrupted ``prepare`` resumes where it stopped, skipping the
images whose source file (size and modification time) is unchanged. The manifest is marked
``complete`` only when every source image was prepared; training refuses an incomplete folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kxnet.atomic import atomic_path, atomic_write
from kxnet.data.images import ARRAY_SUFFIX, ImageInfo, decode_image, list_images
from kxnet.errors import ImageFolderError, ImageReadError

__all__ = [
    "FORMAT",
    "MANIFEST",
    "is_prepared",
    "prepared_images",
    "prepare_folder",
    "read_crop",
]

log = logging.getLogger(__name__)

FORMAT = "kxnet-prepared"
VERSION = 1
MANIFEST = "manifest.json"
_SAVE_EVERY = 25


def is_prepared(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a prepared folder (it holds a prepared manifest)."""
    return (Path(folder) / MANIFEST).is_file()


def _read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ImageFolderError(
            folder, f"{folder / MANIFEST} is not readable ({err}): prepare the folder again"
        ) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ImageFolderError(folder, f"{folder / MANIFEST} is not a {FORMAT} manifest")
    return manifest


def _array_bytes(entry: dict) -> int:
    itemsize = np.dtype(entry["dtype"]).itemsize
    return entry["height"] * entry["width"] * 3 * itemsize


def prepared_images(folder: str | os.PathLike, check: str = "header") -> list[ImageInfo]:
    """The images of a prepared folder, in the order of its source (sorted relative paths).

    ``header`` trusts the manifest; ``verify`` also checks that every array file is there with
    the size the manifest gives; ``decode`` reads every array's header. An incomplete or
    damaged folder raises :class:`~kxnet.errors.ImageFolderError` saying how to fix it.
    """
    folder = Path(folder)
    manifest = _read_manifest(folder)
    source = manifest.get("source", "SRC")
    again = f"run `python -m kxnet.data prepare {source} {folder}` again"
    if not manifest.get("complete"):
        done = len(manifest.get("images", []))
        raise ImageFolderError(
            folder, f"{folder} is not completely prepared ({done} images): {again}"
        )
    infos = []
    for entry in manifest["images"]:
        path = folder / entry["file"]
        if check != "header":
            size = path.stat().st_size if path.is_file() else -1
            if size < _array_bytes(entry):
                raise ImageFolderError(folder, f"{path} is missing or truncated: {again}")
        if check == "decode":
            decode_image(path)
        infos.append(ImageInfo(path, entry["width"], entry["height"], entry["dtype"] != "uint8"))
    return infos


def read_crop(path: Path, top: int, left: int, size: int) -> Tensor:
    """The ``size``² crop at (top, left) of a prepared image: 3×size×size, in its stored dtype.

    Only the crop's rows are read (the file is memory-mapped, then closed).
    """
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    crop = np.ascontiguousarray(array[top : top + size, left : left + size])
    return torch.from_numpy(crop).permute(2, 0, 1)


def _stamp(path: Path) -> dict:
    stat = path.stat()
    return {"source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}


def _save(dest: Path, source: Path, entries: dict[str, dict], complete: bool) -> None:
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "source": str(source),
        "complete": complete,
        "images": [entries[name] for name in sorted(entries)],
    }
    atomic_write(dest / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def prepare_folder(
    source: str | os.PathLike,
    dest: str | os.PathLike,
    report: Callable[[str], None] = print,
) -> tuple[int, int]:
    """Prepare every image under ``source`` (recursively) into ``dest``; returns (prepared now,
    already prepared). Unreadable images are all named in one
    :class:`~kxnet.errors.ImageFolderError` at the end (the others are prepared; the folder is
    then not complete)."""
    source, dest = Path(source).resolve(), Path(dest).resolve()
    if dest == source or dest.is_relative_to(source) or source.is_relative_to(dest):
        raise ImageFolderError(
            dest, f"DEST={dest} must lie outside SRC={source} (and SRC outside DEST)"
        )
    if not source.is_dir():
        raise ImageFolderError(source, f"SRC={source} is not a folder of images")
    files = list_images(source, recursive=True)
    if not files:
        raise ImageFolderError(source, f"SRC={source} holds no image files")
    if any(p.suffix == ARRAY_SUFFIX for p in files):
        raise ImageFolderError(source, f"SRC={source} is itself a prepared folder")
    dest.mkdir(parents=True, exist_ok=True)
    known = {}
    if is_prepared(dest):
        known = {e["name"]: e for e in _read_manifest(dest).get("images", [])}
    entries: dict[str, dict] = {}
    done = kept = 0
    errors: list[ImageReadError] = []
    for index, path in enumerate(files):
        name = path.relative_to(source).as_posix()
        target = Path(name).with_suffix(ARRAY_SUFFIX).as_posix()
        old = known.get(name)
        if (
            old
            and all(old.get(k) == v for k, v in _stamp(path).items())
            and ((dest / target).is_file() and (dest / target).stat().st_size >= _array_bytes(old))
        ):
            entries[name] = old
            kept += 1
            continue
        try:
            image = decode_image(path).permute(1, 2, 0).contiguous().numpy()
        except ImageReadError as err:
            errors.append(err)
            continue
        if image.dtype == np.float32:
            image = np.round(image * 65535).astype(np.uint16)
        with atomic_path(dest / target) as tmp, open(tmp, "wb") as f:
            np.save(f, image, allow_pickle=False)
        height, width = image.shape[:2]
        entries[name] = {
            "name": name,
            "file": target,
            "height": height,
            "width": width,
            "dtype": image.dtype.name,
            **_stamp(path),
        }
        done += 1
        if done % _SAVE_EVERY == 0:
            _save(dest, source, entries, complete=False)
            report(f"  prepared {index + 1} of {len(files)} images")
    _save(dest, source, entries, complete=not errors)
    if errors:
        listing = "; ".join(f"{e.path}: {e.reason}" for e in errors[:5])
        more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
        raise ImageFolderError(
            source,
            f"{len(errors)} unreadable image file(s) in {source}: {listing}{more} (replace or "
            "remove them, then run prepare again: the others are kept)",
        )
    return done, kept
