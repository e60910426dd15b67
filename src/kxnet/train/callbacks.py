"""Callbacks of the training run: a seed per rank; wall time, step time and peak memory; the
roll-back of a run whose steps keep going non-finite."""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import apply_to_collection
from torch import Tensor

from kxnet.errors import DivergedError
from kxnet.train.progress import report

__all__ = ["RankSeed", "ResourceMonitor", "NonFiniteRollback", "peak_memory_gib"]

log = logging.getLogger(__name__)
# Optimiser parameter-group entries that a learning-rate schedule reads (OneCycleLR: max_lr,
# min_lr, initial_lr); each is scaled with the learning rate.
_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory of this process: the CUDA allocator's peak on a GPU, else the peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**30 if sys.platform == "darwin" else rss / 2**20


class RankSeed(pl.Callback):
    """Seeds the process-wide generators with ``seed + global rank`` once the ranks are known
    (after the network was built from the common seed), so that data loading and augmentation
    differ between ranks while every rank starts from the same weights."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            pl.seed_everything(self.seed + trainer.global_rank, workers=True, verbose=False)


class ResourceMonitor(pl.Callback):
    """Logs ``perf/wall_time_s`` (training time, carried across resumes), ``perf/step_time_s``
    (mean over the steps since the last log) and ``perf/peak_memory_gib``; prints a summary at
    the end of training."""

    def __init__(self) -> None:
        self._carried = 0.0
        self._start = self._mark = 0.0
        self._steps_since_mark = 0

    def _elapsed(self) -> float:
        return self._carried + time.perf_counter() - self._start

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._mark = time.perf_counter()
        self._steps_since_mark = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        self._steps_since_mark += 1
        if trainer.global_step % trainer.log_every_n_steps:
            return
        now = time.perf_counter()
        values = {
            "perf/wall_time_s": self._elapsed(),
            "perf/step_time_s": (now - self._mark) / self._steps_since_mark,
            "perf/peak_memory_gib": peak_memory_gib(pl_module.device),
        }
        pl_module.log_dict(values, on_step=True, on_epoch=False)
        self._mark, self._steps_since_mark = now, 0

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            report(
                log,
                f"Trained {trainer.global_step} steps in {self._elapsed():.0f} s, peak memory "
                f"{peak_memory_gib(pl_module.device):.2f} GiB (rank 0)",
            )

    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self._elapsed() if self._start else self._carried}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._carried = float(state_dict["wall_time_s"])


def _cpu_copy(tree: Any) -> Any:
    return apply_to_collection(tree, Tensor, lambda t: t.detach().to("cpu", copy=True))


def scale_learning_rate(trainer: pl.Trainer, factor: float) -> list[float]:
    """Multiply every optimiser's learning rate, and what its schedule computes it from (the
    schedulers' ``base_lrs``, OneCycleLR's ``max_lr``/``min_lr``/``initial_lr``), by ``factor``;
    returns the new learning rates."""
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            for key in _LR_KEYS:
                if isinstance(group.get(key), float | int):
                    group[key] = group[key] * factor
    for config in trainer.lr_scheduler_configs:
        base = getattr(config.scheduler, "base_lrs", None)
        if base is not None:
            config.scheduler.base_lrs = [lr * factor for lr in base]
    return [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]


class NonFiniteRollback(pl.Callback):
    """Rolls a diverging run back: the known failure mode of blind-SR training.

    :class:`~kxnet.train.module.KXNetModule` never applies a step whose loss or kernel estimate is
    not finite (it logs the step and the batch's kernel parameters). When ``max_skipped`` such
    steps fall within ``window`` consecutive steps, this callback puts back the weights and
    optimiser state of the last checkpoint saved before them (or of the start of this fit, if
    none was saved since) and multiplies the learning rate by ``lr_factor``; the step counter,
    the data and the schedule go on, so that the batches that led to the trouble are not
    replayed. After ``max_rollbacks`` roll-backs, the next one raises :class:`DivergedError`.

    Under DDP every rank skips the same steps (the module agrees on them), so every rank rolls
    back at the same step, to the same state. The state kept for a roll-back is a CPU copy of
    the network and optimiser (about 3 × the parameters for Adam). ``train/skipped_steps`` and
    ``train/rollbacks`` are logged when they change; both, and the window, are saved in
    checkpoints.
    """

    def __init__(
        self, max_skipped: int = 3, window: int = 100, lr_factor: float = 0.5, max_rollbacks=5
    ) -> None:
        if max_skipped < 1 or window < 1 or max_rollbacks < 0 or not 0 < lr_factor < 1:
            raise ValueError(
                "NonFiniteRollback needs max_skipped >= 1, window >= 1, max_rollbacks >= 0 and "
                f"0 < lr_factor < 1, got {max_skipped}, {window}, {max_rollbacks}, {lr_factor}"
            )
        self.max_skipped = max_skipped
        self.window = window
        self.lr_factor = lr_factor
        self.max_rollbacks = max_rollbacks
        self.recent: list[int] = []
        self.skipped = 0
        self.rollbacks = 0
        self._good: dict[str, Any] | None = None

    def _keep(self, step: int, state_dict: Mapping, optimizer_states: list) -> None:
        self._good = {
            "step": step,
            "state_dict": _cpu_copy(dict(state_dict)),
            "optimizer_states": _cpu_copy(list(optimizer_states)),
        }

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        states = [optimizer.state_dict() for optimizer in trainer.optimizers]
        self._keep(trainer.global_step, pl_module.state_dict(), states)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if not self.recent and "optimizer_states" in checkpoint:
            # With an average of the weights (WeightEMA) the raw weights are kept beside it.
            weights = checkpoint.get("current_model_state", checkpoint["state_dict"])
            self._keep(checkpoint["global_step"], weights, checkpoint["optimizer_states"])

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        step = trainer.global_step - 1
        self.recent = [s for s in self.recent if s > step - self.window]
        if not (outputs and outputs.get("skipped")):
            return
        self.recent.append(step)
        self.skipped += 1
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
        if len(self.recent) >= self.max_skipped:
            self._roll_back(trainer, pl_module, step)
            pl_module.log("train/rollbacks", float(self.rollbacks), on_step=True, on_epoch=False)

    def _roll_back(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        count = len(self.recent)
        if self.rollbacks >= self.max_rollbacks:
            raise DivergedError(
                f"training diverged: {count} non-finite steps within {self.window} steps (the "
                f"last at step {step}) after {self.rollbacks} roll-backs; the warnings above "
                "name the steps and their kernels: lower optim.optimizer.lr, or raise "
                "callbacks.nonfinite_rollback.max_rollbacks"
            )
        good = self._good
        assert good is not None
        pl_module.load_state_dict(good["state_dict"])
        for optimizer, state in zip(trainer.optimizers, good["optimizer_states"], strict=True):
            current = [{k: g[k] for k in _LR_KEYS if k in g} for g in optimizer.param_groups]
            optimizer.load_state_dict(state)
            for group, values in zip(optimizer.param_groups, current, strict=True):
                group.update(values)
        lrs = scale_learning_rate(trainer, self.lr_factor)
        self.rollbacks += 1
        self.recent = []
        log.warning(
            "step %d: %d non-finite steps within %d steps: rolled back to the weights and "
            "optimiser state of step %d, learning rate x%g -> %s (roll-back %d of %d)",
            step,
            count,
            self.window,
            self._good["step"],
            self.lr_factor,
            ", ".join(f"{lr:.3g}" for lr in lrs),
            self.rollbacks,
            self.max_rollbacks,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "skipped": self.skipped, "rollbacks": self.rollbacks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.recent = list(state_dict["recent"])
        self.skipped = int(state_dict["skipped"])
        self.rollbacks = int(state_dict["rollbacks"])
