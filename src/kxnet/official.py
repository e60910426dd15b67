"""Loading the authors' released KXNet checkpoints (``.pth`` state dicts) into :class:`KXNet`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import Tensor

from kxnet.description import SCALES
from kxnet.nn.kxnet import KXNet
from kxnet.nn.xnet import xnet_channels

__all__ = ["load_official", "convert_official_state_dict"]

_PROX = re.compile(r"^(K|X)_stage\.(\d+)\.(?:K|X)_ProNet\.res(?:k|x)(\d)\.(\d)\.(weight|bias)$")
_IGNORED = {"kernel_map0", "eta_stage"}


def _unwrap(obj) -> Mapping[str, Tensor]:
    for key in ("state_dict", "params", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError("an official checkpoint must be a state dict (a mapping of tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def convert_official_state_dict(official: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the authors' keys to this model's; drops the unused η and the frozen bank copy."""
    out: dict[str, Tensor] = {}
    for key, value in _unwrap(official).items():
        match = _PROX.match(key)
        if match:
            net, stage, block, layer, kind = match.groups()
            prefix = f"stages.{stage}.{net.lower()}net.prox_net"
            block = int(block)
            if block <= 4:
                out[f"{prefix}.blocks.{block - 1}.{layer}.{kind}"] = value
            else:
                out[f"{prefix}.out.{kind}"] = value
        elif key == "AV_X_ker":
            out["aux_x_weight"] = value
        elif key == "kernel_map":
            out["aux_k"] = value
        elif key == "gamma_stage":
            for stage, gamma in enumerate(value.reshape(-1)):
                out[f"stages.{stage}.knet.gamma"] = gamma.clone()
        elif key not in _IGNORED:
            raise ValueError(f"unexpected key {key!r} in the official checkpoint")
    return out


def _infer(state: Mapping[str, Tensor]) -> tuple[int, int, int]:
    """(scale, stages, kernel_size) implied by a converted state dict."""
    if "aux_k" not in state:
        raise ValueError("the official checkpoint has no 'kernel_map': not a KXNet state dict")
    kernel_size = state["aux_k"].shape[-1]
    stage_ids = {int(k.split(".")[1]) for k in state if k.startswith("stages.")}
    if not stage_ids:
        raise ValueError(
            "the official checkpoint has no stages: no 'K_stage.*' or 'X_stage.*' keys"
        )
    channels = state["stages.0.xnet.prox_net.out.weight"].shape[0]
    by_channels = {xnet_channels(s): s for s in SCALES}
    if channels not in by_channels:
        raise ValueError(f"X-net with {channels} channels matches no scale (59/89/131)")
    return by_channels[channels], len(stage_ids), kernel_size


def load_official(
    path_or_state_dict: str | os.PathLike | Mapping[str, Tensor],
    scale: int | None = None,
    stages: int | None = None,
    kernel_size: int | None = None,
    setting: str | None = None,
    map_location: str | torch.device = "cpu",
) -> KXNet:
    """Build a :class:`KXNet` holding the weights of an authors' checkpoint.

    ``scale``, ``stages`` and ``kernel_size`` are read from the checkpoint; any that is given
    must agree with it, or a ``ValueError`` names the mismatch. ``setting`` only names the model
    (the learned kernel bank comes from the checkpoint); it defaults to "aniso" for p = 11 or 15
    and to "iso" otherwise.
    """
    source = path_or_state_dict
    if isinstance(source, str | os.PathLike):
        source = torch.load(os.fspath(source), map_location=map_location, weights_only=True)
    state = convert_official_state_dict(source)
    found = dict(zip(("scale", "stages", "kernel_size"), _infer(state), strict=True))
    asked = {"scale": scale, "stages": stages, "kernel_size": kernel_size}
    for name, value in asked.items():
        if value is not None and value != found[name]:
            raise ValueError(
                f"official checkpoint has {name}={found[name]}, but {name}={value} was asked for"
            )
    if setting is None:
        setting = "aniso" if found["kernel_size"] in (11, 15) else "iso"
    model = KXNet(setting=setting, **found)
    model.load_state_dict(state, strict=True)
    return model.eval()
