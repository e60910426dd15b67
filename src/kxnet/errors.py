"""The errors kxnet reports to a user, and the one way every command reports them.

Every error here carries a one-line message: the option or file at fault, what is wrong with it
and what would fix it. :func:`one_line_errors` turns any of them into that line on stderr and an
exit status (2 for a run that cannot start, 1 for a run that failed after it had started), with
the traceback only when ``HYDRA_FULL_ERROR=1``. OmegaConf's errors about the composed config (a
value left at ``???``, an interpolation that cannot be resolved, a key that is not there) are
user errors too: :func:`config_error` words them as a :class:`StartupError` naming the key.
Ctrl-C (SIGINT) is one line too: a command says what it had finished in an :class:`Interrupted`
(``interrupted: …`` on stderr, exit status 130, as a shell reports a command killed by SIGINT);
one that does not gets a generic line.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

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
    "TransferError",
    "CheckpointError",
    "ReportError",
    "DivergedError",
    "Interrupted",
    "INTERRUPT_EXIT",
    "USER_ERRORS",
    "config_error",
    "report_error",
    "one_line_errors",
]

START_UP_EXIT = 2
INTERRUPT_EXIT = 130


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


class TransferError(DownloadError):
    """A download that broke off after it had started (what was received is kept to resume)."""

    exit_status = 1


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


class Interrupted(KXNetError):
    """A run stopped by Ctrl-C; the message says what was finished and what was not."""

    exit_status = INTERRUPT_EXIT


# What a user's mistake raises: kxnet's own errors and OmegaConf's about the composed config.
USER_ERRORS = (KXNetError, OmegaConfBaseException)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def config_error(err: OmegaConfBaseException) -> StartupError:
    """An OmegaConf error about the composed config as a one-line :class:`StartupError` naming
    the key: a value left at ``???``, an interpolation that does not resolve, a missing key."""
    key = getattr(err, "full_key", None) or getattr(err, "key", None) or "the config"
    if isinstance(err, MissingMandatoryValue):
        message = f"{key} is not set (???): give it on the command line, {key}=…"
    elif isinstance(err, InterpolationResolutionError):
        cause = err.__cause__ if err.__cause__ is not None else err
        message = f"{key} cannot be resolved ({_first_line(cause)}): check the options it refers to"
    elif isinstance(err, ConfigKeyError | ConfigAttributeError):
        message = f"{key}: no such option ({_first_line(err)}): check its spelling"
    else:
        message = f"{key}: {_first_line(err)}"
    return StartupError(message)


def report_error(err: BaseException, status: int | None = None) -> int:
    """Print ``error: MESSAGE`` (on one line) to stderr and return ``status`` (by default the
    error's ``exit_status``, 2 for a config error); with ``HYDRA_FULL_ERROR=1``, raise ``err``
    instead, traceback and all."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    shown = config_error(err) if isinstance(err, OmegaConfBaseException) else err
    if status is None:
        status = getattr(shown, "exit_status", START_UP_EXIT)
    message = " ".join(str(shown).split())
    kind = "interrupted" if isinstance(shown, Interrupted) else "error"
    print(f"{kind}: {message}", file=sys.stderr, flush=True)
    return status


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn a user's error (:data:`USER_ERRORS`) into :func:`report_error`'s line and
    ``SystemExit`` with the error's exit status; Ctrl-C (``KeyboardInterrupt``) that no command
    worded into an :class:`Interrupted` gets a generic one, exit status 130."""
    try:
        yield
    except USER_ERRORS as err:
        raise SystemExit(report_error(err)) from None
    except KeyboardInterrupt as err:
        stop = Interrupted("stopped by Ctrl-C before any result was written")
        stop.__cause__ = err
        raise SystemExit(report_error(stop)) from None
