"""Training progress a reader can follow: a rich bar over the run's steps on a terminal, plain
log lines everywhere else (a log file, SLURM, nohup), where the bar draws nothing.

- :class:`StepProgressBar`: Lightning's :class:`~lightning.pytorch.callbacks.RichProgressBar`,
  counting the steps of the whole run (``step/max_steps``, its speed and time left) instead of the
  batches of one epoch, and showing ``Epoch N`` (not Lightning's ``Epoch N/-2`` when training is
  bounded by steps, ``max_epochs=-1``); its time left is the time budget's where that ends the
  run first.
- :class:`LogProgress`: every ``every_n_steps`` steps, one line through :mod:`logging` (so that
  Hydra's ``train.log`` has it): step/total, the mean loss since the last line, steps per
  second, the time left and the last validation value; and one line after each validation.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from datetime import timedelta
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import RichProgressBar, Timer
from lightning.pytorch.callbacks.progress.rich_progress import CustomTimeColumn
from rich.progress import ProgressColumn, Task
from rich.text import Text

__all__ = [
    "LogProgress",
    "StepProgressBar",
    "format_duration",
    "report",
    "time_budget_left",
    "total_steps",
]

log = logging.getLogger(__name__)

WHEN = ("auto", "always", "never")


def total_steps(trainer: pl.Trainer) -> int | None:
    """The optimiser steps the fit will run: ``max_steps``, else what the epochs and loader
    lengths give, None when unknown (an unbounded run, an iterable without a length)."""
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return int(trainer.max_steps)
    try:
        steps = trainer.estimated_stepping_batches
    except Exception:  # no loader yet, or one without a length
        return None
    return int(steps) if math.isfinite(steps) else None


def time_budget_left(trainer: pl.Trainer) -> float | None:
    """Seconds left of the training time budget (``trainer.max_time``, Lightning's
    :class:`~lightning.pytorch.callbacks.Timer`, resumed runs included), None without one."""
    for callback in trainer.callbacks:
        if isinstance(callback, Timer):
            left = callback.time_remaining("train")
            return None if left is None else max(float(left), 0.0)
    return None


def format_duration(seconds: float) -> str:
    """A duration as ``1h02m``, ``3m07s`` or ``42s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _shows_on_console(logger: logging.Logger, level: int) -> bool:
    """Whether a record of ``level`` from ``logger`` reaches stdout or stderr through a handler
    (Hydra's console handler does; pytest's capture and file handlers do not)."""
    if not logger.isEnabledFor(level):
        return False
    consoles = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
                and id(getattr(handler, "stream", None)) in consoles
                and handler.level <= level
            ):
                return True
        current = current.parent if current.propagate else None
    return False


def report(logger: logging.Logger, text: str, level: int = logging.INFO) -> None:
    """Log ``text`` (Hydra's ``<job>.log`` and its console get it), and print it as well where no
    logging handler would show it (:func:`~kxnet.train.train` called without Hydra's logging)."""
    logger.log(level, text)
    if not _shows_on_console(logger, level):
        print(text, flush=True)


def _stdout_is_terminal() -> bool:
    stream = sys.stdout
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _time_left(
    left: float | None, budget: float | None, unbounded: bool
) -> tuple[float | None, bool]:
    """The time left, and whether it is the time budget's: ``budget`` (seconds left of
    ``trainer.max_time``) where it ends the run before ``left`` (the steps' time left, None when
    unknown) would, or where the steps are ``unbounded``."""
    if budget is not None and (unbounded or (left is not None and budget < left)):
        return budget, True
    return left, False


def _clock(seconds: float | None) -> str:
    return "-:--:--" if seconds is None else str(timedelta(seconds=int(seconds)))


class _TimeColumn(ProgressColumn):
    """``elapsed • time left`` of a task, the time left being what remains of the training time
    budget (``trainer.max_time``) where that ends the run before the task's speed says it would
    finish: ``0:04:10 (time budget)``."""

    max_refresh = 0.5

    def __init__(self, bar: StepProgressBar, style: Any) -> None:
        self.bar = bar
        self.style = style
        super().__init__()

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        unbounded = task.total is None or math.isinf(task.total)
        left, budgets = _time_left(task.time_remaining, self.bar.time_budget_left(task), unbounded)
        why = " (time budget)" if budgets else ""
        return Text(f"{_clock(elapsed)} • {_clock(left)}{why}", style=self.style)


class StepProgressBar(RichProgressBar):
    """Lightning's rich bar, counting the whole run's steps when the run is bounded by steps.

    Takes every argument of :class:`~lightning.pytorch.callbacks.RichProgressBar`. With
    ``trainer.max_steps`` set, the training bar reads ``Epoch N  step/max_steps`` and keeps its
    speed and time left across epochs; otherwise it is Lightning's per-epoch bar. Where
    ``trainer.max_time`` ends the run first, the training bar's time left is the budget's.
    """

    def _by_steps(self) -> bool:
        return self._trainer is not None and (self.trainer.max_steps or -1) > 0

    def configure_columns(self, trainer: pl.Trainer) -> list:
        return [
            _TimeColumn(self, column.style) if isinstance(column, CustomTimeColumn) else column
            for column in super().configure_columns(trainer)
        ]

    def time_budget_left(self, task: Task) -> float | None:
        """Seconds left of ``trainer.max_time`` for the training bar's ``task``, else None."""
        if self._trainer is None or task.id != self.train_progress_bar_id:
            return None
        return time_budget_left(self.trainer)

    @property
    def total_train_batches(self) -> int | float:
        if self._by_steps():
            return self.trainer.max_steps
        return super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if not self._by_steps() and max_epochs is not None and max_epochs > 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}"
        if len(self.validation_description) > len(description):
            description = f"{description:{len(self.validation_description)}}"
        return description

    def _styled(self, description: str) -> str:
        style = self.theme.description
        return f"[{style}]{description}" if style else description

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._by_steps() or self.is_disabled:
            super().on_train_epoch_start(trainer, pl_module)
            return
        if self.progress is None or self.train_progress_bar_id is None:
            super().on_train_epoch_start(trainer, pl_module)  # the first epoch: a new bar
        else:  # the same bar goes on: its speed and time left are the run's
            description = self._get_train_description(trainer.current_epoch)
            self.progress.update(self.train_progress_bar_id, description=self._styled(description))
        self._update(self.train_progress_bar_id, trainer.global_step)
        self.refresh()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not self._by_steps():
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # a run resumed mid-epoch
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()


class LogProgress(pl.Callback):
    """One plain progress line every ``every_n_steps`` training steps, through :mod:`logging`.

    ``step 1200/2000 (60%) | loss 0.01234 | 1.59 it/s | ETA 8m23s | val/psnr 31.20 (step 1000)``

    The loss is the mean over the steps since the previous line (skipped, non-finite steps left
    out); the speed is measured over the same steps; the time left assumes it holds, or is what
    remains of ``trainer.max_time`` where that budget ends the run first (``ETA 4m10s (time
    budget)``). After each validation of the fit, a line with ``metric`` and the step. Only rank 0
    writes.

    Args:
        every_n_steps: steps between two lines.
        when: ``auto`` (only when stdout is not a terminal, where the rich bar draws), ``always``
            or ``never``.
        metric: the validation value shown (a key of ``trainer.callback_metrics``).
    """

    def __init__(self, every_n_steps: int = 100, when: str = "auto", metric: str = "val/psnr"):
        if int(every_n_steps) < 1:
            raise ValueError(f"LogProgress needs every_n_steps >= 1, got {every_n_steps}")
        if when not in WHEN:
            raise ValueError(f"LogProgress when={when!r}: one of {', '.join(WHEN)}")
        self.every_n_steps = int(every_n_steps)
        self.when = when
        self.metric = metric
        self.active = False
        self._losses: list[torch.Tensor] = []
        self._mark_time = 0.0
        self._mark_step = 0
        self._last_val: tuple[float, int] | None = None

    def _enabled(self) -> bool:
        return self.when == "always" or (self.when == "auto" and not _stdout_is_terminal())

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.active = trainer.is_global_zero and self._enabled()
        self._losses = []
        self._mark_time = time.perf_counter()
        self._mark_step = trainer.global_step
        if self.active:
            total = total_steps(trainer)
            budget = time_budget_left(trainer)
            log.info(
                "training from step %d to %s%s, a progress line every %d steps",
                trainer.global_step,
                total if total is not None else "the end",
                ""
                if budget is None
                else f" or for {format_duration(budget)} (trainer.max_time), whichever ends first",
                self.every_n_steps,
            )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not self.active:
            return
        if isinstance(outputs, dict) and not outputs.get("skipped"):
            loss = outputs.get("loss")
        else:
            loss = outputs if isinstance(outputs, torch.Tensor) else None
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss.detach())
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step > self._mark_step:
            self._line(trainer, step)

    def _line(self, trainer: pl.Trainer, step: int) -> None:
        now = time.perf_counter()
        rate = (step - self._mark_step) / max(now - self._mark_time, 1e-9)
        total = total_steps(trainer)
        parts = [f"step {step}/{total} ({100 * step / total:.0f}%)" if total else f"step {step}"]
        if self._losses:
            parts.append(f"loss {float(torch.stack(self._losses).float().mean()):.5g}")
        parts.append(f"{rate:.3g} it/s")
        steps_left = max(total - step, 0) / rate if total else None
        left, budgets = _time_left(steps_left, time_budget_left(trainer), unbounded=not total)
        if left is not None:
            parts.append(f"ETA {format_duration(left)}" + (" (time budget)" if budgets else ""))
        if self._last_val is not None:
            value, at = self._last_val
            parts.append(f"{self.metric} {value:.2f} (step {at})")
        log.info(" | ".join(parts))
        self._losses = []
        self._mark_time, self._mark_step = now, step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            return
        self._last_val = (float(value), trainer.global_step)
        if self.active:
            log.info("validation at step %d: %s %.4f", trainer.global_step, self.metric, value)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        if self.active and step > self._mark_step:
            self._line(trainer, step)

    def state_dict(self) -> dict[str, Any]:
        return {"last_val": list(self._last_val) if self._last_val else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        last = state_dict.get("last_val")
        self._last_val = (float(last[0]), int(last[1])) if last else None
