"""``python -m kxnet.train``: the training machinery around KXNet.

:mod:`~kxnet.train.run` (the run: check, fit, test, export, evaluate), :mod:`~kxnet.train.module`
(the LightningModule), :mod:`~kxnet.train.callbacks`, :mod:`~kxnet.train.preflight` (start-up
checks), :mod:`~kxnet.train.ddp` (DDP inside Hydra jobs), :mod:`~kxnet.train.atomic_checkpoints`
(atomic checkpoints), :mod:`~kxnet.train.rng` (generator states for an exact resume) and
:mod:`~kxnet.train.loggers` (W&B mode, pictures).
"""

from kxnet.train.run import train

__all__ = ["train"]
