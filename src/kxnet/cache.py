"""The cache of downloaded model files: fetched once, checked on every use.

A file lives at ``<cache>/models/<file>`` (``<cache>``: ``KXNET_CACHE``, else
``$XDG_CACHE_HOME/kxnet``, else ``~/.cache/kxnet``), its SHA256 beside it in ``<file>.sha256``.
The download goes through :func:`kxnet.data.download.download_file` (resumable through
``<file>.part``, renamed into place only when complete) while a lock file (``<file>.lock``,
:mod:`filelock`) keeps a second process fetching the same file waiting: it then finds the file
whole. The SHA256 is recorded and printed at the first download; every later use hashes the file
again and compares it with the pinned SHA256 (when one is known) or the recorded one, and a
changed or truncated file is fetched again. A file whose hash differs from the pinned one is
deleted and refused.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from kxnet.atomic import atomic_write
from kxnet.data.download import download_file, sha256_file
from kxnet.errors import DownloadError

__all__ = ["CACHE_ENV", "Download", "cache_dir", "fetch", "say"]

CACHE_ENV = "KXNET_CACHE"
# How long a process waits for another one fetching the same file.
LOCK_TIMEOUT_S = 3600.0
RETRIES = 3
BACKOFF_S = 2.0


@dataclass(frozen=True)
class Download:
    """A file to fetch: its URL, its name in the cache, and what is known of it.

    ``sha256`` (hex) and ``bytes`` pin the file when known (None otherwise); ``fallback`` is
    what the user can do instead, appended to every error (the release page, ``ckpt_path=``).
    """

    url: str
    file: str
    sha256: str | None = None
    bytes: int | None = None
    fallback: str = ""


def say(line: str) -> None:
    """Where the cache reports what it does by default: a line on stderr (stdout stays the
    command's results)."""
    print(line, file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """``KXNET_CACHE``, else ``$XDG_CACHE_HOME/kxnet``, else ``~/.cache/kxnet``."""
    if os.environ.get(CACHE_ENV, "").strip():
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base).expanduser() / "kxnet"


def _fail(item: Download, message: str) -> DownloadError:
    return DownloadError(f"{message}{'; ' + item.fallback if item.fallback else ''}")


def _usable(path: Path, record: Path, item: Download, report: Callable[[str], None]) -> bool:
    """Whether the cached ``path`` has the pinned (else the recorded) SHA256; a file that has
    neither is recorded now. A file that differs is removed, to be fetched again."""
    digest = sha256_file(path)
    expected = item.sha256 or (record.read_text().split()[0] if record.is_file() else None)
    if expected is None:
        atomic_write(record, f"{digest}  {item.file}\n")
        report(f"{item.file}: SHA256 {digest}, recorded in {record}")
        return True
    if digest == expected.lower():
        return True
    report(f"{path}: SHA256 {digest} differs from {expected} (changed or truncated): fetched again")
    path.unlink()
    return False


def fetch(item: Download, report: Callable[[str], None] = say) -> Path:
    """The cached copy of ``item``, downloaded first if it is missing or differs; raises
    :class:`DownloadError` with one line (the cause, then ``item.fallback``) when it cannot be
    had, leaving nothing but a resumable ``.part`` behind."""
    folder = cache_dir() / "models"
    path = folder / item.file
    record = path.with_name(f"{path.name}.sha256")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(path.with_name(f"{path.name}.lock"), timeout=LOCK_TIMEOUT_S):
            if path.is_file() and _usable(path, record, item, report):
                return path
            return _download(item, path, record, report)
    except Timeout as err:
        raise _fail(item, f"{path}: another process has been fetching it for too long") from err
    except PermissionError as err:
        raise _fail(
            item,
            f"the model cache {folder} is not writable ({err.strerror}): set {CACHE_ENV} to a "
            "writable folder",
        ) from err
    except OSError as err:
        problem = f"the model cache {folder} cannot be used ({err.strerror or err})"
        raise _fail(item, problem) from err


def _download(item: Download, path: Path, record: Path, report: Callable[[str], None]) -> Path:
    report(f"Downloading {item.url} into {path.parent}")
    try:
        download_file(
            item.url, path, retries=RETRIES, backoff=BACKOFF_S, report=report, progress_s=1.0
        )
    except DownloadError as err:  # a broken transfer keeps its .part, to resume
        raise _fail(item, str(err)) from err
    size, digest = path.stat().st_size, sha256_file(path)
    problem = None
    if item.bytes is not None and size != item.bytes:
        problem = f"{size:,} bytes received, {item.bytes:,} pinned"
    elif item.sha256 and digest != item.sha256.lower():
        problem = f"SHA256 {digest} differs from the pinned {item.sha256}"
    if problem:
        path.unlink()
        raise _fail(item, f"{item.url}: {problem}; the download was deleted")
    atomic_write(record, f"{digest}  {item.file}\n")
    report(f"{item.file}: {size:,} bytes, SHA256 {digest}, recorded in {record}")
    return path
