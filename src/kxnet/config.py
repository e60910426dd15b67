"""Hydra/OmegaConf glue: the project root, per-scale resolvers and path resolution."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from kxnet import kernels

__all__ = ["CONFIG_DIR", "project_root", "resolve_path", "register_resolvers"]


def project_root() -> Path:
    """The kxnet checkout (holding ``conf/``), else the directory the command was started in."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "conf" / "train.yaml").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    return Path(os.environ.get("KXNET_ROOT", os.getcwd())).resolve()


CONFIG_DIR = str(project_root() / "conf")


def resolve_path(path: str | os.PathLike | None, root: str | os.PathLike | None = None) -> Path:
    """An absolute path: ``~`` expanded, relative paths taken against the project root."""
    if path is None:
        raise ValueError("a required path is not set")
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (Path(root) if root else project_root()) / p


def register_resolvers() -> None:
    """``${kx.root:}``, ``${kx.kernel_size:SETTING,SCALE}``, ``${kx.sigma_range:SETTING,SCALE}``."""
    resolvers = {
        "kx.root": lambda: str(project_root()),
        "kx.kernel_size": lambda setting, scale: kernels.kernel_size(str(setting), int(scale)),
        "kx.sigma_range": lambda setting, scale: OmegaConf.create(
            list(kernels.train_sigma_range(str(setting), int(scale)))
        ),
    }
    for name, fn in resolvers.items():
        OmegaConf.register_new_resolver(name, fn, replace=True)


register_resolvers()
