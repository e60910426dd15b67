"""The training run: check, fit, test, export the bare weights, evaluate them beside bicubic.

:func:`train` is what ``python -m kxnet.train`` calls with the composed config (and what a test
or a notebook calls with one of its own).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from kxnet import hardware
from kxnet.checkpoint import read_checkpoint, save_weights
from kxnet.eval.driver import EvalPlan, evaluate_beside_bicubic
from kxnet.train import ddp
from kxnet.train.callbacks import RankSeed
from kxnet.train.checks import check_train, check_training_data
from kxnet.train.loggers import default_wandb_mode, finish_wandb
from kxnet.train.module import KXNetModule
from kxnet.train.progress import report

__all__ = ["WEIGHTS_FILE", "train"]

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.pt"


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a callbacks or loggers group (None: none)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


def _command_line() -> list[str]:
    """The overrides given on the command line (none outside a Hydra run)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _precision_note(trainer: pl.Trainer) -> str:
    """What the precision means on this machine, for the log line at start."""
    bf16 = hardware.cpu_bf16()
    if trainer.strategy.root_device.type != "cpu":
        return f"on {trainer.strategy.root_device}"
    native = f"native bfloat16 on this CPU: {', '.join(bf16)}" if bf16 else "no native bfloat16"
    return f"{hardware.cpu_name()}, {native}"


def train(cfg: DictConfig) -> float | None:
    """Check the run, fit, test the exported checkpoint (``cfg.export``: the last one, as the
    paper reports, or the best on validation), export its weights and (with ``cfg.eval``)
    evaluate them beside bicubic; returns ``cfg.optimized_metric``.

    ``model.net.stages=0`` (the bicubic baseline, nothing to learn) is tested without training.
    """
    overrides = _command_line()
    check_train(cfg, overrides)
    evaluation = EvalPlan.from_config(cfg) if cfg.get("eval") else None
    datamodule = instantiate(cfg.data, _convert_="all")
    pl.seed_everything(cfg.seed, workers=True)
    module: KXNetModule = instantiate(cfg.model, _recursive_=False)
    callbacks = [RankSeed(cfg.seed), *_instantiate_all(cfg.get("callbacks"))]
    loggers = _instantiate_all(cfg.get("logger"))
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        log.info("W&B mode: %s", default_wandb_mode())
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log.info("precision: %s (%s)", trainer.precision, _precision_note(trainer))
    if cfg.model.net.stages > 0:
        check_training_data(datamodule, trainer.world_size, cfg, overrides)
    finished = False
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
        config["params/total"] = sum(p.numel() for p in module.net.parameters())
        for logger in trainer.loggers:
            logger.log_hyperparams(config)
        if module.net.num_stages > 0:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        else:
            log.info(
                "model.net.stages=0 is the bicubic initialisation: nothing to train, testing only"
            )
        metrics = dict(trainer.callback_metrics)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        exported = best if cfg.get("export") == "best" and best else None
        if exported:
            module.load_state_dict(read_checkpoint(Path(exported))["state_dict"])
        if cfg.get("test"):
            trainer.test(module, datamodule=datamodule)
            metrics.update(trainer.callback_metrics)
        if trainer.is_global_zero:
            weights = Path(cfg.paths.output_dir) / WEIGHTS_FILE
            save_weights(module.net, weights)
            what = f"the best on validation, {exported}" if exported else "the final model"
            kept = f"; the best on validation is kept: {best}" if best and not exported else ""
            log.info("Weights of %s written to %s%s", what, weights, kept)
            if evaluation is not None:
                out = Path(cfg.paths.output_dir) / "eval"
                table, _ = evaluate_beside_bicubic(module.net, evaluation, out)
                report(log, f"Evaluation of the exported weights beside bicubic:\n{table}")
                log.info("evaluation written to %s (results.json, bicubic/, pictures/)", out)
        finished = True
    finally:
        ddp.release(trainer, wait=finished)
        finish_wandb()
    value = metrics.get(cfg.get("optimized_metric") or "")
    return None if value is None else float(value)
