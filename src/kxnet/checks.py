"""Start-up checks that every command shares: model options, devices, writable folders, the
checkpoint properties a command line asks for, and the benchmark sets.

Each check raises :class:`~kxnet.errors.StartupError` whose message is one line: the option or
file at fault, what is wrong with it, and what would fix it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig

from kxnet import kernels
from kxnet.checkpoint import OPTIONS
from kxnet.data.benchmarks import DATASETS
from kxnet.data.images import list_images
from kxnet.errors import StartupError

__all__ = [
    "positive_int",
    "check_scale_setting",
    "check_model",
    "check_device",
    "check_devices",
    "asked_properties",
    "check_writable",
    "check_benchmarks",
]

log = logging.getLogger(__name__)


def positive_int(value: Any, option: str, minimum: int = 1) -> int:
    """``value``, if it is an integer >= ``minimum`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StartupError(f"{option}={value} must be an integer >= {minimum}")
    return value


def check_scale_setting(scale: Any, setting: Any) -> None:
    """Scale 2, 3 or 4 and setting iso or aniso."""
    if scale not in (2, 3, 4) or isinstance(scale, bool):
        raise StartupError(f"scale={scale} is not a KXNet scale: use scale=2, 3 or 4")
    if setting not in kernels.SETTINGS:
        raise StartupError(
            f"setting={setting} is not a setting: use setting=iso (paper Setting 1) or "
            "setting=aniso (Setting 2)"
        )


def check_model(
    scale: Any, setting: Any, stages: Any, kernel_size: Any, lr_patch_size: Any | None = None
) -> None:
    """Scale 2/3/4, setting iso/aniso, stages >= 0 and an odd kernel size; with
    ``lr_patch_size``, an HR patch (``lr_patch_size · scale``) at least as large as the p×p
    kernel that blurs it (a smaller one would be all reflect padding)."""
    check_scale_setting(scale, setting)
    positive_int(stages, OPTIONS["stages"], minimum=0)
    p = positive_int(kernel_size, OPTIONS["kernel_size"])
    if p % 2 == 0:
        raise StartupError(
            f"{OPTIONS['kernel_size']}={p} is even: kernels need a centre pixel; use an odd size "
            f"(the {setting} x{scale} setting's is {kernels.kernel_size(setting, scale)})"
        )
    if lr_patch_size is None:
        return
    lr = positive_int(lr_patch_size, "data.lr_patch_size")
    hr = lr * scale
    if hr < p:
        smallest = -(-p // scale)
        raise StartupError(
            f"data.lr_patch_size={lr} is too small for {p}×{p} kernels at x{scale} (its HR "
            f"patches of {hr}×{hr} are smaller than the kernel): set data.lr_patch_size="
            f"{smallest} or more"
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


# Command-line keys that ask for a checkpoint property, and the property.
_ASKS = {
    **{option: prop for prop, option in OPTIONS.items()},
    "setting.kernel_size": "kernel_size",
    "setting.name": "setting",
}


def asked_properties(
    cfg: DictConfig, overrides: Sequence[str], required: Sequence[str] = ()
) -> dict[str, Any]:
    """The checkpoint properties (scale, stages, kernel_size, setting) that the command line
    sets, or that ``required`` names, with their configured values: what a checkpoint loaded
    by eval or predict must agree with."""
    keys = {o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))}
    values = {
        "scale": cfg.scale,
        "stages": cfg.model.net.stages,
        "kernel_size": cfg.model.net.kernel_size,
        "setting": cfg.setting.name,
    }
    asked = {prop for key, prop in _ASKS.items() if key in keys} | set(required)
    return {prop: values[prop] for prop in values if prop in asked}


def check_writable(folder: str | os.PathLike, option: str) -> Path:
    """Create ``folder`` if needed and write (then remove) a file in it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
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
