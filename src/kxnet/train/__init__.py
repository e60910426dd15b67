"""``python -m kxnet.train``: the training machinery around KXNet.

:mod:`~kxnet.train.run` (the run: check, fit, test, export, evaluate), :mod:`~kxnet.train.module`
(the LightningModule), :mod:`~kxnet.train.callbacks`, :mod:`~kxnet.train.preflight` (start-up
checks), :mod:`~kxnet.train.ddp` (DDP inside Hydra jobs), :mod:`~kxnet.train.atomic_checkpoints`
(atomic checkpoints), :mod:`~kxnet.train.rng` (generator states for an exact resume) and
:mod:`~kxnet.train.loggers` (W&B mode, pictures).
"""

from __future__ import annotations

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    """``train`` on first use: the run imports Lightning (seconds), which ``--help`` and a
    refused option never need."""
    if name == "train":
        from kxnet.train.run import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
