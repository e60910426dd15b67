"""Start-up checks of ``python -m kxnet.train``: a run that cannot succeed is refused before it
spends any GPU time.

:func:`check_train` runs every check that needs no data to be read, in one pass, and returns
what it found (:class:`TrainPlan`); the data module then scans the training images itself
(:meth:`~kxnet.data.datamodule.KXNetDataModule.load_train_set`). Each raises
:class:`~kxnet.errors.StartupError` with a one-line message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kxnet.checkpoint import (
    CONFIG_KEYS,
    OPTIONS,
    check_finite,
    lightning_net_config,
    read_checkpoint,
)
from kxnet.errors import CheckpointError, StartupError
from kxnet.eval.run import EvalOptions, EvalPlan
from kxnet.schema.train import TrainConfig
from kxnet.startup import (
    check_benchmarks,
    check_device,
    check_devices,
    check_patch,
    check_writable,
)

__all__ = ["TrainPlan", "check_resume", "check_training_source", "check_train"]


def check_resume(
    path: str | os.PathLike, model: Mapping[str, Any], option: str = "ckpt_path"
) -> Mapping[str, Any]:
    """A Lightning checkpoint of :class:`~kxnet.train.module.KXNetModule` to resume training from,
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
    try:
        saved = lightning_net_config(ckpt, path)
        state = ckpt.get("state_dict")
        check_finite(path, state if isinstance(state, Mapping) else {})
    except CheckpointError as err:
        raise StartupError(f"{option}={err}") from err
    if saved is None:
        raise StartupError(
            f"{option}={path} has no hyper_parameters['net']: it was not saved by "
            "kxnet.train.module.KXNetModule"
        )
    for key, option_name in OPTIONS.items():
        if saved.get(key) != model.get(key):
            raise StartupError(
                f"{option}={path} was trained with {option_name}={saved.get(key)} but "
                f"{option_name}={model.get(key)} is configured: set {option_name}="
                f"{saved.get(key)} to resume it, or start without {option}"
            )
    return ckpt


def _given(overrides: Sequence[str], *keys: str) -> bool:
    return any(o.lstrip("+~").split("=")[0] in keys for o in overrides)


def check_training_source(config: TrainConfig, overrides: Sequence[str]) -> None:
    """A run that presents itself as the paper's (``paper_data``) does not train on the bundled
    T91 unless ``paths.train_dir`` (or ``data.train_dir``) is given on the command line."""
    if not config.paper_data:
        return
    train_dir, bundled = Path(config.data.train_dir), Path(config.paths.bundled_train_dir)
    if train_dir == bundled and not _given(overrides, "paths.train_dir", "data.train_dir"):
        raise StartupError(
            f"paths.train_dir={train_dir} is the bundled T91 (91 small images), but this run "
            "presents itself as the paper's, which trains on DIV2K + Flickr2K: run `make data`, "
            "set paths.train_dir to your folder of HR images, or use experiment=quick or "
            "debug=default for the bundled data"
        )


@dataclass(frozen=True)
class TrainPlan:
    """What :func:`check_train` found: the folders the run writes (its output folder, the
    evaluation's and the checkpoints'), the benchmark cache it shares, and its evaluation beside
    bicubic (None: none)."""

    folders: tuple[Path, ...]
    cache_dir: Path
    evaluation: EvalPlan | None


def check_train(config: TrainConfig, overrides: Sequence[str] = ()) -> TrainPlan:
    """Everything ``python -m kxnet.train`` can check without reading data, in one pass: the
    training data a paper run takes, the kernel and patch sizes, the checkpoint it resumes, the
    devices, the folders it writes, the benchmark sets of validation, test and evaluation.
    ``overrides`` is the command line. (The optimiser is checked by the module that builds it,
    the training images by the data module's scan.)"""
    model = {key: getattr(config.model.net, key) for key in CONFIG_KEYS}
    training = model["stages"] > 0
    ckpt_path = config.ckpt_path
    if training:
        check_training_source(config, overrides)
        data_p = config.data.kernel_size
        if data_p not in (None, model["kernel_size"]):
            raise StartupError(
                f"model.net.kernel_size={model['kernel_size']} differs from the training kernels' "
                f"setting.kernel_size={data_p}: set setting.kernel_size={model['kernel_size']} "
                "too, or leave model.net.kernel_size to follow the setting"
            )
        if ckpt_path:
            check_resume(ckpt_path, model)
    options = EvalOptions.from_config(config.eval) if config.eval else None
    if training:
        check_patch(config.data.lr_patch_size, model["scale"], model["kernel_size"])
    if config.trainer.devices is not None:
        check_devices(config.trainer.devices)
    device = check_device(options.device, "eval.device") if options else None
    out = Path(config.paths.output_dir)
    written = {"paths.output_dir": out, "paths.cache_dir": Path(config.paths.cache_dir)}
    if training:
        written |= {
            f"callbacks.{name}.dirpath": Path(entry["dirpath"])
            for name, entry in (config.callbacks or {}).items()
            if entry and entry.get("dirpath")
        }
    for option, folder in written.items():
        check_writable(folder, option)
    wanted: dict[str, list[str] | None] = {}
    if training and config.trainer.limit_val_batches != 0 and config.data.val_datasets:
        wanted["data.val_datasets"] = list(config.data.val_datasets)
    if config.test:
        names = config.data.test_datasets
        wanted["data.test_datasets"] = None if names is None else list(names)
    if options:
        wanted["eval.datasets"] = None if options.datasets is None else list(options.datasets)
    benchmark_dir = Path(config.data.benchmark_dir)
    present = {
        option: check_benchmarks(benchmark_dir, names, option) for option, names in wanted.items()
    }
    cache_dir = written.pop("paths.cache_dir")
    evaluation = None
    if options:
        sets = tuple(present["eval.datasets"])
        evaluation = EvalPlan(options, device, benchmark_dir, cache_dir, sets)
    eval_dirs = (out / "eval", out / "eval" / "bicubic", out / "eval" / "pictures")
    return TrainPlan((*written.values(), *eval_dirs), cache_dir, evaluation)
