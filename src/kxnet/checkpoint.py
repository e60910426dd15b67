"""Building a :class:`KXNet` from any checkpoint file, and writing bare weights.

Three formats are read:

- a Lightning checkpoint of ``kxnet.train.module.KXNetModule`` (``.ckpt``): the network's
  weights are the ``state_dict`` entries under ``net.``, its config is
  ``hyper_parameters["net"]`` (``["model"]`` in checkpoints of earlier versions);
- a bare-weights file written by :func:`save_weights`:
  ``{"format": "kxnet-weights", "config": {scale, stages, kernel_size, setting}, "state_dict"}``;
- a state dict released by the paper's authors (``.pth``), through :func:`kxnet.load_official`.

Files are read with ``torch.load(weights_only=True)`` (tensors, plain containers and OmegaConf
configs only), so loading a file cannot run code: one that holds code (a pickled function or
class, such as ``posix.system``) is refused as such. A stored config is never resolved (an
OmegaConf interpolation could read environment variables or files): one that holds an
interpolation is refused. Every number read from the file is input: the stored config's values
are checked for type and range (:func:`check_net_config`) and against the weights (stage count,
kernel size) before a network is built, and weights that are not finite (NaN, inf) are refused.
Every failure is a :class:`~kxnet.errors.CheckpointError` whose one-line message names the file,
what is wrong and how to fix it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import typing
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode
from torch import Tensor

from kxnet.atomic import atomic_save
from kxnet.description import SCALES
from kxnet.errors import CheckpointError
from kxnet.nn.kxnet import KXNet
from kxnet.official import convert_official_state_dict, load_official

__all__ = [
    "WEIGHTS_FORMAT",
    "CONFIG_KEYS",
    "MAX_STAGES",
    "MAX_KERNEL_SIZE",
    "check_finite",
    "check_net_config",
    "OPTIONS",
    "lightning_net_config",
    "load_model",
    "model_config",
    "plain_config",
    "read_checkpoint",
    "safe_loading",
    "save_weights",
]

WEIGHTS_FORMAT = "kxnet-weights"
CONFIG_KEYS = ("scale", "stages", "kernel_size", "setting")
# The command-line option that sets each config entry.
OPTIONS = {
    "scale": "scale",
    "setting": "setting",
    "stages": "model.net.stages",
    "kernel_size": "model.net.kernel_size",
}
# The largest stored stage count and kernel size believed before the weights are looked at (the
# paper's networks have 19 stages and 11 to 21 pixel kernels).
MAX_STAGES = 1000
MAX_KERNEL_SIZE = 101
_DAMAGED = (
    "the file is damaged or not a KXNet checkpoint; re-save it with kxnet.checkpoint.save_weights"
)
_SAFE_GLOBALS = [
    DictConfig,
    ListConfig,
    ContainerMetadata,
    Metadata,
    AnyNode,
    BooleanNode,
    FloatNode,
    IntegerNode,
    StringNode,
    typing.Any,
    dict,
    list,
    defaultdict,
]
_UNREADABLE = (
    "not a readable PyTorch checkpoint: the file is truncated, corrupt or of another kind; "
    "save or download it again"
)
# How torch's weights-only unpickler names a global it refused ("Unsupported global: GLOBAL
# fractions.Fraction …", "Trying to load unsupported GLOBAL posix.system whose module posix is
# blocked").
_UNSUPPORTED = re.compile(r"GLOBAL ([\w.]+)")


def model_config(model: KXNet) -> dict:
    """``{scale, stages, kernel_size, setting}`` of a network: what rebuilds it (its
    :class:`~kxnet.description.ModelDescription`)."""
    return model.description.as_dict()


def save_weights(model: KXNet, path: str | os.PathLike) -> Path:
    """Write ``model`` as a bare-weights file, atomically (:func:`kxnet.atomic.atomic_save`).

    An existing file at ``path`` stays whole until the new one is complete.
    """
    payload = {
        "format": WEIGHTS_FORMAT,
        "config": model_config(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return atomic_save(payload, path)


def safe_loading() -> contextlib.AbstractContextManager:
    """A block in which ``torch.load(weights_only=True)`` (Lightning's too, when resuming or
    testing) also takes the OmegaConf containers that configs are saved as: still no code."""
    return torch.serialization.safe_globals(_SAFE_GLOBALS)


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> object:
    """The object saved in ``path``, loaded with ``weights_only=True``; CheckpointError if the
    file is missing, empty, unreadable or holds code."""
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file (check ckpt_path)")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "empty file (0 bytes): the checkpoint was not saved completely")
    try:
        with safe_loading():
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = _UNSUPPORTED.search(str(err))
        if found:
            raise CheckpointError(
                path,
                f"holds code ({found.group(1)}, which loading the file would call) besides "
                "weights, and was refused: a checkpoint is only read in a way that cannot run "
                "code; from a trusted copy, re-save the network with kxnet.checkpoint.save_weights",
            ) from err
        raise CheckpointError(path, _UNREADABLE) from err
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, AttributeError) as err:
        raise CheckpointError(path, _UNREADABLE) from err


def _interpolation(value: object, key: str) -> str | None:
    """The key of the first OmegaConf interpolation (``${…}``) in a plain config, or None."""
    if isinstance(value, str):
        return key if "${" in value else None
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _interpolation(v, f"{key}.{k}")
        if found:
            return found
    return None


def plain_config(path: Path, config: Mapping, where: str) -> dict:
    """A config stored in a checkpoint as a plain dict, never resolved: an OmegaConf
    interpolation in it (which could read environment variables or files, or fail) is refused
    with :class:`CheckpointError`, naming its key but not its text."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=False)
    found = _interpolation(config, where)
    if found:
        raise CheckpointError(
            path,
            f"its stored config holds an interpolation (${{…}}) at {found}, which is not "
            "resolved (it could read environment variables or files): refused; re-save the "
            "network from a trusted copy with kxnet.checkpoint.save_weights",
        )
    return dict(config)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_net_config(path: Path, config: Mapping, where: str = "config") -> dict:
    """A network config read from a checkpoint, each of ``scale``, ``stages``, ``kernel_size`` and
    ``setting`` that it holds checked for type and range; :class:`CheckpointError` naming the
    key and value otherwise (a file can hold ``stages: 1.5``, ``-3`` or ``10**9``)."""
    from kxnet.kernels import SETTINGS

    valid = {
        "scale": (
            lambda v: _integer(v) and v in SCALES,
            ", ".join(map(str, SCALES[:-1])) + f" or {SCALES[-1]}",
        ),
        "stages": (lambda v: _integer(v) and 0 <= v <= MAX_STAGES, f"an integer 0 to {MAX_STAGES}"),
        "kernel_size": (
            lambda v: _integer(v) and 1 <= v <= MAX_KERNEL_SIZE and v % 2 == 1,
            f"an odd integer 1 to {MAX_KERNEL_SIZE}",
        ),
        "setting": (lambda v: isinstance(v, str) and v in SETTINGS, " or ".join(SETTINGS)),
    }
    for key, (ok, what) in valid.items():
        if key in config and not ok(config[key]):
            shown = " ".join(repr(config[key]).split())[:40]
            raise CheckpointError(
                path, f"its stored {where}.{key}={shown} is not {what}: {_DAMAGED}"
            )
    return dict(config)


def check_finite(path: Path, state: Mapping[str, object]) -> None:
    """Every entry of a state dict is a tensor, and every floating one is finite; else
    :class:`CheckpointError` naming the first entry at fault."""
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(
                path, f"weight {key} is a {type(value).__name__}, not a tensor: {_DAMAGED}"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                path,
                f"weight {key} holds {bad} non-finite value(s) (NaN or inf): the run that saved "
                "it diverged or the file is damaged; use an earlier checkpoint",
            )


def lightning_net_config(ckpt: Mapping, path: Path) -> dict | None:
    """The network config that :class:`~kxnet.train.module.KXNetModule` saved in a Lightning
    checkpoint (``hyper_parameters["net"]``, or ``["model"]`` before) as a plain dict, never
    resolved (:func:`plain_config`); None if there is none."""
    hparams = ckpt.get("hyper_parameters") or {}
    if not isinstance(hparams, Mapping):
        return None
    key = "net" if "net" in hparams else "model"
    config = hparams.get(key)
    if not isinstance(config, Mapping):
        return None
    where = f"hyper_parameters.{key}"
    return check_net_config(path, plain_config(path, config, where), where)


def _from_lightning(path: Path, ckpt: Mapping) -> tuple[dict, dict[str, Tensor]]:
    config = lightning_net_config(ckpt, path)
    if config is None:
        raise CheckpointError(
            path,
            "Lightning checkpoint without hyper_parameters['net']: not saved by "
            "kxnet.train.module.KXNetModule",
        )
    state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    if not state:
        raise CheckpointError(path, "Lightning checkpoint without 'net.' weights")
    return config, state


def _from_weights(path: Path, ckpt: Mapping) -> tuple[dict, dict[str, Tensor]]:
    config, state = ckpt.get("config"), ckpt.get("state_dict")
    if not isinstance(config, Mapping) or not isinstance(state, Mapping):
        raise CheckpointError(path, "kxnet-weights file without 'config' and 'state_dict'")
    return check_net_config(path, plain_config(path, config, "config")), dict(state)


def _check(path: Path, found: dict, expect: dict) -> None:
    for name, asked in expect.items():
        if asked is not None and found.get(name) != asked:
            option = OPTIONS[name]
            raise CheckpointError(
                path,
                f"checkpoint has {name}={found.get(name)} but {option}={asked} was asked for: "
                f"drop the {option} override (the checkpoint's value is used) or pass a "
                f"checkpoint with {name}={asked}",
            )


def _stored_sizes(state: Mapping[str, Tensor]) -> dict[str, int | None]:
    """The stage count and kernel size that a network's weights imply (None: not told, as in
    weights without ``aux_k``, which loading then refuses)."""
    aux_k = state.get("aux_k")
    if not isinstance(aux_k, Tensor) or aux_k.ndim != 3:
        return {"stages": None, "kernel_size": None}
    stages = {k.split(".")[1] for k in state if k.startswith("stages.")}
    return {"stages": len(stages), "kernel_size": int(aux_k.shape[-1])}


def _build(path: Path, config: dict, state: Mapping[str, Tensor]) -> KXNet:
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise CheckpointError(path, f"model config lacks {', '.join(missing)}")
    check_finite(path, state)
    stored = _stored_sizes(state)
    asked = {"stages": config["stages"], "kernel_size": config["kernel_size"]}
    for key, value in stored.items():
        if value is not None and value != asked[key]:
            raise CheckpointError(
                path,
                f"its stored config says {key}={asked[key]} but its weights hold {key}={value}: "
                f"{_DAMAGED}",
            )
    try:
        model = KXNet(**{k: config[k] for k in CONFIG_KEYS})
    except ValueError as err:
        raise CheckpointError(path, f"invalid model config ({err})") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:200]
        raise CheckpointError(path, f"weights do not fit the config {config} ({detail})") from err
    return model


def load_model(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    **expect,
) -> KXNet:
    """A :class:`KXNet` in eval mode with the weights of any supported checkpoint file.

    ``expect`` takes ``scale``, ``stages``, ``kernel_size`` and ``setting``: each one given (not
    None) must match the checkpoint, else :class:`CheckpointError` says which and how to fix it.
    The authors' files do not record the setting; there ``setting`` only names the model.
    """
    unknown = set(expect) - set(CONFIG_KEYS)
    if unknown:
        raise TypeError(f"load_model() got unexpected options {sorted(unknown)}")
    path = Path(path)
    ckpt = read_checkpoint(path, map_location)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(path, f"holds a {type(ckpt).__name__}, not a checkpoint dictionary")
    fmt = ckpt.get("format")
    if fmt is not None:
        if fmt != WEIGHTS_FORMAT:
            raise CheckpointError(path, f"unknown format {fmt!r} (expected {WEIGHTS_FORMAT!r})")
        config, state = _from_weights(path, ckpt)
    elif "state_dict" in ckpt and (
        "hyper_parameters" in ckpt or "pytorch-lightning_version" in ckpt
    ):
        config, state = _from_lightning(path, ckpt)
    else:
        return _load_official(path, ckpt, expect)
    _check(path, config, expect)
    return _build(path, config, state).eval()


def _load_official(path: Path, ckpt: Mapping, expect: dict) -> KXNet:
    try:
        convert_official_state_dict(ckpt)
    except ValueError as err:
        raise CheckpointError(
            path,
            f"not a KXNet checkpoint ({err}); expected a Lightning .ckpt of KXNetModule, a "
            "kxnet-weights file or the authors' released .pth",
        ) from err
    try:
        model = load_official(ckpt, setting=expect.get("setting"))
    except (ValueError, RuntimeError) as err:
        raise CheckpointError(path, f"authors' checkpoint cannot be loaded ({err})") from err
    check_finite(path, model.state_dict())
    _check(path, model_config(model), {k: v for k, v in expect.items() if k != "setting"})
    return model
