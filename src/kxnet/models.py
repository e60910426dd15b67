"""Models by name: the registry of the paper's trained models, and ``latest``.

A name is one of:

- ``official/setting{1,2}_x{2,3,4}``: the authors' released models (``models.json``, shipped
  with the package: the file, setting, scale, stages S and kernel size p of each), fetched once
  into the cache (:mod:`kxnet.cache`) from the release (``KXNET_MODELS_URL`` replaces its base
  URL, e.g. for a mirror); ``KXNET_SHA256_<NAME>`` (the name in capitals, ``/`` as ``_``:
  ``KXNET_SHA256_OFFICIAL_SETTING2_X4``) or the registry entry pins its SHA256;
- ``official``: the official model of the setting and scale asked for (a ``paper=…`` job's);
- ``latest``: the newest ``weights.pt`` under ``<project root>/outputs/``; ``latest/<preset>``:
  the newest under ``outputs/<preset>/`` (e.g. ``latest/quick``).

A registered name fixes the model's properties: a setting, scale, stage count or kernel size
asked for that contradicts them is refused before anything is downloaded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

from kxnet import cache as model_cache
from kxnet.cache import say
from kxnet.checkpoint import CONFIG_KEYS, OPTIONS
from kxnet.checkpoint import load_model as load_file
from kxnet.description import DEFAULT_SCALE, DEFAULT_SETTING, ModelDescription
from kxnet.errors import StartupError
from kxnet.nn.kxnet import KXNet

__all__ = [
    "REGISTRY",
    "URL_ENV",
    "OFFICIAL",
    "LATEST",
    "ModelEntry",
    "registry",
    "release_page",
    "official_name",
    "newest_weights",
    "weights_path",
    "resolve_weights",
    "asked_properties",
    "build_model",
    "is_name",
    "load_model",
]

REGISTRY = Path(__file__).resolve().with_name("models.json")
URL_ENV = "KXNET_MODELS_URL"
OFFICIAL = "official"
LATEST = "latest"
SETTING_NUMBERS = {"iso": 1, "aniso": 2}


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its name, file on the release, and the properties it fixes."""

    name: str
    file: str
    setting: str
    scale: int
    stages: int
    kernel_size: int
    sha256: str | None = None
    bytes: int | None = None

    @property
    def properties(self) -> dict:
        """``{scale, stages, kernel_size, setting}``, as :data:`kxnet.checkpoint.CONFIG_KEYS`."""
        return {key: getattr(self, key) for key in CONFIG_KEYS}

    def describe(self) -> str:
        return (
            f"Setting {SETTING_NUMBERS[self.setting]} ({self.setting}), x{self.scale}, "
            f"S = {self.stages}, p = {self.kernel_size}"
        )


@cache
def _registry_file() -> dict:
    return json.loads(REGISTRY.read_text())


def registry() -> dict[str, ModelEntry]:
    """Every registered model by name."""
    return {
        name: ModelEntry(name=name, **entry) for name, entry in _registry_file()["models"].items()
    }


def release_page() -> str:
    """The page of the authors' release, where the files can be downloaded by hand."""
    return _registry_file()["release"]


def _base_url() -> str:
    return (os.environ.get(URL_ENV, "").strip() or _registry_file()["base_url"]).rstrip("/")


def official_name(setting: str, scale: int) -> str:
    """``official/setting{1,2}_x{scale}``: the authors' model of a setting and scale."""
    return f"{OFFICIAL}/setting{SETTING_NUMBERS.get(setting, setting)}_x{scale}"


def _sha256_env(name: str) -> str:
    return "KXNET_SHA256_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def _fallback(entry: ModelEntry) -> str:
    return (
        f"download {entry.file} by hand from {release_page()} and pass ckpt_path=<that file> "
        "instead of the name"
    )


def newest_weights(root: str | os.PathLike | None = None, preset: str | None = None) -> Path:
    """The newest ``weights.pt`` under ``<root>/outputs/`` (``outputs/<preset>/``)."""
    from kxnet.config import project_root  # Hydra's import, only where a root is looked up

    outputs = Path(root or project_root()) / "outputs"
    folder = outputs / preset if preset else outputs
    found = [p for p in folder.rglob("weights.pt") if p.is_file()] if folder.is_dir() else []
    if not found:
        name = f"{LATEST}/{preset}" if preset else LATEST
        raise StartupError(
            f"weights={name}: no weights.pt under {folder}: train one first (e.g. "
            f"kxnet-train experiment={preset or 'quick'}) or pass ckpt_path=FILE"
        )
    return max(found, key=lambda p: p.stat().st_mtime_ns)


def _entry(name: str, asked: Mapping) -> ModelEntry:
    """The registered model of ``name`` (``official`` resolved with the asked setting and
    scale), checked against the asked properties; StartupError otherwise."""
    models = registry()
    if name == OFFICIAL:
        if asked.get("setting") is None or asked.get("scale") is None:
            raise StartupError(
                "weights=official needs the setting and scale (a paper=… job gives them): name "
                f"one model instead, one of {', '.join(models)}"
            )
        name = official_name(str(asked["setting"]), int(asked["scale"]))
    if name not in models:
        raise StartupError(
            f"weights={name} is not a model name: use one of {', '.join(models)}, "
            f"{OFFICIAL} (a paper=… table's), {LATEST} or {LATEST}/<preset>, or ckpt_path=FILE"
        )
    entry = models[name]
    for key, value in asked.items():
        if value is not None and key in CONFIG_KEYS and getattr(entry, key) != value:
            raise StartupError(
                f"weights={name} is {entry.describe()}, but {OPTIONS[key]}={value} was asked "
                f"for: drop the {OPTIONS[key]} override or choose another model"
            )
    return entry


def weights_path(
    name: str,
    asked: Mapping | None = None,
    root: str | os.PathLike | None = None,
    report: Callable[[str], None] = say,
) -> tuple[Path, dict]:
    """The local file of a model name and the properties the name fixes (``{}`` for
    ``latest``, whose file records them): a registered model is fetched into the cache first.

    ``asked``: the properties (scale, stages, kernel_size, setting) that the command asks for;
    one that contradicts a registered model raises :class:`StartupError`, before any download.
    """
    name = str(name).strip().strip("/")
    asked = dict(asked or {})
    if name == LATEST or name.startswith(f"{LATEST}/"):
        preset = name.partition("/")[2] or None
        return newest_weights(root, preset), {}
    entry = _entry(name, asked)
    item = model_cache.Download(
        url=f"{_base_url()}/{entry.file}",
        file=entry.file,
        sha256=os.environ.get(_sha256_env(entry.name), "").strip() or entry.sha256,
        bytes=entry.bytes,
        fallback=_fallback(entry),
    )
    return model_cache.fetch(item, report), entry.properties


def resolve_weights(
    weights: str,
    asked: Mapping,
    ckpt_path: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    report: Callable[[str], None] = say,
) -> tuple[Path, dict]:
    """A command's ``weights=NAME``: its local file and the properties to expect of it (the
    asked ones that are set, and those the name fixes). ``official`` is the model of the asked
    ``setting`` and ``scale`` (unset: the :mod:`~kxnet.description` defaults), ``latest`` the
    newest under ``root``'s outputs; naming a ``ckpt_path`` too is refused."""
    if ckpt_path:
        raise StartupError(
            f"ckpt_path={ckpt_path} and weights={weights} both name a model: give one of them"
        )
    asked = {key: value for key, value in asked.items() if value is not None}
    if str(weights).strip() == OFFICIAL:
        asked = {"setting": DEFAULT_SETTING, "scale": DEFAULT_SCALE, **asked}
    path, fixed = weights_path(str(weights), asked, root, report=report)
    return path, {**asked, **fixed}


def asked_properties(config: Any) -> dict:
    """The model properties a command's typed config sets (``scale``, ``setting.name``,
    ``model.net.stages``, ``model.net.kernel_size``; None: unset, the checkpoint's)."""
    setting = config.setting
    return {
        "scale": config.scale,
        "setting": setting.name if setting else None,
        "stages": config.model.net.stages,
        "kernel_size": config.model.net.kernel_size,
    }


def build_model(
    ckpt_path: str | os.PathLike | None,
    weights: str | None,
    asked: Mapping,
    map_location: str | torch.device = "cpu",
    root: str | os.PathLike | None = None,
) -> KXNet | None:
    """The network a command names: ``weights`` (a model name; ``latest`` under ``root``, the
    run's ``paths.root_dir``) or ``ckpt_path`` (a file), each checked against the ``asked``
    properties (scale, stages, kernel_size, setting; None: unset); without either, the bicubic
    baseline (S = 0) when ``asked["stages"]`` is 0, else None."""
    if weights:
        path, expect = resolve_weights(weights, asked, ckpt_path, root)
        return load_file(path, map_location, **expect)
    if ckpt_path:
        return load_file(Path(ckpt_path), map_location, **asked)
    if asked.get("stages") != 0:
        return None
    given = {key: value for key, value in asked.items() if value is not None}
    return KXNet(**ModelDescription.from_mapping(given).as_dict()).eval()


def is_name(text: str) -> bool:
    """Whether ``text`` is a model name (``official…``, ``latest…``) rather than a file path."""
    return text in (OFFICIAL, LATEST) or text.startswith((f"{OFFICIAL}/", f"{LATEST}/"))


def load_model(
    source: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    report: Callable[[str], None] = say,
    **expect,
) -> KXNet:
    """A :class:`KXNet` in eval mode from a model name (``official/setting2_x4``, ``latest``, …)
    or a checkpoint file (what :func:`kxnet.checkpoint.load_model` reads).

    ``expect`` (``scale``, ``stages``, ``kernel_size``, ``setting``) must agree with the model:
    a contradiction is a one-line :class:`~kxnet.errors.KXNetError`.
    """
    text = os.fspath(source)
    if not is_name(text):
        return load_file(Path(text).expanduser(), map_location, **expect)
    path, fixed = weights_path(text, expect, report=report)
    return load_file(path, map_location, **{**expect, **fixed})
