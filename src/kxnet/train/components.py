"""The objects of a training run, built from their config nodes in one place: the data module
(its training images scanned), the LightningModule, the callbacks, the loggers and the Trainer.

Each checks its own options as it is built (a value its class refuses is one line naming the
option, :func:`kxnet.instantiation.build`); what :func:`build_components` checks on top is what
needs two of them: the global batch against the Trainer's ranks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger

from kxnet import hardware
from kxnet.instantiation import build, build_group
from kxnet.train.callbacks import RankSeed
from kxnet.train.loggers import default_wandb_mode

__all__ = ["Components", "build_components"]

log = logging.getLogger(__name__)


@dataclass
class Components:
    """What :func:`build_components` built."""

    datamodule: Any
    module: Any
    trainer: pl.Trainer


def build_components(
    data: Mapping,
    model: Mapping,
    trainer: Mapping,
    callbacks: Mapping | None,
    loggers: Mapping | None,
    seed: int,
) -> Components:
    """The data module (with its training images scanned and checked, when the model has stages
    to train), the module (from the common ``seed``), the callbacks (:class:`RankSeed` first),
    the loggers and the Trainer, from their config nodes."""
    seeding = RankSeed(seed)
    datamodule = build(data, "data", _convert_="all")
    training = model["net"]["stages"] > 0
    if training:
        datamodule.load_train_set()
    pl.seed_everything(seed, workers=True)
    module = build(model, "model", _recursive_=False)
    built_callbacks = build_group("callbacks", callbacks)
    built_loggers = build_group("logger", loggers)
    built = build(
        trainer, "trainer", callbacks=[seeding, *built_callbacks], logger=built_loggers or False
    )
    if any(isinstance(logger, WandbLogger) for logger in built_loggers):
        log.info("W&B mode: %s", default_wandb_mode())
    note = hardware.device_note(built.strategy.root_device)
    log.info("precision: %s (%s)", built.precision, note)
    if training:
        datamodule.rank_batch_size(built.world_size)
    return Components(datamodule, module, built)
