"""Files written whole or not at all: checkpoints and exported weights survive a kill mid-save.

:func:`atomic_save` writes to a temporary name in the target's own folder, flushes it to the disk
(``fsync``), renames it over the target and syncs the folder: a reader, or a run resumed after a
crash, finds either the previous file or the new one, never a part. Lightning's own checkpoint
writer (``lightning.fabric.utilities.cloud_io._atomic_save`` in 2.6) writes a temporary file in
the system's temporary folder and moves it into place without ``fsync``: when that folder is on
another file system than the checkpoints (a local ``/tmp``, checkpoints on a network file
system), the move is a copy into the target, which a kill leaves half-written.
:class:`kxnet.checkpoint_io.AtomicCheckpointIO` makes the Trainer save through :func:`atomic_save`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "partial_path"]


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary name of ``path`` while it is written: ``.NAME.partial`` beside it.

    The name is fixed, so a file left by a killed save is replaced by the next save of the same
    target instead of piling up.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform can open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path``, atomically; an existing ``path`` stays whole until then."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return path
