"""Composing the training config and running ``python -m kxnet.train`` in the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from kxnet.config import CONFIG_DIR

TESTS = Path(__file__).resolve().parent
# The small in-memory data module of the tests (tests/toydata.py, tests/conf/data/toy.yaml).
DATA = [f"hydra.searchpath=[file://{TESTS / 'conf'}]", "data=toy"]
QUIET = ["callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]


def compose_train(output_dir: Path | None, *overrides: str, hydra: bool = False) -> DictConfig:
    """The training config with the tests' data, writing under ``output_dir``."""
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else []
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*DATA, *extra, *overrides], return_hydra_config=hydra)


def run_train(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m kxnet.train ARGS`` with the tests' data, W&B offline; output captured."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", HYDRA_FULL_ERROR="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run(
        [sys.executable, "-m", "kxnet.train", *flags, *DATA, *QUIET, *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
