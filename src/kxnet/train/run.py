"""The training run: check, build, fit, then keep, test, export and evaluate the weights.

:func:`train` is what ``python -m kxnet.train`` calls with the composed config (and what a test
or a notebook calls with one of its own): the start-up checks in one pass
(:mod:`~kxnet.train.preflight`), the objects built (:mod:`~kxnet.train.components`), the fit, and
the end of the run (:mod:`~kxnet.train.finish`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from kxnet.atomic import SHARED_AGE_S, remove_leftovers
from kxnet.checkpoint import safe_loading
from kxnet.schema.train import TrainConfig
from kxnet.train import ddp
from kxnet.train.components import build_components
from kxnet.train.finish import WEIGHTS_FILE, RunEnd
from kxnet.train.loggers import finish_wandb
from kxnet.train.preflight import check_train

__all__ = ["WEIGHTS_FILE", "train"]

log = logging.getLogger(__name__)


def _command_line() -> list[str]:
    """The overrides given on the command line (none outside a Hydra run)."""
    if not HydraConfig.initialized():
        return []
    return OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)


# The variables by which a launcher (Lightning's, torchrun, SLURM) tells a process its rank.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def _first_process() -> bool:
    """Whether this is the run's first process (rank 0 of node 0), before the Trainer knows."""
    return all(os.environ.get(name, "0") == "0" for name in _RANK_VARIABLES)


class _NoInterruptNotice(logging.Filter):
    """Drops Lightning's "Detected KeyboardInterrupt" notice: the run's own line says more."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Detected KeyboardInterrupt" not in record.getMessage()


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_NoInterruptNotice())


def train(config: TrainConfig) -> float | None:
    """Check the run, fit, then keep, test, export and evaluate the weights
    (:class:`~kxnet.train.finish.RunEnd`: ``config.export``, ``config.test``, ``config.eval``);
    returns ``config.optimized_metric``. ``config`` is what ``main()`` hands over: checked and
    typed (:func:`kxnet.schema.typed`).

    ``model.net.stages=0`` (the bicubic baseline, nothing to learn) is tested without training.
    """
    plan = check_train(config, _command_line())
    if _first_process():
        for folder in plan.folders:
            remove_leftovers(folder)
        # The benchmark cache may be shared with runs on other machines: only old leftovers.
        remove_leftovers(plan.cache_dir, recursive=True, min_age_s=SHARED_AGE_S)
    parts = build_components(
        asdict(config.data),
        asdict(config.model),
        asdict(config.trainer),
        config.callbacks,
        config.logger,
        config.seed,
    )
    trainer, module, datamodule = parts.trainer, parts.module, parts.datamodule
    end = RunEnd(
        Path(config.paths.output_dir),
        config.export,
        config.test,
        config.optimized_metric,
        plan.evaluation,
        config.task_name,
    )
    finished = False
    try:
        with end.reporting_ctrl_c(trainer):
            hyperparameters = asdict(config)
            hyperparameters["params/total"] = sum(p.numel() for p in module.net.parameters())
            for logger in trainer.loggers:
                logger.log_hyperparams(hyperparameters)
            if module.net.num_stages > 0:
                with safe_loading():
                    trainer.fit(
                        module,
                        datamodule=datamodule,
                        ckpt_path=config.ckpt_path,
                        weights_only=True,
                    )
            else:
                log.info(
                    "model.net.stages=0 is the bicubic initialisation: nothing to train, "
                    "testing only"
                )
            metrics = end.after_fit(trainer, module, datamodule)
        finished = True
    finally:
        ddp.release(trainer, wait=finished)
        finish_wandb()
    value = metrics.get(config.optimized_metric or "")
    return None if value is None else float(value)
