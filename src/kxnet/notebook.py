"""What the notebooks in ``notebooks/`` share: the network they look at and their size knobs.

The network comes from the environment variable ``KXNET_CHECKPOINT``:

- a model name (:mod:`kxnet.models`): ``official/setting2_x4`` (the authors' model, fetched once
  into the cache), ``latest`` or ``latest/<preset>``;
- a file path, relative ones taken against the project root: any checkpoint that
  :func:`kxnet.checkpoint.load_model` reads (a Lightning ``.ckpt``, an exported ``weights.pt``,
  the authors' ``.pth``);
- unset or empty: the newest ``outputs/quick/runs/*/weights.pt`` of the project (``make train``
  writes one), if there is one;
- ``untrained``, or nothing found: a freshly initialised network (seed 0), with an
  :class:`UntrainedModelWarning` — its pictures and numbers say nothing about KXNet.

Sizes come from ``KXNET_NOTEBOOK_*`` variables read with :func:`env_int` and :func:`env_str`, so
that a test can run a notebook in seconds and a user can run it at full size.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from kxnet.checkpoint import load_model
from kxnet.config import project_root, resolve_path
from kxnet.models import is_name
from kxnet.models import load_model as load_named
from kxnet.nn import KXNet

__all__ = [
    "CHECKPOINT_ENV",
    "UNTRAINED",
    "UntrainedModelWarning",
    "env_int",
    "env_str",
    "newest_weights",
    "notebook_model",
]

CHECKPOINT_ENV = "KXNET_CHECKPOINT"
UNTRAINED = "untrained"
QUICK_RUNS = Path("outputs") / "quick" / "runs"


class UntrainedModelWarning(UserWarning):
    """The notebook shows a network with random weights: its results mean nothing."""


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """The integer in environment variable ``name`` (``default`` if unset or empty)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(
            f"{name}={value!r} is not an integer: set it to one, or unset it"
        ) from None
    if number < minimum:
        raise ValueError(f"{name}={number} is below {minimum}: set it to {minimum} or more")
    return number


def env_str(name: str, default: str) -> str:
    """The text in environment variable ``name`` (``default`` if unset or empty)."""
    return os.environ.get(name, "").strip() or default


def newest_weights(root: str | os.PathLike | None = None) -> Path | None:
    """The most recently written ``<root>/outputs/quick/runs/*/weights.pt``, or None."""
    runs = Path(root or project_root()) / QUICK_RUNS
    found = [p for p in runs.glob("*/weights.pt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def notebook_model(
    checkpoint: str | None = None,
    *,
    setting: str | None = None,
    scale: int = 4,
    stages: int = 2,
    root: str | os.PathLike | None = None,
) -> tuple[KXNet, str]:
    """The network to show and a one-line description of where it comes from.

    ``checkpoint`` (default: ``$KXNET_CHECKPOINT``) is read as the module docstring says.
    ``setting``, if given, must be the checkpoint's; for the authors' files, which do not record
    it, it names the setting (else it is guessed from the kernel size: p = 21 reads as Setting
    1). ``setting`` (default "aniso"), ``scale`` and ``stages`` shape the untrained network used
    when there is no checkpoint, which also raises an :class:`UntrainedModelWarning`.
    """
    spec = (os.environ.get(CHECKPOINT_ENV, "") if checkpoint is None else checkpoint).strip()
    if is_name(spec):
        model = load_named(spec, setting=setting)
        return model, (
            f"{spec}: x{model.scale}, setting {model.setting}, {model.num_stages} stages, "
            f"p = {model.kernel_size}"
        )
    path = None
    if spec and spec != UNTRAINED:
        path = resolve_path(spec)
    elif not spec:
        path = newest_weights(root)
    if path is not None:
        model = load_model(path, setting=setting)
        return model, (
            f"{path}: x{model.scale}, setting {model.setting}, {model.num_stages} stages, "
            f"p = {model.kernel_size}"
        )
    setting = setting or "aniso"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = KXNet(scale, stages, setting=setting).eval()
    reason = (
        f"{CHECKPOINT_ENV}={UNTRAINED}"
        if spec
        else f"{CHECKPOINT_ENV} is not set and there is no {QUICK_RUNS}/*/weights.pt"
    )
    message = (
        f"UNTRAINED network (random weights; {reason}): x{scale}, setting {setting}, {stages} "
        f"stages. Its results mean nothing: run `make train` or set {CHECKPOINT_ENV}=<file>."
    )
    warnings.warn(message, UntrainedModelWarning, stacklevel=2)
    return model, message
