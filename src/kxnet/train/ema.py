"""An exponential moving average of the weights, and the choice of what a run exports.

:class:`WeightEMA` is Lightning's :class:`~lightning.pytorch.callbacks.EMAWeightAveraging`
(``torch.optim.swa_utils.AveragedModel`` with an EMA update after every optimiser step): the
validation during training runs on the average, and checkpoints hold the average as their
``state_dict`` and the raw weights beside it, for an exact resume. At the end of the fit it keeps
the raw weights, and :func:`keep_the_better` validates both and leaves the better one in the
network that the run tests and exports.
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

__all__ = ["WeightEMA", "keep_the_better"]

log = logging.getLogger(__name__)


class WeightEMA(EMAWeightAveraging):
    """``θ_avg ← decay·θ_avg + (1 − decay)·θ`` after every step; at the end of training the
    average is copied into the network and the raw weights are kept in :attr:`raw_state`."""

    def __init__(self, decay: float = 0.999, **kwargs) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        super().__init__(decay=decay, **kwargs)
        self.raw_state: dict[str, torch.Tensor] | None = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.raw_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)
        # No more swapping: a later validate or test sees the weights the network holds.
        self._average_model = None


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
