"""A cosine learning-rate decay over a step budget and a time budget, whichever ends first.

A run with ``trainer.max_time`` set ends when its time is up; on a slower machine than the one a
recipe was tuned on, a decay over ``trainer.max_steps`` alone is then cut off half-way, at a
learning rate far above its floor. :class:`BudgetCosineLR` measures its progress as
``max(step / max_steps, elapsed / max_time)``, so that the decay reaches ``eta_min`` when the
first of the two budgets ends, on any machine. Its elapsed time is in its state (and so in a
Lightning checkpoint): a resumed run goes on from where its clock stood.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["BudgetCosineLR", "seconds"]


def seconds(max_time: str | float | Mapping[str, float] | None) -> float | None:
    """A time budget in seconds from Lightning's ``max_time`` forms: ``"DD:HH:MM:SS"``, a mapping
    of ``days``/``hours``/``minutes``/``seconds``, a number of seconds, or None (no budget)."""
    if max_time is None:
        return None
    if isinstance(max_time, str):
        parts = max_time.split(":")
        if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"max_time={max_time!r} is not DD:HH:MM:SS")
        days, hours, minutes, secs = (int(p) for p in parts)
        return float(((days * 24 + hours) * 60 + minutes) * 60 + secs)
    if isinstance(max_time, Mapping):
        units = {"days": 86400.0, "hours": 3600.0, "minutes": 60.0, "seconds": 1.0}
        unknown = set(max_time) - set(units)
        if unknown:
            raise ValueError(f"max_time has unknown units {sorted(unknown)}")
        return sum(units[k] * float(v) for k, v in max_time.items())
    return float(max_time)


class BudgetCosineLR(LRScheduler):
    """``lr = eta_min + (base_lr − eta_min)·(1 + cos(π·p))/2`` with the progress
    ``p = min(1, max(step / max_steps, elapsed / max_time))``, stepped once per optimiser step.

    Args:
        optimizer: the optimiser whose groups' learning rates decay.
        max_steps: the step budget (``trainer.max_steps``); ``None`` or ``-1``: none.
        max_time: the time budget, in any form :func:`seconds` reads; ``None``: none.
        eta_min: the final learning rate.
        clock: the seconds clock (``time.monotonic``; tests give their own).

    The clock starts at construction, before the first step: the decay then ends no later than
    Lightning's timer stops the run.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_steps: int | None = None,
        max_time: str | float | Mapping[str, float] | None = None,
        eta_min: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        last_epoch: int = -1,
    ) -> None:
        self.max_steps = None if max_steps is None or max_steps < 0 else int(max_steps)
        self.max_time = seconds(max_time)
        if self.max_steps is None and self.max_time is None:
            raise ValueError("BudgetCosineLR needs max_steps or max_time")
        if (self.max_steps is not None and self.max_steps <= 0) or (
            self.max_time is not None and self.max_time <= 0
        ):
            raise ValueError(
                f"budgets must be positive, got max_steps={max_steps} max_time={max_time}"
            )
        self.eta_min = eta_min
        self._clock = clock
        self._elapsed_before = 0.0
        self._started = clock()
        super().__init__(optimizer, last_epoch)

    def elapsed(self) -> float:
        """Seconds on this schedule's clock, those of earlier runs of a resumed one included."""
        return self._elapsed_before + self._clock() - self._started

    def progress(self) -> float:
        """``p`` in [0, 1]: the larger fraction used of the two budgets."""
        fractions = [0.0]
        if self.max_steps is not None:
            fractions.append(self.last_epoch / self.max_steps)
        if self.max_time is not None:
            fractions.append(self.elapsed() / self.max_time)
        return min(1.0, max(fractions))

    def get_lr(self) -> list[float]:
        factor = (1 + math.cos(math.pi * self.progress())) / 2
        return [self.eta_min + (base - self.eta_min) * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_clock")}
        state["_elapsed_before"] = self.elapsed()
        del state["_started"]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)
        self._started = self._clock()
