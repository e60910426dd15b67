"""The process-wide random-number-generator states (Python, NumPy, torch CPU and CUDA) as plain
data, so that a checkpoint can carry them and a resumed run draws what the uninterrupted one
would have drawn."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["get_states", "set_states"]


def get_states() -> dict[str, Any]:
    """The current states, made of tensors, ints and tuples only (safe for ``weights_only``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_states(states: dict[str, Any]) -> None:
    """Restore states produced by :func:`get_states` (CUDA ones only where CUDA is in use)."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    keys = keys.numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
