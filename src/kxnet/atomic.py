"""Files written whole or not at all: a kill mid-write leaves the previous file, never a part.

Every file kxnet writes goes through here. :func:`atomic_path` hands out a temporary name in the
target's own folder (``.NAME.<pid>-<random>.partial``: unique per writer, so two runs never write
the same temporary file); when the block ends, the file is flushed to the disk (``fsync``),
renamed over the target and the folder synced, so that a reader, or a run resumed after a crash,
finds either the previous file or the new one. :class:`AtomicFiles` does the same for several
files that belong together (an image's outputs, a results folder's tables): all of them appear,
or none; with ``replace=False`` none of them takes the place of anything already there. Once
every file is complete, a journal (``.NAME.<pid>-<random>.commit``, listing each temporary
name and its final name) is written, then the files are renamed one after the other, then the
journal is removed: a kill between two renames leaves the journal, and the next run completes
the renames from it (the files were complete before the journal was written). A writer killed
by SIGKILL cannot remove its temporary files: :func:`remove_leftovers` completes, at the start
of the next run, the commits of journals whose writer's process is gone, then removes those
temporary files (and only those) whose writer is gone.

Lightning's own checkpoint writer (``lightning.fabric.utilities.cloud_io._atomic_save`` in 2.6)
writes a temporary file in the system's temporary folder and moves it into place without
``fsync``: when that folder is on another file system than the checkpoints, the move is a copy
into the target, which a kill leaves half-written; :class:`kxnet.train.atomic_checkpoints.
AtomicCheckpointIO` makes the Trainer save through :func:`atomic_save` instead.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "PARTIAL_SUFFIX",
    "JOURNAL_SUFFIX",
    "temporary_name",
    "atomic_path",
    "atomic_save",
    "atomic_write",
    "AtomicFiles",
    "finish_commit",
    "remove_leftovers",
    "SHARED_AGE_S",
]

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
JOURNAL_SUFFIX = ".commit"
# How long a temporary file in a folder that runs on several machines may share (the benchmark
# cache) must lie untouched before it counts as left by a killed run.
SHARED_AGE_S = 600.0
# A temporary name of temporary_name(): .NAME.<writer's pid>-<8 hex digits>.partial
_TEMPORARY = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)-[0-9a-f]{8}" + re.escape(PARTIAL_SUFFIX) + "$"
)
# The journal of an AtomicFiles commit: .NAME.<writer's pid>-<8 hex digits>.commit
_JOURNAL = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)-[0-9a-f]{8}" + re.escape(JOURNAL_SUFFIX) + "$"
)


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


def _exists(path: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "already exists, not replaced", str(path))


def _place(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path`` unless something is at ``path`` (FileExistsError).

    A file is hard-linked into place (which fails if the name is taken, whatever raced to take
    it) and its temporary name removed; a folder, or a file on a file system without hard
    links, is renamed after a check (a folder renamed over a non-empty one fails anyway)."""
    if not tmp.is_dir():
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise _exists(path) from None
        except OSError:
            pass
        else:
            tmp.unlink()
            return
    if os.path.lexists(path):
        raise _exists(path)
    os.rename(tmp, path)


def _commit(tmp: Path, path: Path, replace: bool = True) -> None:
    """Rename a complete temporary file (synced first) or folder over ``path`` (with
    ``replace=False``: to ``path``, FileExistsError if something is there)."""
    if tmp.is_file():
        _sync(tmp)
    if replace:
        os.replace(tmp, path)
    else:
        _place(tmp, path)
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

    With ``replace=False`` nothing already in the folder is replaced: if any name is taken when
    :meth:`commit` comes, the files it had already put in place are removed again and
    FileExistsError is raised, so that all of them appear or none. As a context manager it
    commits when the block ends and aborts if it raises.
    """

    def __init__(self, folder: str | os.PathLike, replace: bool = True) -> None:
        self.folder = Path(folder)
        self.replace = replace
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
        """Rename every file into place (after writing the journal that lets the next run finish
        the renames if this process is killed among them); returns their final paths."""
        placed: list[Path] = []
        journal = self._journal() if len(self.pending) > 1 else None
        try:
            for tmp, final in self.pending:
                _commit(tmp, final, self.replace)
                placed.append(final)
        except BaseException:
            if not self.replace:  # what was placed is this commit's own: take it back
                for final in placed:
                    _remove(final)
            self.abort()
            raise
        finally:
            if journal is not None:
                journal.unlink(missing_ok=True)
        self.pending = []
        return placed

    def _journal(self) -> Path:
        """Sync every pending file, then write the journal of the renames to come."""
        for tmp, _ in self.pending:
            if tmp.is_file():
                _sync(tmp)
        first = self.pending[0][1]
        journal = temporary_name(first).with_suffix(JOURNAL_SUFFIX)
        record = {
            "replace": self.replace,
            "files": [[tmp.name, final.name] for tmp, final in self.pending],
        }
        atomic_write(journal, json.dumps(record))
        return journal

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


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user counts)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)  # pragma: no mutate (another signal would stop the process probed)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _journal_entries(journal: Path) -> tuple[bool, list[tuple[Path, Path]]] | None:
    """(replace, [(temporary, final)]) from a journal; None if it is not one of ours (each name
    must be a plain name in the journal's folder, the temporary one as temporary_name makes)."""
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))
        pairs = [(str(tmp), str(final)) for tmp, final in record["files"]]
        replace = record["replace"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    plain = all(
        _TEMPORARY.match(tmp) and Path(final).name == final and final not in (".", "..")
        for tmp, final in pairs
    )
    if not plain or not isinstance(replace, bool):
        return None
    return replace, [(journal.parent / tmp, journal.parent / final) for tmp, final in pairs]


def finish_commit(journal: str | os.PathLike) -> None:
    """Complete the commit of a killed :class:`AtomicFiles` from its journal, then remove the
    journal: every file still under its temporary name is renamed into place. Should a name
    have been taken since (``replace=False``), the commit is undone instead: the files it had
    placed are removed with its temporary ones, so that the set is all there or not at all."""
    journal = Path(journal)
    entries = _journal_entries(journal)
    if entries is None:
        log.warning("%s is not a commit journal of kxnet: left alone", journal)
        return
    replace, pairs = entries
    try:
        for tmp, final in pairs:
            if not os.path.lexists(tmp):
                continue  # renamed before the kill
            if os.path.lexists(final) and os.path.samefile(tmp, final):
                tmp.unlink()  # linked into place, the temporary name not yet removed
                continue
            _commit(tmp, final, replace)
        log.info("completed the commit of %s that a killed run left", journal.name)
    except FileExistsError:
        for tmp, final in pairs:
            if not os.path.lexists(tmp) and os.path.lexists(final):
                _remove(final)
            _remove(tmp)
        log.warning("undid the commit of %s: one of its names was taken since", journal.name)
    journal.unlink(missing_ok=True)
    _sync(journal.parent)


def remove_leftovers(
    folder: str | os.PathLike, recursive: bool = False, min_age_s: float = 0.0
) -> list[Path]:
    """Complete the commits that killed writers left journals of (:func:`finish_commit`), then
    remove the temporary files and folders that killed writers left in ``folder``.

    Only names made by :func:`temporary_name` (``.NAME.<pid>-<8 hex digits>.partial``) whose
    writer, the process ``pid``, is no longer running, are removed: never a file kxnet did not
    name, nor one that a running process (this one, another run) is writing. With
    ``recursive``, sub-folders are searched too; with ``min_age_s``, only files untouched for
    that long are removed (for a folder that runs on other machines share, whose process ids
    mean nothing here). Returns what was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames:
            if _JOURNAL.match(name) and not _alive(int(_JOURNAL.match(name).group("pid"))):
                finish_commit(Path(dirpath) / name)
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            found = _TEMPORARY.match(name)
            if found is None or not os.path.lexists(path) or path.is_symlink():
                continue
            pid = int(found.group("pid"))
            if pid == os.getpid() or _alive(pid):
                continue
            if min_age_s and time.time() - path.lstat().st_mtime < min_age_s:
                continue
            _remove(path)
            removed.append(path)
        dirnames[:] = [d for d in dirnames if recursive and not _TEMPORARY.match(d)]
    if removed:
        log.info("removed %d temporary file(s) left by killed runs in %s", len(removed), folder)
    return removed
