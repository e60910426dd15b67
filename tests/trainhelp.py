"""Composing the training config and running ``python -m kxnet.train`` in the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

import kxnet.config  # noqa: F401  (registers the kx.* resolvers the configs use)

QUIET = ["callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]


def compose_train(output_dir: Path | None, *overrides: str, hydra: bool = False) -> DictConfig:
    """The training config, writing under ``output_dir``."""
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else []
    with initialize_config_module("kxnet.conf.train", version_base="1.3"):
        return compose("train", overrides=[*extra, *overrides], return_hydra_config=hydra)


def run_train(
    args: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m kxnet.train ARGS``, W&B offline; output captured (through pipes: not a
    terminal); ``env`` adds to the environment."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", HYDRA_FULL_ERROR="1") | (
        env or {}
    )
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run(
        [sys.executable, "-m", "kxnet.train", *flags, *QUIET, *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
