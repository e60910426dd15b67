"""The training run: check, fit, test, export the bare weights, evaluate them beside bicubic.

:func:`train` is what ``python -m kxnet.train`` calls with the composed config (and what a test
or a notebook calls with one of its own).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from kxnet import hardware
from kxnet.atomic import SHARED_AGE_S, remove_leftovers
from kxnet.checkpoint import load_model, model_config, read_checkpoint, safe_loading, save_weights
from kxnet.errors import Interrupted, StartupError
from kxnet.eval.run import EvalPlan, evaluate_beside_bicubic
from kxnet.train import ddp
from kxnet.train.callbacks import RankSeed
from kxnet.train.ema import WeightEMA, keep_the_better
from kxnet.train.loggers import default_wandb_mode, finish_wandb, log_weights
from kxnet.train.module import KXNetModule
from kxnet.train.preflight import build, check_train, check_training_data
from kxnet.train.progress import report

__all__ = ["WEIGHTS_FILE", "train"]

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.pt"


def _instantiate_all(name: str, group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of the callbacks or loggers group ``name`` (None:
    none); options an entry refuses are one line (:func:`~kxnet.train.preflight.build`)."""
    return [
        build(entry, f"{name}.{key}")
        for key, entry in (group or {}).items()
        if entry and "_target_" in entry
    ]


def _command_line() -> list[str]:
    """The overrides given on the command line (none outside a Hydra run)."""
    if not HydraConfig.initialized():
        return []
    return OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)


def _precision_note(trainer: pl.Trainer) -> str:
    """What the precision means on this machine, for the log line at start."""
    bf16 = hardware.cpu_bf16()
    if trainer.strategy.root_device.type != "cpu":
        return f"on {trainer.strategy.root_device}"
    native = f"native bfloat16 on this CPU: {', '.join(bf16)}" if bf16 else "no native bfloat16"
    return f"{hardware.cpu_name()}, {native}"


# The variables by which a launcher (Lightning's, torchrun, SLURM) tells a process its rank.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def _first_process() -> bool:
    """Whether this is the run's first process (rank 0 of node 0), before the Trainer knows."""
    return all(os.environ.get(name, "0") == "0" for name in _RANK_VARIABLES)


def _remove_leftovers(cfg: DictConfig) -> None:
    """Remove the temporary files that killed runs left in the folders this run writes: the
    checkpoints, the run folder (weights), its evaluation and the benchmark cache."""
    out = Path(cfg.paths.output_dir)
    folders = [out, out / "eval", out / "eval" / "bicubic", out / "eval" / "pictures"]
    callbacks = cfg.get("callbacks") or {}
    folders += [Path(e.dirpath) for e in callbacks.values() if e and e.get("dirpath")]
    for folder in folders:
        remove_leftovers(folder)
    # The benchmark cache may be shared with runs on other machines: only old leftovers.
    remove_leftovers(Path(cfg.paths.cache_dir), recursive=True, min_age_s=SHARED_AGE_S)


def _trainer(cfg: DictConfig, callbacks: list, loggers: list) -> pl.Trainer:
    """The configured Trainer; a set of trainer options Lightning refuses is a StartupError."""
    try:
        return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    except InstantiationException as err:
        cause = err.__cause__
        if not isinstance(cause, MisconfigurationException | ValueError | TypeError):
            raise
        message = " ".join(str(cause).split())
        raise StartupError(
            f"trainer: {message}: check the trainer options (trainer.devices, "
            "trainer.accelerator, trainer.strategy, …)"
        ) from err


def _own_best(trainer: pl.Trainer) -> str:
    """The best checkpoint if it lies in this run's checkpoints folder, else "".

    A resumed run inherits the best path recorded in the checkpoint it resumed, which names any
    file (a crafted checkpoint can name one): only a file this run's checkpoint callback writes
    is loaded."""
    callback = trainer.checkpoint_callback
    best = callback.best_model_path if callback else ""
    if not best:
        return ""
    folder = Path(callback.dirpath or "").resolve()
    if callback.dirpath and folder in Path(best).resolve().parents:
        return best
    log.warning(
        "the best checkpoint on record, %s, is not in this run's %s (a resumed run's record): "
        "the final weights are tested and exported instead",
        best,
        folder,
    )
    return ""


def _artifact_name(cfg: DictConfig, module: KXNetModule) -> str:
    """The W&B model artifact's name: ``kxnet-<task>-<setting>-x<scale>-S<stages>``."""
    net = module.net
    return f"kxnet-{cfg.task_name}-{net.setting}-x{net.scale}-S{net.num_stages}"


def _artifact_metadata(
    cfg: DictConfig, module: KXNetModule, metrics: dict, summary: list[dict], exported: str | None
) -> dict:
    """The model's properties (what rebuilds it), its parameter count, the final validation and
    test figures and the evaluation beside bicubic (PSNR/SSIM-Y per set, scale and noise)."""
    figures = {}
    for key, value in metrics.items():
        if key.startswith(("val/", "test/")) and getattr(value, "numel", lambda: 1)() == 1:
            figures[key] = float(value)
    evaluation = {
        f"{row['dataset']}/x{row['scale']}/noise{row['noise']:g}": {
            "psnr_y": row["psnr_y"],
            "ssim_y": row["ssim_y"],
        }
        for row in summary
    }
    return {
        **model_config(module.net),
        "parameters": module.net.paper_parameter_count(),
        "task": str(cfg.task_name),
        "exported": "best on validation" if exported else "final",
        "metrics": figures,
        "evaluation": evaluation,
    }


class _NoInterruptNotice(logging.Filter):
    """Drops Lightning's "Detected KeyboardInterrupt" notice: the run's own line says more."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Detected KeyboardInterrupt" not in record.getMessage()


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_NoInterruptNotice())


def _interrupted(cfg: DictConfig, trainer: pl.Trainer) -> Interrupted:
    """What a run stopped by Ctrl-C had finished: its exported weights, or the newest checkpoint
    to resume from."""
    weights = Path(cfg.paths.output_dir) / WEIGHTS_FILE
    where = f"stopped by Ctrl-C at step {trainer.global_step}"
    if weights.is_file():
        return Interrupted(
            f"{where}, after training: the weights are exported to {weights}; the testing or "
            "evaluation after it was not finished"
        )
    folders = {Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if cb.dirpath}
    saved = [p for folder in folders if folder.is_dir() for p in folder.glob("*.ckpt")]
    if not saved:
        return Interrupted(f"{where}: no checkpoint was saved yet, nothing to resume")
    newest = max(saved, key=lambda p: p.stat().st_mtime_ns)
    return Interrupted(
        f"{where}: the newest checkpoint is {newest}; resume with ckpt_path={newest} (and the "
        "same options)"
    )


def train(cfg: DictConfig) -> float | None:
    """Check the run, fit, test the exported checkpoint (``cfg.export``: the last one, as the
    paper reports, or the best on validation; with the ``WeightEMA`` callback, the last one is
    its average or the raw weights, whichever validates better), export its weights and (with
    ``cfg.eval``) evaluate them beside bicubic; returns ``cfg.optimized_metric``. ``cfg`` is
    what ``main()`` hands over: checked and plain (:func:`kxnet.config.checked`).

    ``model.net.stages=0`` (the bicubic baseline, nothing to learn) is tested without training.
    """
    overrides = _command_line()
    check_train(cfg, overrides)
    if _first_process():
        _remove_leftovers(cfg)
    evaluation = EvalPlan.from_config(cfg) if cfg.get("eval") else None
    datamodule = instantiate(cfg.data, _convert_="all")
    if cfg.model.net.stages > 0:
        check_training_data(datamodule, cfg, overrides)
    pl.seed_everything(cfg.seed, workers=True)
    module: KXNetModule = instantiate(cfg.model, _recursive_=False)
    callbacks = [RankSeed(cfg.seed), *_instantiate_all("callbacks", cfg.get("callbacks"))]
    loggers = _instantiate_all("logger", cfg.get("logger"))
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        log.info("W&B mode: %s", default_wandb_mode())
    trainer = _trainer(cfg, callbacks, loggers)
    log.info("precision: %s (%s)", trainer.precision, _precision_note(trainer))
    if cfg.model.net.stages > 0:
        datamodule.rank_batch_size(trainer.world_size)
    finished = False
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
        config["params/total"] = sum(p.numel() for p in module.net.parameters())
        for logger in trainer.loggers:
            logger.log_hyperparams(config)
        if module.net.num_stages > 0:
            with safe_loading():
                trainer.fit(
                    module,
                    datamodule=datamodule,
                    ckpt_path=cfg.get("ckpt_path"),
                    weights_only=True,
                )
        else:
            log.info(
                "model.net.stages=0 is the bicubic initialisation: nothing to train, testing only"
            )
        metrics = dict(trainer.callback_metrics)
        best = _own_best(trainer)
        exported = best if cfg.get("export") == "best" and best else None
        if exported:
            module.load_state_dict(read_checkpoint(Path(exported))["state_dict"])
        ema = next((c for c in trainer.callbacks if isinstance(c, WeightEMA)), None)
        if ema is not None and ema.raw_state is not None and not exported:
            with safe_loading():
                keep_the_better(trainer, module, datamodule, ema, cfg.optimized_metric)
        if cfg.get("test"):
            with safe_loading():
                trainer.test(module, datamodule=datamodule, weights_only=True)
            metrics.update(trainer.callback_metrics)
        if trainer.is_global_zero:
            weights = Path(cfg.paths.output_dir) / WEIGHTS_FILE
            save_weights(module.net, weights)
            what = f"the best on validation, {exported}" if exported else "the final model"
            kept = f"; the best on validation is kept: {best}" if best and not exported else ""
            log.info("Weights of %s written to %s%s", what, weights, kept)
            summary: list[dict] = []
            if evaluation is not None:
                out = Path(cfg.paths.output_dir) / "eval"
                # The exported file, read back as `python -m kxnet.eval` reads it: the same
                # network and the same evaluation give the same figures.
                exported_net = load_model(weights, map_location=evaluation.device)
                table, payloads = evaluate_beside_bicubic(exported_net, evaluation, out)
                report(log, f"Evaluation of the exported weights beside bicubic:\n{table}")
                log.info("evaluation written to %s (results.json, bicubic/, pictures/)", out)
                summary = payloads["kxnet"]["summary"]
            log_weights(
                trainer.loggers,
                weights,
                _artifact_name(cfg, module),
                _artifact_metadata(cfg, module, metrics, summary, exported),
            )
        finished = True
    except KeyboardInterrupt as err:
        raise _interrupted(cfg, trainer) from err
    except SystemExit as err:  # Lightning's answer to Ctrl-C in fit or test: exit status 1
        if trainer.interrupted:
            raise _interrupted(cfg, trainer) from err
        raise
    finally:
        ddp.release(trainer, wait=finished)
        finish_wandb()
    value = metrics.get(cfg.get("optimized_metric") or "")
    return None if value is None else float(value)
