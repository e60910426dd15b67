"""Faults injected into real training runs by the tests (never part of the package).

- ``NaNAt``: a callback that puts a NaN into the LR images of the training batches of the given
  steps (on one rank, or all), so that the loss and the kernel estimate are not finite.
- ``KillAt``: a callback that SIGKILLs its own process at a training step.
- ``InterruptAt``: a callback that sends its own process SIGINT (Ctrl-C) at a training step.
- ``Pace``: a callback that makes every training step last at least some time.
- ``Probe``: a callback that records every training step (weights before and after, learning
  rate, the batch's kernel parameters) and saves the record at the end of training.
- Run as a script (``python tests/faultinject.py OVERRIDES…``): ``python -m kxnet.train``, where
  ``KXNET_TEST_KILL_IN_SAVE=N`` makes the N-th file written through ``kxnet.atomic`` (the
  checkpoints) get half its bytes, then SIGKILLs the process, and ``KXNET_TEST_KILL_IN_COMMIT=N``
  SIGKILLs it as it is about to rename the N-th file into place (after the N-1 before it);
  ``KXNET_TEST_COMMAND=predict`` (or eval) runs that command instead of training.
"""

from __future__ import annotations

import io
import os
import signal
import time

import lightning.pytorch as pl
import torch


class NaNAt(pl.Callback):
    """NaN in one LR pixel of every sample of the batches of ``steps`` (on ``rank`` only)."""

    def __init__(self, steps: list[int], rank: int | None = None) -> None:
        self.steps = set(steps)
        self.rank = rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step in self.steps and self.rank in (None, trainer.global_rank):
            batch["lr"][:, 0, 0, 0] = float("nan")


class KillAt(pl.Callback):
    """SIGKILL this process when training step ``step`` starts."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class InterruptAt(pl.Callback):
    """Send SIGINT (what Ctrl-C sends) to this process when training step ``step`` starts."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class SpoilAt(pl.Callback):
    """After training step ``step``, add noise of std ``scale`` to every weight (so that the
    validation after it is worse than the one before)."""

    def __init__(self, step: int, scale: float = 0.05) -> None:
        self.step, self.scale = step, scale

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            generator = torch.Generator().manual_seed(self.step)
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.add_(torch.randn(p.shape, generator=generator) * self.scale)


class Pace(pl.Callback):
    """Make each training step last at least ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(max(0.0, self.seconds - (time.monotonic() - self._start)))


def _weights(pl_module) -> dict:
    return {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}


class Probe(pl.Callback):
    """Per training step: ``{"before", "after"}`` weights of the network, ``lr``, ``skipped``,
    ``adam_steps`` (the optimiser's step count), ``kernel_params`` and ``noise``; written to
    ``path`` (``.rank{r}`` added under DDP) at the end of training, with the weights at every
    checkpoint save under ``"saved"`` (also when training fails)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.steps: dict[int, dict] = {}
        self.saved: dict[int, dict] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps[trainer.global_step] = {
            "before": _weights(pl_module),
            "kernel_params": batch["kernel_params"].clone(),
            "noise": batch["noise"].clone(),
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record = self.steps[trainer.global_step - 1]
        record["after"] = _weights(pl_module)
        record["skipped"] = outputs["skipped"]
        record["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        state = trainer.optimizers[0].state_dict()["state"]
        record["adam_steps"] = float(state[0]["step"]) if 0 in state else 0.0

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saved[checkpoint["global_step"]] = _weights(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        path = self.path if trainer.world_size == 1 else f"{self.path}.rank{trainer.global_rank}"
        torch.save({"steps": self.steps, "saved": self.saved}, path)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_train_end(trainer, pl_module)  # what happened up to a run's failure


def _kill_in_save(save_number: int) -> None:
    """Make the ``save_number``-th file written through kxnet.atomic (a ``.NAME.partial``
    temporary file) die half-way: half of its bytes are written, then the process is killed."""
    import torch

    real_save = torch.save
    count = 0

    def save(obj, f, *args, **kwargs):
        nonlocal count
        if not str(getattr(f, "name", "")).endswith(".partial"):
            return real_save(obj, f, *args, **kwargs)
        count += 1
        if count < save_number:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save


def _kill_in_commit(rename_number: int) -> None:
    """SIGKILL the process as it is about to make the ``rename_number``-th rename of a file
    into place through kxnet.atomic (those before it are done)."""
    from kxnet import atomic

    real_commit = atomic._commit
    count = 0

    def commit(tmp, path, replace=True):
        nonlocal count
        count += 1
        if count == rename_number:
            os.kill(os.getpid(), signal.SIGKILL)
        real_commit(tmp, path, replace)

    atomic._commit = commit


class FinalLR(pl.Callback):
    """Records, at the end of training, the learning rate and the step count in ``FinalLR.seen``."""

    seen: dict[str, float] = {}

    def on_train_end(self, trainer, pl_module) -> None:
        FinalLR.seen = {
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "steps": trainer.global_step,
        }


if __name__ == "__main__":
    if os.environ.get("KXNET_TEST_KILL_IN_SAVE"):
        _kill_in_save(int(os.environ["KXNET_TEST_KILL_IN_SAVE"]))
    if os.environ.get("KXNET_TEST_KILL_IN_COMMIT"):
        _kill_in_commit(int(os.environ["KXNET_TEST_KILL_IN_COMMIT"]))
    import importlib

    command = os.environ.get("KXNET_TEST_COMMAND", "train")
    importlib.import_module(f"kxnet.{command}.__main__").main()
