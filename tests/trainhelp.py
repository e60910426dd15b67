"""Composing the training config and running ``python -m kxnet.train`` in the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from kxnet.config import checked

QUIET = ["callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]


def compose_train(output_dir: Path | None, *overrides: str, hydra: bool = False) -> DictConfig:
    """The training config, writing under ``output_dir``, as ``python -m kxnet.train`` hands it
    over (:func:`kxnet.config.checked`); with ``hydra``, as composed, Hydra's config included."""
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else []
    with initialize_config_module("kxnet.conf.train", version_base="1.3"):
        cfg = compose("train", overrides=[*extra, *overrides], return_hydra_config=hydra)
    return cfg if hydra else checked(cfg)


def run_train(
    args: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m kxnet.train ARGS``, W&B offline; output captured (through pipes: not a
    terminal); ``env`` adds to the environment."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", HYDRA_FULL_ERROR="1") | (
        env or {}
    )
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run(
        [sys.executable, "-m", "kxnet.train", *flags, *QUIET, *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class DtypeProbe(pl.Callback):
    """Records, during the first training step, the dtypes that the proximal networks'
    convolutions compute in, those of the data terms' inputs and outputs (``kxnet.physics``) and
    those the loss sees, in ``DtypeProbe.seen``."""

    seen: dict[str, set] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        from kxnet import physics
        from kxnet.nn.proxnet import ProxNet

        DtypeProbe.seen = {"proxnet": set(), "physics": set(), "loss": set()}
        self.undo = []
        for module in pl_module.net.modules():
            if isinstance(module, ProxNet):
                for conv in module.modules():
                    if isinstance(conv, torch.nn.Conv2d):
                        hook = conv.register_forward_hook(self._conv)
                        self.undo.append(hook.remove)
        real = physics.adjusted_gradient
        physics.adjusted_gradient = self._wrap(real)
        self.undo.append(lambda: setattr(physics, "adjusted_gradient", real))
        for module in pl_module.net.modules():
            ops = getattr(module, "operators", None)
            if isinstance(ops, physics.Operators):
                wrapped = {f.name: self._wrap(getattr(ops, f.name)) for f in fields(ops)}
                module.operators = physics.Operators(**wrapped)
                self.undo.append(lambda module=module, ops=ops: setattr(module, "operators", ops))
        loss = pl_module.loss

        def probed_loss(output, hr, kernel):
            tensors = [*output.images, *output.kernels, hr, kernel]
            DtypeProbe.seen["loss"] |= {t.dtype for t in tensors}
            value = loss(output, hr, kernel)
            DtypeProbe.seen["loss"].add(value.total.dtype)
            return value

        pl_module.loss = probed_loss
        self.undo.append(lambda: setattr(pl_module, "loss", loss))

    @staticmethod
    def _conv(module, inputs, output) -> None:
        DtypeProbe.seen["proxnet"].add(output.dtype)

    @staticmethod
    def _wrap(real):
        def recorded(*args, **kwargs):
            out = real(*args, **kwargs)
            tensors = [a for a in args if isinstance(a, torch.Tensor)] + [out]
            DtypeProbe.seen["physics"] |= {t.dtype for t in tensors}
            return out

        return recorded

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for undo in reversed(self.undo):
            undo()
        self.undo = []
