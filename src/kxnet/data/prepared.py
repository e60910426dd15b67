"""Prepared training folders: every image decoded once and stored raw, so that a crop reads only
its own rows.

``python -m kxnet.data prepare SRC DEST`` decodes each image of SRC (as training reads it: RGB,
EXIF orientation applied, 8 or 16 bits) into ``DEST/<same relative path, suffix kept>.npy``
(``a.png`` → ``a.png.npy``, so that ``a.png`` and ``a.jpg`` stay two files; names that differ
only in case get ``.2``, ``.3``, … as in ``A.png.2.npy``, so that no two sources share a file on
a file system that ignores case), an H×W×3 array in numpy's own ``.npy`` format, and lists them
in ``DEST/manifest.json``. Data-loader workers
memory-map those files (:func:`read_crop`): a 256² crop of a 2040×1356 image touches 256 rows of
the file instead of decoding the whole PNG, and the pages are shared through the page cache by
every worker and DDP rank on the machine. numpy's memory-mapped ``.npy`` files do what an LMDB of
raw arrays would (BasicSR's LMDB holds PNG bytes, which still have to be decoded whole), without
another dependency.

Every array is written under a temporary name and renamed (:mod:`kxnet.atomic`); the manifest is
rewritten every few images, so an interrupted ``prepare`` resumes where it stopped, skipping the
images whose source file (size and modification time) is unchanged. The manifest is marked
``complete`` only when every source image was prepared; training refuses an incomplete folder.
Every number of the manifest is checked before it is used (sizes, dtype, a file name inside the
folder and used once); ``verify`` and ``decode`` also check each array's shape and dtype against
it.
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

from kxnet.atomic import atomic_path, atomic_write, temporary_name
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
VERSION = 2
MANIFEST = "manifest.json"
_SAVE_EVERY = 25
_DTYPES = ("uint8", "uint16")
# The largest side a manifest may give (Pillow refuses to decode more than about 179 million
# pixels, so no prepared image comes near).
_MAX_SIDE = 1 << 20


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


def _size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= _MAX_SIDE


def _checked_entry(folder: Path, entry: object, again: str) -> dict:
    """A manifest entry whose numbers and file name can be used: ImageFolderError if not."""
    bad = f"{folder / MANIFEST} is damaged"
    if not isinstance(entry, dict):
        raise ImageFolderError(folder, f"{bad} (an entry is not an object): {again}")
    name, file = entry.get("name"), entry.get("file")
    if not isinstance(name, str) or not isinstance(file, str):
        raise ImageFolderError(folder, f"{bad} (an entry without name or file): {again}")
    parts = Path(file).parts
    if Path(file).is_absolute() or ".." in parts or not file.endswith(ARRAY_SUFFIX):
        raise ImageFolderError(
            folder, f"{bad}: file {file!r} of {name} is not a .npy file inside the folder: {again}"
        )
    for key in ("height", "width"):
        if not _size(entry.get(key)):
            raise ImageFolderError(
                folder,
                f"{bad}: {key}={entry.get(key)!r} of {file} is not a size from 1 to {_MAX_SIDE}: "
                f"{again}",
            )
    if entry.get("dtype") not in _DTYPES:
        raise ImageFolderError(
            folder, f"{bad}: dtype={entry.get('dtype')!r} of {file} is not uint8 or uint16: {again}"
        )
    return entry


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """The shape and dtype an ``.npy`` file's header gives; None if it has no readable header."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }[version]
            shape, _, dtype = read(f)
    except (OSError, ValueError, EOFError, KeyError):
        return None
    return shape, dtype


def _check_array(path: Path, entry: dict, again: str) -> None:
    """The array file's header agrees with its manifest entry (shape H×W×3, dtype), and the
    file holds all of its bytes."""
    header = _header(path) if path.is_file() else None
    if header is None:
        raise ImageFolderError(path.parent, f"{path} is missing or truncated: {again}")
    shape, dtype = header
    expected = (entry["height"], entry["width"], 3)
    if shape != expected or dtype.name != entry["dtype"]:
        raise ImageFolderError(
            path.parent,
            f"{path} holds a {'×'.join(map(str, shape))} {dtype.name} array but the manifest "
            f"says {'×'.join(map(str, expected))} {entry['dtype']}: {again}",
        )
    if path.stat().st_size < _array_bytes(entry):
        raise ImageFolderError(path.parent, f"{path} is missing or truncated: {again}")


def prepared_images(folder: str | os.PathLike, check: str = "header") -> list[ImageInfo]:
    """The images of a prepared folder, in the order of its source (sorted relative paths).

    ``header`` checks the manifest's entries (sizes, dtype, every file inside the folder and
    used by one entry only); ``verify`` also checks that every array file is there with the
    shape and dtype the manifest gives; ``decode`` also reads every array. An incomplete or
    damaged folder raises :class:`~kxnet.errors.ImageFolderError` saying how to fix it.
    """
    folder = Path(folder)
    manifest = _read_manifest(folder)
    source = manifest.get("source", "SRC")
    again = f"run `python -m kxnet.data prepare {source} {folder}` again"
    entries = manifest.get("images")
    if not manifest.get("complete") or not isinstance(entries, list):
        done = len(entries) if isinstance(entries, list) else 0
        raise ImageFolderError(
            folder, f"{folder} is not completely prepared ({done} images): {again}"
        )
    checked = [_checked_entry(folder, raw, again) for raw in entries]
    files: dict[str, str] = {}
    for entry in checked:
        key = entry["file"].casefold()
        if key in files:
            raise ImageFolderError(
                folder,
                f"{folder / MANIFEST} gives {files[key]} and {entry['name']} the one file "
                f"{entry['file']} (one image was lost in preparation): prepare "
                f"{source} into a new folder",
            )
        files[key] = entry["name"]
    infos = []
    for entry in checked:
        path = folder / entry["file"]
        if check != "header":
            _check_array(path, entry, again)
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


def stored_names(names: list[str]) -> dict[str, str]:
    """The array file of each source image (relative POSIX paths, in order): ``NAME.EXT.npy``,
    or ``NAME.EXT.<n>.npy`` (n = 2, 3, …) when an earlier name's file differs from it only in
    case. No two sources share a file, even on a file system that ignores case."""
    taken: set[str] = set()
    stored = {}
    for name in names:
        file, n = f"{name}{ARRAY_SUFFIX}", 2
        while file.casefold() in taken:
            file, n = f"{name}.{n}{ARRAY_SUFFIX}", n + 1
        taken.add(file.casefold())
        stored[name] = file
    return stored


def _save(dest: Path, source: Path, entries: dict[str, dict], complete: bool) -> None:
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "source": str(source),
        "complete": complete,
        "images": [entries[name] for name in sorted(entries)],
    }
    atomic_write(dest / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def _check_writable(dest: Path) -> None:
    """Create DEST if needed and write (then remove) a file in it; ImageFolderError if not."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        probe = temporary_name(dest / "write-test")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ImageFolderError(
            dest,
            f"DEST={dest} is not a writable folder ({err.strerror or err}): prepare into a "
            "folder you can write to",
        ) from err


def _known(dest: Path) -> dict[str, dict]:
    """The usable entries of the manifest already in ``dest`` (none if there is none)."""
    if not is_prepared(dest):
        return {}
    known = {}
    for raw in _read_manifest(dest).get("images") or []:
        try:
            entry = _checked_entry(dest, raw, "")
        except ImageFolderError:
            continue
        known[entry["name"]] = entry
    return known


def _remove_stale(dest: Path, known: dict[str, dict], targets: dict[str, str]) -> None:
    """Remove the arrays that the previous manifest listed and the new one does not (a source
    gone or renamed, or a name of an earlier version's scheme)."""
    kept = {target.casefold() for target in targets.values()}
    for entry in known.values():
        if entry["file"].casefold() not in kept:
            (dest / entry["file"]).unlink(missing_ok=True)


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
    _check_writable(dest)
    known = _known(dest)
    names = [path.relative_to(source).as_posix() for path in files]
    targets = stored_names(names)
    entries: dict[str, dict] = {}
    done = kept = 0
    errors: list[ImageReadError] = []
    for index, (path, name) in enumerate(zip(files, names, strict=True)):
        target = targets[name]
        old = known.get(name)
        if (
            old
            and old["file"] == target
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
    _remove_stale(dest, known, targets)
    if errors:
        listing = "; ".join(f"{e.path}: {e.reason}" for e in errors[:5])
        more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
        raise ImageFolderError(
            source,
            f"{len(errors)} unreadable image file(s) in {source}: {listing}{more} (replace or "
            "remove them, then run prepare again: the others are kept)",
        )
    return done, kept
