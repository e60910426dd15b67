"""Hydra/OmegaConf glue: the project root, per-scale resolvers and path resolution."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from omegaconf import OmegaConf

from kxnet import hardware, kernels

__all__ = [
    "APPS",
    "CONFIG_MODULE",
    "config_path",
    "config_groups",
    "format_config_groups",
    "project_root",
    "resolve_path",
    "register_resolvers",
]

APPS = ("train", "eval", "predict", "bench")
# The configs ship inside the package: ``kxnet.conf.<app>`` holds each command's primary config
# and its own groups, ``kxnet.conf.shared`` the groups every command uses (on their searchpath).
CONFIG_MODULE = "kxnet.conf"


def config_path(app: str) -> str:
    """The Hydra config path of a command: ``pkg://kxnet.conf.<app>``."""
    if app not in APPS:
        raise ValueError(f"no configs for {app!r}: one of {', '.join(APPS)}")
    return f"pkg://{CONFIG_MODULE}.{app}"


def config_groups(app: str) -> dict[str, list[str]]:
    """The config groups that a command composes from, each with its options: the command's own
    (``kxnet.conf.<app>``) and the shared ones (``kxnet.conf.shared``), nested ones as
    ``hydra/launcher``; the ``hydra`` group itself (Hydra's settings) is left out.

    Hydra's own ``--help`` lists only the groups beside the primary config, not those of its
    search path; the ``--help`` of every command lists these instead.
    """
    config_path(app)  # checks the name
    groups: dict[str, set[str]] = {}

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if not entry.is_dir() or entry.name.startswith(("_", ".")):
                continue
            name = prefix + entry.name
            options = {e.name[: -len(".yaml")] for e in entry.iterdir() if e.name.endswith(".yaml")}
            if options and name != "hydra":
                groups.setdefault(name, set()).update(options)
            walk(entry, f"{name}/")

    for module in (f"{CONFIG_MODULE}.{app}", f"{CONFIG_MODULE}.shared"):
        walk(files(module), "")
    return {name: sorted(options) for name, options in sorted(groups.items())}


def format_config_groups(app: str) -> str:
    """:func:`config_groups` as Hydra's help shows groups: ``group: option, option``, one a line."""
    return "\n".join(f"{name}: {', '.join(opts)}" for name, opts in config_groups(app).items())


def project_root() -> Path:
    """The kxnet checkout (holding ``conf/`` and ``pyproject.toml``), else ``KXNET_ROOT``, else
    the directory the command was started in."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "conf" / "train" / "train.yaml").is_file() and (
            parent / "pyproject.toml"
        ).is_file():
            return parent
    return Path(os.environ.get("KXNET_ROOT", os.getcwd())).resolve()


def resolve_path(path: str | os.PathLike | None, root: str | os.PathLike | None = None) -> Path:
    """An absolute path: ``~`` expanded, relative paths taken against the project root."""
    if path is None:
        raise ValueError("a required path is not set")
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (Path(root) if root else project_root()) / p


def register_resolvers() -> None:
    """``${kx.root:}``, ``${kx.cpu_precision:}`` (:func:`kxnet.hardware.cpu_precision`),
    ``${kx.kernel_size:SETTING,SCALE}``, ``${kx.sigma_range:SETTING,SCALE}``,
    ``${kx.config_groups:APP}`` (the help's list of groups)."""
    resolvers = {
        "kx.root": lambda: str(project_root()),
        "kx.cpu_precision": hardware.cpu_precision,
        "kx.config_groups": lambda app: format_config_groups(str(app)),
        "kx.kernel_size": lambda setting, scale: kernels.kernel_size(str(setting), int(scale)),
        "kx.sigma_range": lambda setting, scale: OmegaConf.create(
            list(kernels.train_sigma_range(str(setting), int(scale)))
        ),
    }
    for name, fn in resolvers.items():
        OmegaConf.register_new_resolver(name, fn, replace=True)


register_resolvers()
