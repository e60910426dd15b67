"""Callbacks of the training run: a seed per rank; wall time, step time and peak memory."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["RankSeed", "ResourceMonitor", "peak_memory_gib"]


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
        rank_zero_info(
            f"Trained {trainer.global_step} steps in {self._elapsed():.0f} s, peak memory "
            f"{peak_memory_gib(pl_module.device):.2f} GiB (rank 0)"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self._elapsed() if self._start else self._carried}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._carried = float(state_dict["wall_time_s"])
