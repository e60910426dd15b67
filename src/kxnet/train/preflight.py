"""Start-up checks of ``python -m kxnet.train``: a run that cannot succeed is refused before it
spends any GPU time.

:func:`check_train` runs every check that needs no data to be read; :func:`check_training_data`
then reads the training images' headers (through the data module, so that the scan is the one
training uses). Each raises :class:`~kxnet.errors.StartupError` with a one-line message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from kxnet.checkpoint import (
    CONFIG_KEYS,
    OPTIONS,
    check_finite,
    lightning_net_config,
    read_checkpoint,
)
from kxnet.errors import CheckpointError, StartupError
from kxnet.startup import (
    check_benchmarks,
    check_device,
    check_devices,
    check_patch,
    check_writable,
)

__all__ = [
    "check_resume",
    "check_training_source",
    "warn_if_small",
    "check_train",
    "check_training_data",
]

log = logging.getLogger(__name__)


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


def _checkpoint_dirs(cfg: DictConfig) -> list[tuple[str, Any]]:
    callbacks = cfg.get("callbacks") or {}
    return [
        (f"callbacks.{name}.dirpath", entry.dirpath)
        for name, entry in callbacks.items()
        if entry and entry.get("dirpath")
    ]


# The paper's training set: DIV2K (800 images) + Flickr2K (2650).
PAPER_TRAIN_IMAGES = 3450


def _given(overrides: Sequence[str], *keys: str) -> bool:
    return any(o.lstrip("+~").split("=")[0] in keys for o in overrides)


def check_training_source(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """A run that presents itself as the paper's (``paper_data``) does not train on the bundled
    T91 unless ``paths.train_dir`` (or ``data.train_dir``) is given on the command line."""
    if not cfg.get("paper_data"):
        return
    train_dir, bundled = Path(cfg.data.train_dir), Path(cfg.paths.bundled_train_dir)
    if train_dir == bundled and not _given(overrides, "paths.train_dir", "data.train_dir"):
        raise StartupError(
            f"paths.train_dir={train_dir} is the bundled T91 (91 small images), but this run "
            "presents itself as the paper's, which trains on DIV2K + Flickr2K: run `make data`, "
            "set paths.train_dir to your folder of HR images, or use experiment=quick or "
            "debug=default for the bundled data"
        )


def warn_if_small(cfg: DictConfig, overrides: Sequence[str], images: int, root: Path) -> None:
    """A paper run on a training folder given on the command line that is smaller than the
    paper's is the user's choice: it goes on, with a warning."""
    if cfg.get("paper_data") and images < PAPER_TRAIN_IMAGES:
        log.warning(
            "paths.train_dir=%s holds %d usable images; the paper trains on %d (DIV2K + "
            "Flickr2K, `make data`): results will not be the paper's",
            root,
            images,
            PAPER_TRAIN_IMAGES,
        )


def build(node: Mapping, key: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``, where options that the target refuses are one line
    naming ``key``: ``callbacks.model_checkpoint (…ModelCheckpoint) refuses its options: …``."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = str(err.__cause__ or err).strip().splitlines()[-1]
        raise StartupError(f"{key} ({node.get('_target_')}) refuses its options: {cause}") from err


def check_optim(optimizer: Mapping | None, scheduler: Any) -> None:
    """The optimiser and its schedule (``_target_`` mappings, as the module builds them) build
    on a stand-in parameter: a value they refuse (``optim.optimizer.lr=-1``) is one line at
    start-up, not a traceback once the Trainer starts."""
    if not isinstance(optimizer, Mapping):
        return
    stand_in = [torch.nn.Parameter(torch.zeros(1))]
    built = build(optimizer, "optim.optimizer", params=stand_in, _convert_="all")
    if isinstance(scheduler, Mapping):
        build(scheduler, "optim.scheduler", optimizer=built, _convert_="all")


def check_train(cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """Everything ``python -m kxnet.train`` can check without reading data: the model and
    patch sizes, the training data a paper run takes, the folders it writes, the checkpoint it
    resumes, the optimiser, the benchmark sets. ``overrides`` is the command line."""
    model = {key: cfg.model.net[key] for key in CONFIG_KEYS}
    training = model["stages"] > 0
    if training:
        check_training_source(cfg, overrides)
        check_patch(cfg.data.lr_patch_size, model["scale"], model["kernel_size"])
        check_optim(cfg.model.optimizer, cfg.model.scheduler)
        data_p = cfg.data.kernel_size
        if data_p not in (None, model["kernel_size"]):
            raise StartupError(
                f"model.net.kernel_size={model['kernel_size']} differs from the training kernels' "
                f"setting.kernel_size={data_p}: set setting.kernel_size={model['kernel_size']} "
                "too, or leave model.net.kernel_size to follow the setting"
            )
    devices = cfg.trainer.devices
    if devices is not None:
        check_devices(devices)
    check_writable(cfg.paths.output_dir, "paths.output_dir")
    for option, folder in _checkpoint_dirs(cfg) if training else []:
        check_writable(folder, option)
    check_writable(cfg.paths.cache_dir, "paths.cache_dir")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and training:
        check_resume(ckpt_path, model)
    benchmarks = Path(cfg.data.benchmark_dir)
    validating = cfg.trainer.limit_val_batches != 0
    if training and validating and cfg.data.val_datasets:
        check_benchmarks(benchmarks, list(cfg.data.val_datasets), "data.val_datasets")
    if cfg.get("eval"):
        check_device(str(cfg.eval.get("device") or "auto"), "eval.device")
    if cfg.get("test"):
        names = cfg.data.test_datasets
        check_benchmarks(benchmarks, None if names is None else list(names), "data.test_datasets")


def check_training_data(datamodule: Any, cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
    """Read the training images' headers (the data module's own scan, kept for training) and
    check that an epoch holds one batch (that the batch divides over the ranks is checked once
    the Trainer knows them)."""
    train_set = datamodule.load_train_set()
    warn_if_small(cfg, overrides, len(train_set.images), train_set.root)
    batch = datamodule.hparams.batch_size
    if len(train_set) < batch:
        raise StartupError(
            f"data.batch_size={batch} is more than the {len(train_set)} patches of an epoch "
            f"({len(train_set.images)} images under {train_set.root}): lower data.batch_size, "
            "raise data.repeat or data.samples_per_epoch, or add images"
        )
