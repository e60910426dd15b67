"""What the training run hands its loggers: the W&B mode, one W&B run per job, pictures in each
logger's own way (W&B ``log_image``, TensorBoard ``add_image``, PNG files for CSV), histograms
where a logger shows them (``wandb.Histogram``, TensorBoard ``add_histogram``) and the exported
weights as a W&B model artifact."""

from __future__ import annotations

import netrc
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch import Tensor

__all__ = [
    "default_wandb_mode",
    "finish_wandb",
    "log_histograms",
    "log_picture",
    "log_weights",
]


def default_wandb_mode() -> str:
    """Set ``WANDB_MODE=offline`` unless it is set or W&B credentials exist; return the mode."""
    if "WANDB_MODE" not in os.environ and not _wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"
    return os.environ.get("WANDB_MODE", "online")


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.is_file() and netrc.netrc(path).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


def finish_wandb() -> None:
    """Close this job's W&B run, so that the next job of a sweep gets its own."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def _to_uint8_hwc(picture: Tensor) -> np.ndarray:
    return (picture.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def log_picture(
    loggers: Iterable[Logger], key: str, picture: Tensor, step: int, caption: str | None = None
) -> None:
    """Send a 3×H×W picture in [0, 1] to every logger (call on rank 0 only)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(
                key=key,
                images=[_to_uint8_hwc(picture)],
                step=step,
                caption=[caption] if caption else None,
            )
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, picture.clamp(0, 1), global_step=step)
        elif isinstance(logger, CSVLogger):
            folder = Path(logger.log_dir) / "images"
            folder.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
            Image.fromarray(_to_uint8_hwc(picture)).save(folder / f"{name}_step{step:07d}.png")
        else:
            rank_zero_warn(f"{type(logger).__name__} cannot show pictures; {key!r} not logged")


def log_histograms(
    loggers: Iterable[Logger], prefix: str, values: Mapping[str, Tensor], step: int
) -> None:
    """Send a histogram of each ``values[key]`` (any shape; non-finite values left out) as
    ``prefix/key`` to the W&B and TensorBoard loggers; the others show none and are skipped
    (call on rank 0 only)."""
    finite = {}
    for key, value in values.items():
        value = value.detach().float().flatten().cpu()
        value = value[torch.isfinite(value)]
        if value.numel():
            finite[f"{prefix}/{key}"] = value
    if not finite:
        return
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            histograms = {key: wandb.Histogram(v.numpy()) for key, v in finite.items()}
            logger.log_metrics(histograms, step=step)
        elif isinstance(logger, TensorBoardLogger):
            for key, value in finite.items():
                logger.experiment.add_histogram(key, value, global_step=step)


def log_weights(loggers: Iterable[Logger], path: Path, name: str, metadata: Mapping) -> None:
    """Log the exported weights file to every W&B logger as an artifact of type ``model`` named
    ``name``, with ``metadata`` (the model's properties, its final figures), so that the run
    links to its weights; offline runs hold it until ``wandb sync`` (call on rank 0 only)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            artifact = wandb.Artifact(name, type="model", metadata=dict(metadata))
            artifact.add_file(str(path), name=path.name)
            logger.experiment.log_artifact(artifact)
