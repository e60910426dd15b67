"""An exponential moving average of the weights.

:class:`WeightEMA` is Lightning's :class:`~lightning.pytorch.callbacks.EMAWeightAveraging`
(``torch.optim.swa_utils.AveragedModel`` with an EMA update after every optimiser step): the
validation during training runs on the average, and checkpoints hold the average as their
``state_dict`` and the raw weights beside it, for an exact resume. At the end of the fit it keeps
the raw weights in :attr:`WeightEMA.raw_state`; the end of the run
(:func:`kxnet.train.finish.keep_the_better`) validates both and keeps the better one.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

__all__ = ["WeightEMA"]


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
