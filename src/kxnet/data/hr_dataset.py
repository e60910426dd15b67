"""Random HR training patches from a folder of images: crops, flips and 90° rotations.

Randomness is a pure function of ``(seed, epoch, index)``: the same run gives the same patches
whatever the number of DataLoader workers (persistent or not) or DDP ranks, and a run resumed at
an epoch gets the patches the uninterrupted run got. The epoch travels inside the index:
:class:`EpochSampler` yields ``epoch · len + i``, so no state has to reach worker processes.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from kxnet.data.images import (
    CHECKS,
    IMAGE_SUFFIXES,
    ImageInfo,
    decode_image,
    list_images,
    scan_images,
    to_float,
)
from kxnet.data.prepared import is_prepared, prepared_images, read_crop
from kxnet.errors import ImageFolderError, ImageReadError

__all__ = ["TRAIN_DIR_HINT", "find_training_images", "spread", "HRImageFolder", "EpochSampler"]

log = logging.getLogger(__name__)

TRAIN_DIR_HINT = (
    "fetch and prepare DIV2K + Flickr2K with `make data` (the paper's training set), or set "
    "paths.train_dir to a folder of HR images"
)
_CROP, _ORDER, _SHUFFLE = 0, 1, 2
_LISTED = 5


def _seed(*parts: int) -> int:
    """A 64-bit generator seed mixed from non-negative integers (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0])


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*parts))


def _names(root: Path, paths: list[Path], extra: list[str] | None = None) -> str:
    """'a.png (why), b.png (why), … and N more' with paths relative to ``root``."""
    shown = []
    for k, path in enumerate(paths[:_LISTED]):
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        shown.append(f"{name} ({extra[k]})" if extra else name)
    more = f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else ""
    return ", ".join(shown) + more


def _unreadable(root: Path, errors: list[ImageReadError]) -> ImageFolderError:
    listing = "; ".join(f"{_names(root, [e.path])}: {e.reason}" for e in errors[:_LISTED]) + (
        f"; and {len(errors) - _LISTED} more" if len(errors) > _LISTED else ""
    )
    return ImageFolderError(
        root,
        f"{len(errors)} unreadable image file(s) in {root}: {listing} "
        "(remove or replace them, then start again)",
    )


def _headers(
    root: Path, patch_size: int, threads: int | None, hint: str
) -> tuple[list[ImageInfo], list[ImageInfo], list[ImageReadError]]:
    """Every image's header under ``root`` (or a prepared folder's manifest): (large enough,
    too small, unreadable)."""
    if not root.exists():
        raise ImageFolderError(root, f"training image folder {root} does not exist: {hint}")
    if not root.is_dir():
        raise ImageFolderError(root, f"training image folder {root} is not a folder: {hint}")
    if is_prepared(root):
        infos, errors = prepared_images(root), []
        return _by_size(infos, patch_size) + (errors,)
    files = list_images(root, recursive=True)
    if not files:
        kinds = "/".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
        raise ImageFolderError(root, f"no image files ({kinds}) in {root} or below it: {hint}")
    infos, errors = scan_images(files, "header", threads)
    return _by_size(infos, patch_size) + (errors,)


def _by_size(infos: list[ImageInfo], patch_size: int) -> tuple[list[ImageInfo], list[ImageInfo]]:
    """(the images that hold a patch, those that do not)."""
    usable = [i for i in infos if min(i.width, i.height) >= patch_size]
    return usable, [i for i in infos if min(i.width, i.height) < patch_size]


def spread(items: list, count: int) -> list:
    """``count`` items evenly spread over ``items`` (the middle of each of ``count`` equal runs)."""
    return [items[(2 * i + 1) * len(items) // (2 * count)] for i in range(count)]


def _conclude(
    root: Path,
    patch_size: int,
    usable: list[ImageInfo],
    small: list[ImageInfo],
    errors: list[ImageReadError],
) -> None:
    """Refuse unreadable files (all named at once) or no usable image; warn of small ones."""
    if errors:
        raise _unreadable(root, sorted(errors, key=lambda e: e.path))
    if not usable:
        raise ImageFolderError(
            root,
            f"none of the {len(small)} images in {root} holds a {patch_size}×{patch_size} HR "
            "patch (scale × LR patch): use larger images or a smaller patch",
        )
    if small:
        log.warning(
            "skipping %d of %d images in %s smaller than the %d×%d HR patch: %s",
            len(small),
            len(small) + len(usable),
            root,
            patch_size,
            patch_size,
            _names(root, [i.path for i in small], [f"{i.width}×{i.height}" for i in small]),
        )


def find_training_images(
    root: str | os.PathLike,
    patch_size: int,
    check: str = "verify",
    threads: int | None = None,
    hint: str = TRAIN_DIR_HINT,
) -> list[ImageInfo]:
    """The images under ``root`` (recursively) that hold a ``patch_size``² patch, checked.

    Every file's header is read; the images kept are then checked at the cost ``check`` of
    :func:`~kxnet.data.images.image_info`. Images smaller than the patch are left out with one
    warning naming them. A missing or empty folder, unreadable files (all named at once) or no
    image large enough raise :class:`ImageFolderError`, one line saying what would fix it.
    """
    if check not in CHECKS:
        raise ValueError(f"check must be one of {', '.join(CHECKS)}, not {check!r}")
    root = Path(root)
    usable, small, errors = _headers(root, patch_size, threads, hint)
    if check != "header" and is_prepared(root):
        prepared_images(root, check)  # each array against its manifest entry
    elif check != "header":
        errors += scan_images([i.path for i in usable], check, threads)[1]
    _conclude(root, patch_size, usable, small, errors)
    return usable


def _decode_all(
    paths: list[Path], threads: int | None
) -> tuple[list[Tensor], list[ImageReadError]]:
    """Every image decoded (in its stored depth), and the errors of those that fail."""

    def one(path: Path) -> Tensor | ImageReadError:
        try:
            return decode_image(path)
        except ImageReadError as err:
            return err

    with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(one, paths))
    errors = [d for d in decoded if isinstance(d, ImageReadError)]
    return [d for d in decoded if isinstance(d, Tensor)], errors


class HRImageFolder(Dataset):
    """Random ``patch_size``² RGB crops of the images under ``root``: ``{"hr": 3×P×P}``, uint8
    when every image has 8 bits (the device converts it, :func:`~kxnet.data.images.to_float`: a
    quarter of the bytes through the loader), else float32 in [0, 1].

    Each epoch has ``samples_per_epoch`` items (default: images × ``repeat``); every run of
    ``len(images)`` consecutive indices visits each image once, in an order drawn per epoch. Each
    item draws its crop position and one of the 8 flip/90°-rotation transforms (with ``augment``)
    from a generator seeded by ``(seed, epoch, index)``; index ``e · len + i`` is item ``i`` of
    epoch ``e`` (see :class:`EpochSampler`), a plain index is epoch 0.

    The start-up scan checks every file (``check``: ``header``, ``verify`` or ``decode``, see
    :func:`~kxnet.data.images.image_info`). A prepared folder (:mod:`kxnet.data.prepared`) is
    read through its manifest, each crop from its memory-mapped array, with the crops the
    folder it was prepared from gives. ``cache_images`` keeps every image decoded in memory in
    its stored depth (decoded once at start-up, which checks it fully); ``None`` caches a folder
    of images (not a prepared one) when that takes at most ``cache_max_bytes``. Workers forked by
    a DataLoader share the cache. ``holdout`` images, evenly spread over the sorted list
    (:func:`spread`), are left out of training: ``held_out`` names them (a validation set).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        patch_size: int,
        *,
        samples_per_epoch: int | None = None,
        repeat: int = 1,
        augment: bool = True,
        seed: int = 0,
        cache_images: bool | None = None,
        cache_max_bytes: int = 1 << 30,
        check: str = "verify",
        threads: int | None = None,
        holdout: int = 0,
    ) -> None:
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size <= 0:
            raise ValueError(f"patch_size must be a positive integer, not {patch_size!r}")
        if samples_per_epoch is not None and samples_per_epoch <= 0:
            raise ValueError(f"samples_per_epoch must be positive, not {samples_per_epoch}")
        if repeat <= 0:
            raise ValueError(f"repeat must be positive, not {repeat}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, not {seed}")
        if check not in CHECKS:
            raise ValueError(f"check must be one of {', '.join(CHECKS)}, not {check!r}")
        self.root = Path(root)
        self.patch_size = patch_size
        self.augment = augment
        self.seed = seed
        self.prepared = is_prepared(self.root)
        usable, small, errors = _headers(self.root, patch_size, threads, TRAIN_DIR_HINT)
        self.deep = any(i.deep for i in usable)
        decoded_bytes = sum(3 * i.width * i.height for i in usable)
        fits = decoded_bytes <= cache_max_bytes and not self.prepared
        self.cached = fits if cache_images is None else cache_images
        self.images = [i.path for i in usable]
        self._sizes = [(i.height, i.width) for i in usable]
        self._cache: list[Tensor] | None = None
        if self.cached:
            self._cache, more = _decode_all(self.images, threads)
        elif self.prepared:
            more = []
            if check != "header":
                prepared_images(self.root, check)
        else:
            more = scan_images(self.images, check, threads)[1] if check != "header" else []
        _conclude(self.root, patch_size, usable, small, errors + more)
        self.held_out = self._hold_out(holdout)
        self.samples_per_epoch = samples_per_epoch or len(self.images) * repeat
        self._order_key: tuple[int, int] | None = None
        self._order: Tensor | None = None
        log.info(
            "training images: %d under %s%s, %d patches of %d×%d per epoch",
            len(self.images),
            self.root,
            f" (decoded in memory, {decoded_bytes / 2**20:.0f} MiB)" if self.cached else "",
            self.samples_per_epoch,
            patch_size,
            patch_size,
        )

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _image_index(self, epoch: int, i: int) -> int:
        """Image of item ``i``: position ``i mod n`` of a permutation drawn per (epoch, round)."""
        n = len(self.images)
        key = (epoch, i // n)
        if self._order_key != key:
            self._order = torch.randperm(n, generator=_generator(_ORDER, self.seed, *key))
            self._order_key = key
        return int(self._order[i % n])  # type: ignore[index]

    def _hold_out(self, count: int) -> list[Path]:
        """Take ``count`` images, evenly spread, out of the training images; returns them."""
        if not count:
            return []
        if count >= len(self.images):
            raise ImageFolderError(
                self.root,
                f"data.val_images={count} held out of the {len(self.images)} usable images in "
                f"{self.root} leaves none to train on: lower data.val_images or add images",
            )
        held = set(spread(list(range(len(self.images))), count))
        keep = [k for k in range(len(self.images)) if k not in held]
        out = [self.images[k] for k in sorted(held)]
        self.images = [self.images[k] for k in keep]
        self._sizes = [self._sizes[k] for k in keep]
        if self._cache is not None:
            self._cache = [self._cache[k] for k in keep]
        return out

    def _image(self, k: int) -> Tensor:
        """Image ``k`` decoded (3×H×W, stored depth): from the cache, or from its file."""
        return self._cache[k] if self._cache is not None else decode_image(self.images[k])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        index = int(index)
        if index < 0:
            raise IndexError(f"index {index} is negative")
        epoch, i = divmod(index, self.samples_per_epoch)
        k = self._image_index(epoch, i)
        mapped = self._cache is None and self.prepared
        img = None if mapped else self._image(k)
        g = _generator(_CROP, self.seed, epoch, i)
        p = self.patch_size
        h, w = self._sizes[k] if mapped else img.shape[-2:]
        top = int(torch.randint(h - p + 1, (), generator=g))
        left = int(torch.randint(w - p + 1, (), generator=g))
        if mapped:
            patch = read_crop(self.images[k], top, left, p)
        else:
            patch = img[:, top : top + p, left : left + p]
        if self.deep:
            patch = to_float(patch)
        if self.augment:
            t = int(torch.randint(8, (), generator=g))
            if t & 1:
                patch = patch.flip(-1)
            if t & 2:
                patch = patch.flip(-2)
            if t & 4:
                patch = patch.transpose(-2, -1)
        return {"hr": patch.contiguous()}


class EpochSampler(Sampler[int]):
    """The indices of one epoch, shuffled per ``(seed, epoch)``, as ``epoch · length + i``.

    Lightning calls :meth:`set_epoch` before each epoch (also through its DDP sampler wrapper,
    which then shards these indices over the ranks); elsewhere call it as for a
    ``DistributedSampler``. ``epoch`` sets the starting epoch (a resumed run's).
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True, epoch: int = 0) -> None:
        if length <= 0:
            raise ValueError(f"length must be positive, not {length}")
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        if self.shuffle:
            g = _generator(_SHUFFLE, self.seed, self.epoch)
            order = torch.randperm(self.length, generator=g)
        else:
            order = torch.arange(self.length)
        return iter((order + self.epoch * self.length).tolist())
