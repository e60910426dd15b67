"""The end of a training run: the weights it keeps (the last, the best on validation, or the
better of the weights' average and the raw weights), its test, the exported ``weights.pt``, their
evaluation beside bicubic and the W&B model artifact.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from kxnet.checkpoint import load_model, model_config, read_checkpoint, safe_loading, save_weights
from kxnet.errors import Interrupted
from kxnet.eval.run import EvalPlan, evaluate_beside_bicubic
from kxnet.train.ema import WeightEMA
from kxnet.train.loggers import log_weights
from kxnet.train.progress import report

__all__ = ["WEIGHTS_FILE", "RunEnd", "interrupted", "keep_the_better", "own_best"]

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.pt"


def own_best(trainer: pl.Trainer) -> str:
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


def interrupted(output_dir: Path, trainer: pl.Trainer) -> Interrupted:
    """What a run stopped by Ctrl-C had finished: its exported weights, or the newest checkpoint
    to resume from."""
    weights = output_dir / WEIGHTS_FILE
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


def _score(trainer: pl.Trainer, module: pl.LightningModule, datamodule, metric: str) -> float:
    trainer.validate(module, datamodule=datamodule, verbose=False, weights_only=True)
    return float(torch.as_tensor(trainer.callback_metrics[metric]).detach())


def keep_the_better(
    trainer: pl.Trainer, module: pl.LightningModule, datamodule, ema: WeightEMA, metric: str
) -> str:
    """Validate the averaged weights (in ``module`` after the fit) and the raw ones; leave in
    ``module`` the ones that score higher on ``metric`` (the average on a tie); returns
    ``"averaged"`` or ``"raw"``."""
    if ema.raw_state is None:
        raise RuntimeError("the EMA callback has not finished a fit")
    averaged_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    averaged = _score(trainer, module, datamodule, metric)
    module.load_state_dict(ema.raw_state)
    raw = _score(trainer, module, datamodule, metric)
    kept = "averaged" if averaged >= raw else "raw"
    if kept == "averaged":
        module.load_state_dict(averaged_state)
    log.info(
        "%s on validation: EMA of the weights %.3f, raw weights %.3f: the %s weights are kept",
        metric,
        averaged,
        raw,
        kept,
    )
    return kept


@dataclass(frozen=True)
class RunEnd:
    """What a run does after its fit.

    export: ``last`` (the final weights, as the paper reports; with the :class:`WeightEMA`
    callback, the better of their average and the raw weights on ``metric``) or ``best`` (the
    best checkpoint on validation); test: test them on the test sets; evaluation: evaluate the
    exported file beside bicubic into ``output_dir/eval`` (None: don't); task: the run's name
    (in the W&B artifact's).
    """

    output_dir: Path
    export: str
    test: bool
    metric: str | None
    evaluation: EvalPlan | None
    task: str

    @contextlib.contextmanager
    def reporting_ctrl_c(self, trainer: pl.Trainer) -> Iterator[None]:
        """Ctrl-C inside the block (in the fit, the test or the evaluation) is an
        :class:`~kxnet.errors.Interrupted` saying what the run had finished
        (:func:`interrupted`)."""
        try:
            yield
        except KeyboardInterrupt as err:
            raise interrupted(self.output_dir, trainer) from err
        except SystemExit as err:  # Lightning's answer to Ctrl-C in fit or test: exit status 1
            if trainer.interrupted:
                raise interrupted(self.output_dir, trainer) from err
            raise

    def after_fit(self, trainer: pl.Trainer, module: Any, datamodule: Any) -> dict[str, Any]:
        """Keep, test, export, evaluate and log the weights; returns the run's final metrics."""
        metrics = dict(trainer.callback_metrics)
        best = own_best(trainer)
        exported = best if self.export == "best" and best else None
        ema = next((c for c in trainer.callbacks if isinstance(c, WeightEMA)), None)
        if exported:
            module.load_state_dict(read_checkpoint(Path(exported))["state_dict"])
        with safe_loading():
            if ema is not None and ema.raw_state is not None and not exported:
                keep_the_better(trainer, module, datamodule, ema, self.metric)
            if self.test:
                trainer.test(module, datamodule=datamodule, weights_only=True)
                metrics.update(trainer.callback_metrics)
        if not trainer.is_global_zero:
            return metrics
        weights = self.output_dir / WEIGHTS_FILE
        save_weights(module.net, weights)
        what = f"the best on validation, {exported}" if exported else "the final model"
        kept = f"; the best on validation is kept: {best}" if best and not exported else ""
        log.info("Weights of %s written to %s%s", what, weights, kept)
        summary: list[dict] = []
        if self.evaluation is not None:
            out = self.output_dir / "eval"
            # The exported file, read back as `python -m kxnet.eval` reads it: the same network
            # and the same evaluation give the same figures.
            exported_net = load_model(weights, map_location=self.evaluation.device)
            table, payloads = evaluate_beside_bicubic(exported_net, self.evaluation, out)
            report(log, f"Evaluation of the exported weights beside bicubic:\n{table}")
            log.info("evaluation written to %s (results.json, bicubic/, pictures/)", out)
            summary = payloads["kxnet"]["summary"]
        net = module.net
        log_weights(
            trainer.loggers,
            weights,
            f"kxnet-{self.task}-{net.setting}-x{net.scale}-S{net.num_stages}",
            {
                **model_config(net),
                "parameters": net.paper_parameter_count(),
                "task": self.task,
                "exported": "best on validation" if exported else "final",
                "metrics": _figures(metrics),
                "evaluation": _evaluation(summary),
            },
        )
        return metrics


def _figures(metrics: dict) -> dict[str, float]:
    """The final validation and test figures among the Trainer's metrics."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if key.startswith(("val/", "test/")) and getattr(value, "numel", lambda: 1)() == 1
    }


def _evaluation(summary: list[dict]) -> dict[str, dict[str, float]]:
    """The evaluation beside bicubic: PSNR/SSIM-Y per set, scale and noise."""
    return {
        f"{row['dataset']}/x{row['scale']}/noise{row['noise']:g}": {
            "psnr_y": row["psnr_y"],
            "ssim_y": row["ssim_y"],
        }
        for row in summary
    }
