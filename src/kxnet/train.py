"""``python -m kxnet.train``: train KXNet, test the best checkpoint, export its bare weights.

python -m kxnet.train setting=aniso scale=4              # the paper's recipe
python -m kxnet.train experiment=quick                   # a short run on a CPU
python -m kxnet.train -m model.stages=5,10 trainer=ddp   # a sweep, each job on 2 devices
python -m kxnet.train ckpt_path=…/checkpoints/last.ckpt  # resume exactly

A run that cannot succeed (missing or unreadable data, inconsistent sizes, a checkpoint of
another model, an output folder that cannot be written) stops before training with one line
saying why and exit status 2 (``HYDRA_FULL_ERROR=1`` shows the traceback).
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import hydra
import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from kxnet import checks, ddp
from kxnet.callbacks import DivergedError, RankSeed
from kxnet.checkpoint import save_weights
from kxnet.config import CONFIG_DIR
from kxnet.final_eval import evaluate_run
from kxnet.module import KXNetModule

__all__ = ["train", "main", "default_wandb_mode"]

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.pt"


def default_wandb_mode() -> str:
    """Set ``WANDB_MODE=offline`` unless it is set or W&B credentials exist; return the mode."""
    if "WANDB_MODE" not in os.environ and not _wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"
    return os.environ.get("WANDB_MODE", "online")


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.is_file() and netrc.netrc(path).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a callbacks or loggers group (None: none)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


def _finish_wandb() -> None:
    """Close this job's W&B run, so that the next job of a sweep gets its own."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def train(cfg: DictConfig) -> float | None:
    """Check the run (:func:`kxnet.checks.check_train`, then the training images), fit, test
    the best checkpoint, export its weights and (with ``cfg.eval``) evaluate them beside bicubic;
    returns ``cfg.optimized_metric``.

    ``model.stages=0`` (the bicubic baseline, nothing to learn) is tested without training.
    """
    checks.check_train(cfg)
    datamodule = instantiate(cfg.data, _convert_="all")
    if cfg.model.stages > 0:
        checks.check_training_data(datamodule)
    pl.seed_everything(cfg.seed, workers=True)
    module: KXNetModule = instantiate(cfg.module, _recursive_=False)
    callbacks = [RankSeed(cfg.seed), *_instantiate_all(cfg.get("callbacks"))]
    loggers = _instantiate_all(cfg.get("logger"))
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        log.info("W&B mode: %s", default_wandb_mode())
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    finished = False
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
        config["params/total"] = sum(p.numel() for p in module.net.parameters())
        for logger in trainer.loggers:
            logger.log_hyperparams(config)
        if module.net.num_stages > 0:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        else:
            log.info("model.stages=0 is the bicubic initialisation: nothing to train, testing only")
        metrics = dict(trainer.callback_metrics)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if cfg.get("test"):
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
            metrics.update(trainer.callback_metrics)
        elif best:
            module.load_state_dict(torch.load(best, map_location="cpu")["state_dict"])
        if trainer.is_global_zero:
            weights = Path(cfg.paths.output_dir) / WEIGHTS_FILE
            save_weights(module.net, weights)
            log.info("Weights of %s written to %s", best or "the final model", weights)
            if cfg.get("eval"):
                evaluate_run(module.net, cfg.eval, cfg.paths, cfg.paths.output_dir)
        finished = True
    finally:
        ddp.release(trainer, wait=finished)
        _finish_wandb()
    value = metrics.get(cfg.get("optimized_metric") or "")
    return None if value is None else float(value)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    with checks.one_line_errors(DivergedError):
        return train(cfg)


if __name__ == "__main__":
    main()
