"""The errors kxnet reports to a user, and the one way every command reports them.

Every error here carries a one-line message: the option or file at fault, what is wrong with it
and what would fix it. :func:`one_line_errors` turns any of them into that line on stderr and an
exit status (2 for a run that cannot start, 1 for a run that failed after it had started), with
the traceback only when ``HYDRA_FULL_ERROR=1``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "START_UP_EXIT",
    "KXNetError",
    "StartupError",
    "EvalError",
    "PredictError",
    "DataError",
    "ImageReadError",
    "ImageFolderError",
    "DownloadError",
    "CheckpointError",
    "ReportError",
    "DivergedError",
    "report_error",
    "one_line_errors",
]

START_UP_EXIT = 2


class KXNetError(Exception):
    """An error whose message is one line naming the option or file, the cause and the fix."""

    exit_status = START_UP_EXIT


class StartupError(KXNetError, ValueError):
    """A run that cannot start."""


class EvalError(StartupError):
    """An evaluation that cannot start (benchmark sets, options)."""


class PredictError(StartupError):
    """A prediction that cannot start (input, output or options)."""


class DataError(KXNetError, ValueError):
    """Data that cannot be used: an image file, a folder of images, a download or an archive."""


class ImageReadError(DataError):
    """An image file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageFolderError(DataError):
    """A folder of images that cannot be used (missing, empty, unreadable files, too small)."""

    def __init__(self, folder: str | os.PathLike, message: str) -> None:
        self.folder = Path(folder)
        super().__init__(message)


class DownloadError(DataError):
    """A download, archive or copy of a data set that cannot be used."""


class CheckpointError(KXNetError, ValueError):
    """A checkpoint that cannot be used; the message names the file, the cause and the fix."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ReportError(KXNetError, ValueError):
    """Results that do not make the asked table; the message names the file and the mismatch."""


class DivergedError(KXNetError, RuntimeError):
    """Training kept producing non-finite values after every roll-back it was allowed."""

    exit_status = 1


def report_error(err: BaseException, status: int = START_UP_EXIT) -> int:
    """Print ``error: MESSAGE`` (on one line) to stderr and return ``status``; with
    ``HYDRA_FULL_ERROR=1``, raise ``err`` instead, traceback and all."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    message = " ".join(str(err).split())
    print(f"error: {message}", file=sys.stderr, flush=True)
    return status


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn a :class:`KXNetError` into :func:`report_error`'s line and ``SystemExit`` with the
    error's ``exit_status``."""
    try:
        yield
    except KXNetError as err:
        raise SystemExit(report_error(err, err.exit_status)) from None
