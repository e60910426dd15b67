"""Files written whole or not at all: a kill mid-write leaves the previous file, never a part.

Every file kxnet writes goes through here. :func:`atomic_path` hands out a temporary name in the
target's own folder (``.NAME.<pid>-<random>.partial``: unique per writer, so two runs never write
the same temporary file); when the block ends, the file is flushed to the disk (``fsync``),
renamed over the target and the folder synced, so that a reader, or a run resumed after a crash,
finds either the previous file or the new one. :class:`AtomicFiles` does the same for several
files that belong together (an image's outputs, a results folder's tables): all of them appear,
renamed one after the other once every one is complete, or none.

Lightning's own checkpoint writer (``lightning.fabric.utilities.cloud_io._atomic_save`` in 2.6)
writes a temporary file in the system's temporary folder and moves it into place without
``fsync``: when that folder is on another file system than the checkpoints, the move is a copy
into the target, which a kill leaves half-written; :class:`kxnet.train.checkpoint_io.
AtomicCheckpointIO` makes the Trainer save through :func:`atomic_save` instead.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "PARTIAL_SUFFIX",
    "temporary_name",
    "atomic_path",
    "atomic_save",
    "atomic_write",
    "AtomicFiles",
]

PARTIAL_SUFFIX = ".partial"


def temporary_name(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path``: ``.NAME.<pid>-<8 hex digits>.partial``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _sync(path: Path) -> None:
    """Flush a file (or a folder's entries) to the disk, where the platform can open it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path) -> None:
    """Rename a complete temporary file (synced first) or folder over ``path``."""
    if tmp.is_file():
        _sync(tmp)
    os.replace(tmp, path)
    _sync(path.parent)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to (a file, or a folder that the
    block creates); it replaces ``path`` when the block ends, or is removed if the block raises.
    The folder of ``path`` is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        _commit(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path``, atomically; an existing ``path`` stays whole until then."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to ``path``, atomically."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)


class AtomicFiles:
    """Several files of one folder written together: :meth:`path` hands out the temporary name of
    each, :meth:`commit` renames them all into place, :meth:`abort` removes them.

    As a context manager it commits when the block ends and aborts if it raises.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.pending: list[tuple[Path, Path]] = []

    def path(self, name: str) -> Path:
        """The temporary path (in the folder) that becomes ``name`` on :meth:`commit`."""
        final = self.folder / name
        tmp = temporary_name(final)
        self.pending.append((tmp, final))
        return tmp

    def write(self, name: str, data: str | bytes) -> None:
        """Write text (UTF-8) or bytes as ``name``."""
        tmp = self.path(name)
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)

    def commit(self) -> list[Path]:
        """Rename every file into place; returns their final paths."""
        for tmp, final in self.pending:
            _commit(tmp, final)
        done = [final for _, final in self.pending]
        self.pending = []
        return done

    def abort(self) -> None:
        for tmp, _ in self.pending:
            _remove(tmp)
        self.pending = []

    def __enter__(self) -> AtomicFiles:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()
