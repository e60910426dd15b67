"""Start-up checks: a run that cannot succeed is refused before it spends any GPU time.

Each check raises :class:`StartupError` whose message is one line: the option or file at fault,
what is wrong with it, and what would fix it. :func:`one_line_errors` turns such errors (and
:class:`~kxnet.data.images.DataError`, whose messages follow the same rule) into that line on
stderr and exit status 2, with the traceback only when ``HYDRA_FULL_ERROR=1``.

:func:`check_train` runs every check of ``python -m kxnet.train`` that needs no data to be read;
:func:`check_training_data` then reads the training images' headers (through the data module, so
that the scan is the one training uses). The single checks are for the other commands too.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kxnet import kernels, physics
from kxnet.checkpoint import CheckpointError, read_checkpoint
from kxnet.config import resolve_path
from kxnet.data.images import DataError, list_images

__all__ = [
    "StartupError",
    "report_error",
    "one_line_errors",
    "check_model",
    "asked_properties",
    "check_device",
    "check_writable",
    "check_benchmarks",
    "check_resume",
    "check_train",
    "check_training_data",
]

START_UP_EXIT = 2
# Model properties a checkpoint must share with the config, and the option that sets each.
MODEL_OPTIONS = {
    "scale": "scale",
    "setting": "setting",
    "stages": "model.stages",
    "kernel_size": "model.kernel_size",
}


class StartupError(ValueError):
    """A run that cannot start; the message names the option or file, the cause and the fix."""


def report_error(err: BaseException, status: int = START_UP_EXIT) -> int:
    """Print ``error: MESSAGE`` (on one line) to stderr and return ``status``; with
    ``HYDRA_FULL_ERROR=1``, raise ``err`` instead, traceback and all."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    message = " ".join(str(err).split())
    print(f"error: {message}", file=sys.stderr, flush=True)
    return status


@contextlib.contextmanager
def one_line_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Turn a :class:`StartupError`, a :class:`~kxnet.data.images.DataError` or any of
    ``kinds`` into :func:`report_error`'s line and exit: status 2, or the error's
    ``exit_status`` (1 for errors of a run that had started, such as a diverged training)."""
    try:
        yield
    except (StartupError, DataError, *kinds) as err:
        raise SystemExit(report_error(err, getattr(err, "exit_status", START_UP_EXIT))) from None


def _positive_int(value: Any, option: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StartupError(f"{option}={value} must be an integer >= {minimum}")
    return value


def _check_scale_setting(scale: Any, setting: Any) -> None:
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
    ``lr_patch_size``, an HR patch (``lr_patch_size · scale``) that the kernel's reflect padding
    fits (:func:`kxnet.physics.check_shapes`)."""
    _check_scale_setting(scale, setting)
    _positive_int(stages, "model.stages", minimum=0)
    p = _positive_int(kernel_size, "model.kernel_size")
    if p % 2 == 0:
        raise StartupError(
            f"model.kernel_size={p} is even: kernels need a centre pixel; use an odd size "
            f"(the {setting} x{scale} setting's is {kernels.kernel_size(setting, scale)})"
        )
    if lr_patch_size is None:
        return
    lr = _positive_int(lr_patch_size, "data.lr_patch_size")
    hr = lr * scale
    try:
        physics.check_shapes(
            torch.empty(1, 3, hr, hr, device="meta"), torch.empty(1, p, p, device="meta"), scale
        )
    except ValueError as err:
        smallest = (p // 2) // scale + 1
        raise StartupError(
            f"data.lr_patch_size={lr} is too small for {p}×{p} kernels at x{scale} ({err}): "
            f"set data.lr_patch_size={smallest} or more"
        ) from err


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
    "scale": "scale",
    "model.stages": "stages",
    "model.kernel_size": "kernel_size",
    "setting.kernel_size": "kernel_size",
    "setting": "setting",
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
        "stages": cfg.model.stages,
        "kernel_size": cfg.model.kernel_size,
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
    benchmark_dir: str | os.PathLike, names: Sequence[str], option: str, require: str = "all"
) -> list[str]:
    """The benchmark sets among ``names`` that are folders of images under ``benchmark_dir``;
    ``require="all"``: each of them must be, ``"any"``: at least one. Returns the present ones."""
    root = Path(benchmark_dir)
    present, missing = [], []
    for name in names:
        folder = root / name
        try:
            found = bool(list_images(folder))
        except FileNotFoundError:
            found = False
        (present if found else missing).append(name)
    if (require == "all" and missing) or (require == "any" and names and not present):
        what = ", ".join(str(root / m) for m in missing)
        raise StartupError(
            f"{option}={list(names)}: no images in {what}: set paths.benchmark_dir to the folder "
            f"holding {', '.join(missing)}, fetch them with `python -m kxnet.data download "
            f"--sets benchmarks`, or leave them out of {option}"
        )
    return present


def check_resume(
    path: str | os.PathLike, model: Mapping[str, Any], option: str = "ckpt_path"
) -> Mapping[str, Any]:
    """A Lightning checkpoint of :class:`~kxnet.module.KXNetModule` to resume training from,
    trained with the same scale, setting, stages and kernel size as ``model``; returns it."""
    path = Path(os.path.expanduser(str(path))).absolute()
    if not path.is_file():
        raise StartupError(
            f"{option}={path} does not exist: pass the last.ckpt (or another .ckpt) under a "
            "run's checkpoints/ folder, or leave it out to start afresh"
        )
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as err:
        raise StartupError(f"{option}={err}") from err
    if not isinstance(ckpt, Mapping):
        raise StartupError(f"{option}={path} holds a {type(ckpt).__name__}, not a checkpoint")
    if ckpt.get("format") is not None or "optimizer_states" not in ckpt or "loops" not in ckpt:
        raise StartupError(
            f"{option}={path} is not a training checkpoint (no optimiser and loop states; "
            "exported weights cannot resume a run): pass <run folder>/checkpoints/last.ckpt"
        )
    hparams = ckpt.get("hyper_parameters") or {}
    saved = hparams.get("model") if isinstance(hparams, Mapping) else None
    if not isinstance(saved, Mapping):
        raise StartupError(
            f"{option}={path} has no hyper_parameters['model']: it was not saved by "
            "kxnet.module.KXNetModule"
        )
    for key, option_name in MODEL_OPTIONS.items():
        if saved.get(key) != model.get(key):
            raise StartupError(
                f"{option}={path} was trained with {option_name}={saved.get(key)} but "
                f"{option_name}={model.get(key)} is configured: set {option_name}="
                f"{saved.get(key)} to resume it, or start without {option}"
            )
    return ckpt


def _value(cfg: DictConfig, key: str, option: str) -> Any:
    """A config value, resolved; an interpolation that fails is a start-up error."""
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except OmegaConfBaseException as err:
        cause = err.__cause__ or err
        message = str(cause).split("\n")[0]
        raise StartupError(f"{option} cannot be resolved ({message})") from err


def _checkpoint_dirs(cfg: DictConfig) -> list[tuple[str, Any]]:
    callbacks = cfg.get("callbacks") or {}
    return [
        (f"callbacks.{name}.dirpath", entry.dirpath)
        for name, entry in callbacks.items()
        if entry and entry.get("dirpath")
    ]


def check_train(cfg: DictConfig) -> None:
    """Everything ``python -m kxnet.train`` can check without reading data: the model and
    patch sizes, the folders it writes, the checkpoint it resumes, the benchmark sets."""
    _check_scale_setting(_value(cfg, "scale", "scale"), _value(cfg, "setting.name", "setting"))
    model = {
        "scale": _value(cfg, "module.model.scale", "scale"),
        "setting": _value(cfg, "module.model.setting", "setting"),
        "stages": _value(cfg, "module.model.stages", "model.stages"),
        "kernel_size": _value(cfg, "module.model.kernel_size", "model.kernel_size"),
    }
    check_model(**model)
    training = model["stages"] > 0
    if training:
        check_model(**model, lr_patch_size=_value(cfg, "data.lr_patch_size", "data"))
        data_p = _value(cfg, "data.kernel_size", "setting.kernel_size")
        if data_p not in (None, model["kernel_size"]):
            raise StartupError(
                f"model.kernel_size={model['kernel_size']} differs from the training kernels' "
                f"setting.kernel_size={data_p}: set setting.kernel_size={model['kernel_size']} "
                "too, or leave model.kernel_size to follow the setting"
            )
        _positive_int(_value(cfg, "data.batch_size", "data.batch_size"), "data.batch_size")
    check_writable(_value(cfg, "paths.output_dir", "paths.output_dir"), "paths.output_dir")
    for option, folder in _checkpoint_dirs(cfg) if training else []:
        check_writable(folder, option)
    check_writable(resolve_path(_value(cfg, "paths.cache_dir", "paths")), "paths.cache_dir")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and training:
        check_resume(ckpt_path, model)
    benchmarks = resolve_path(_value(cfg, "data.benchmark_dir", "paths.benchmark_dir"))
    if training and _value(cfg, "trainer.limit_val_batches", "trainer") != 0:
        check_benchmarks(benchmarks, list(cfg.data.val_datasets or []), "data.val_datasets")
    if cfg.get("eval"):
        check_device(str(cfg.eval.get("device") or "auto"), "eval.device")
    if cfg.get("test"):
        check_benchmarks(
            benchmarks, list(cfg.data.test_datasets or []), "data.test_datasets", require="any"
        )


def check_training_data(datamodule: Any) -> None:
    """Read the training images' headers (the data module's own scan, kept for training) and
    check that an epoch holds at least one batch."""
    train_set = datamodule.load_train_set()
    batch = datamodule.hparams.batch_size
    if len(train_set) < batch:
        raise StartupError(
            f"data.batch_size={batch} is more than the {len(train_set)} patches of an epoch "
            f"({len(train_set.images)} images under {train_set.root}): lower data.batch_size, "
            "raise data.repeat or data.samples_per_epoch, or add images"
        )
