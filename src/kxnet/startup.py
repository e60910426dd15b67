"""Start-up checks that every command shares: patch sizes, devices, writable folders and the
benchmark sets (types, enums and ranges are the config schema's, :mod:`kxnet.schema`).

Each check raises :class:`~kxnet.errors.StartupError` whose message is one line: the option or
file at fault, what is wrong with it, and what would fix it.
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import ListConfig

from kxnet.data.benchmarks import DATASETS
from kxnet.data.images import list_images
from kxnet.errors import StartupError

__all__ = [
    "check_patch",
    "check_device",
    "check_devices",
    "check_writable",
    "check_benchmarks",
]

log = logging.getLogger(__name__)


def check_patch(lr_patch_size: int, scale: int, kernel_size: int) -> None:
    """An HR patch (``lr_patch_size · scale``) at least as large as the p×p kernel that blurs
    it (a smaller one would be all reflect padding)."""
    hr = lr_patch_size * scale
    if hr < kernel_size:
        smallest = -(-kernel_size // scale)
        raise StartupError(
            f"data.lr_patch_size={lr_patch_size} is too small for {kernel_size}×{kernel_size} "
            f"kernels at x{scale} (its HR patches of {hr}×{hr} are smaller than the kernel): set "
            f"data.lr_patch_size={smallest} or more"
        )


def check_devices(devices: Any, option: str = "trainer.devices") -> None:
    """A device count Lightning takes: an integer >= 1, -1 (all), ``auto``, or a non-empty list
    (or comma-separated string) of distinct device indices."""
    value = list(devices) if isinstance(devices, ListConfig | list | tuple) else devices
    if isinstance(value, str) and value.strip() not in ("auto", "-1"):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if len(parts) == 1 and parts[0].lstrip("-").isdigit():
            value = int(parts[0])
        elif parts and all(part.isdigit() for part in parts):
            value = [int(part) for part in parts]
    ok = (
        value in ("auto", "-1")
        or (isinstance(value, int) and not isinstance(value, bool) and (value >= 1 or value == -1))
        or (
            isinstance(value, list)
            and bool(value)
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
            and len(set(value)) == len(value)
        )
    )
    if not ok:
        raise StartupError(
            f"{option}={devices} is not a device count: use a number >= 1, -1 (every device), "
            f"auto, or a list of device indices such as {option}=[0,1]"
        )


def check_device(name: str, option: str) -> torch.device:
    """``auto`` (the GPU if there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``, checked
    against the devices torch sees."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise StartupError(f"{option}={name} is not a device: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StartupError(f"{option}={name} but no CUDA device is available: use {option}=cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise StartupError(
            f"{option}={name} but there are {torch.cuda.device_count()} CUDA devices: "
            f"use {option}=cuda:0"
        )
    return device


def check_writable(folder: str | os.PathLike, option: str) -> Path:
    """Check that ``folder`` can be written, creating nothing: an existing folder takes (then
    loses) a probe file; a missing one needs its nearest existing parent to be a folder this
    process may write in. Whoever writes there first creates it, after every check has passed."""
    folder = Path(folder)
    place = folder
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        if not place.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        if place == folder:
            probe = folder / f".write-test-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        elif not os.access(place, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as err:
        raise StartupError(
            f"{option}={folder} is not a writable folder ({err.strerror or err}): set {option} "
            "to a folder you can write to"
        ) from err
    return folder


def check_benchmarks(
    benchmark_dir: str | os.PathLike, names: Sequence[str] | None, option: str
) -> list[str]:
    """The benchmark sets to use, each a folder of images under ``benchmark_dir``.

    An explicit list (``names`` given) must be there in full. ``None`` means the paper's four
    (:data:`~kxnet.data.benchmarks.DATASETS`): those missing are skipped with a warning, as the
    repository bundles only Set5 and Set14; at least one must be there.
    """
    root = Path(benchmark_dir)
    if not root.is_dir():
        raise StartupError(
            f"paths.benchmark_dir={root} is not a folder: point it at a folder holding "
            f"{', '.join(DATASETS)} (the repository bundles data/benchmarks with Set5 and Set14)"
        )
    explicit = names is not None
    names = list(names) if explicit else list(DATASETS)
    if explicit and not names:
        raise StartupError(
            f"{option}=[] names no benchmark set: list some, or set {option}=null for the paper's"
        )
    present = [n for n in names if (root / n).is_dir() and list_images(root / n)]
    missing = [n for n in names if n not in present]
    if explicit and missing:
        raise StartupError(
            f"{option} names {', '.join(missing)}, but there are no images in "
            f"{', '.join(str(root / m) for m in missing)}: set paths.benchmark_dir to the folder "
            "holding them (`python -m kxnet.data download --sets benchmarks --from DIR` checks a "
            f"copy), or leave them out of {option}"
        )
    for name in missing:
        log.warning("skipping %s: no images in %s (set paths.benchmark_dir)", name, root / name)
    if not present:
        raise StartupError(
            f"none of {', '.join(names)} is under paths.benchmark_dir={root}: point it at a "
            "folder holding them"
        )
    return present
