"""The plan of a :mod:`kxnet.bench` run: its options checked, and every phase's variants as
picklable specs (:mod:`kxnet.bench.variants` builds and measures them)."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, ListConfig

from kxnet import kernels, physics
from kxnet.bench import measure, variants
from kxnet.bench.backends import BACKENDS
from kxnet.config import resolve_path
from kxnet.data.images import read_image
from kxnet.errors import StartupError

__all__ = [
    "PHASES",
    "check",
    "infer_input",
    "phases",
    "sides",
    "profile_specs",
    "backend_specs",
    "conv_spec",
]

PHASES = (
    "train",
    "infer",
    "synthesis",
    "hot_spots",
    "profile",
    "backends",
    "conv",
    "scaling",
    "loader",
)


def infer_input(cfg: DictConfig) -> tuple[torch.Tensor, str]:
    """The benchmark image, mod-cropped, blurred by a test kernel, downsampled, 8-bit: 1×3×h×w."""
    path = resolve_path(cfg.infer.image, resolve_path(cfg.paths.benchmark_dir, cfg.paths.root_dir))
    if not path.is_file():
        raise StartupError(
            f"infer.image: {path} does not exist; name an image under paths.benchmark_dir"
        )
    s = cfg.scale
    bank, _ = kernels.test_bank(cfg.setting.name, s, dtype=torch.float32)
    index = cfg.infer.kernel_index
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(bank):
        raise StartupError(f"infer.kernel_index must be in 0…{len(bank) - 1}, got {index}")
    hr = read_image(path).unsqueeze(0)
    hr = hr[..., : hr.shape[-2] // s * s, : hr.shape[-1] // s * s]
    lr = physics.blur_downsample(hr, bank[index : index + 1], s)
    return (lr * 255).round().clamp(0, 255) / 255, str(path)


def check(cfg: DictConfig) -> None:
    """Every option that can be checked before measuring: StartupError (one line) if not."""
    phases = cfg.phases
    if not isinstance(phases, ListConfig | list) or not phases or set(phases) - set(PHASES):
        raise StartupError(f"phases must be a non-empty list of {list(PHASES)}, got {phases}")
    precisions = cfg.precisions
    if (
        not isinstance(precisions, ListConfig | list)
        or "float32" not in precisions
        or (set(precisions) - set(variants.DTYPES))
    ):
        raise StartupError(
            f"precisions must list float32 and any of {sorted(variants.DTYPES)}, got {precisions}"
        )
    if cfg.model.net.stages == 0:
        raise StartupError(
            "model.net.stages=0 has no stage to train: set model.net.stages=1 or more"
        )
    presets = measure.run_isolated(variants.degradation_presets) if "synthesis" in phases else []
    for name in cfg.degradations if presets else []:
        if name not in presets:
            raise StartupError(
                f"degradations: no data/degradation preset {name!r} ({', '.join(presets)})"
            )
    p = int(cfg.model.net.kernel_size)
    if cfg.lr_size * cfg.scale <= p // 2:
        raise StartupError(
            f"lr_size={cfg.lr_size} is too small for kernel size {p} at x{cfg.scale}: set "
            f"lr_size={(p // 2) // cfg.scale + 1} or more"
        )


def sides(cfg: DictConfig, device: torch.device, infer_lr: torch.Tensor | None) -> tuple:
    """The specs of ours (as configured, float32) and of the authors' formulation."""
    p = int(cfg.model.net.kernel_size)
    common = {
        "device": str(device),
        "threads": cfg.threads,
        "seed": int(cfg.seed),
        "scale": int(cfg.scale),
        "setting": str(cfg.setting.name),
        "kernel_size": p,
        "sigma_range": [float(v) for v in cfg.setting.sigma_range],
        "noise_max": float(cfg.setting.noise_max),
        "stages": int(cfg.model.net.stages),
        "batch": int(cfg.batch),
        "lr_size": int(cfg.lr_size),
        "dtype": "float32",
        "infer_lr": infer_lr,
        "degradation": "paper",
    }
    ours = common | {
        "formulation": "ours",
        "checkpoint_stages": bool(cfg.model.net.checkpoint_stages),
        "channels_last": bool(cfg.model.net.channels_last),
        "recompute_data_terms": bool(cfg.model.net.recompute_data_terms),
        "compile": cfg.model.net.compile,
    }
    theirs = common | {
        "formulation": "authors",
        "checkpoint_stages": False,
        "channels_last": False,
        "recompute_data_terms": False,
        "compile": False,
        "dtype": "float32",
    }
    return ours, theirs


def phases(cfg: DictConfig, device: torch.device, infer_lr: torch.Tensor) -> dict[str, dict]:
    """Every phase of the run and its variants: ``{phase: {variant: picklable spec}}``."""
    ours, theirs = sides(cfg, device, infer_lr)
    ours_variants = {}
    for precision in cfg.precisions:
        compiled = [False, ours["compile"] or True] if cfg.compare.compile else [ours["compile"]]
        for mode in dict.fromkeys(compiled):
            name = "kxnet" + variants.SHORT[precision] + ("_compiled" if mode else "")
            ours_variants[name] = ours | {"dtype": str(precision), "compile": mode}
    both = ours_variants | ({"authors": theirs} if cfg.compare.authors else {})
    planned: dict[str, dict[str, dict]] = {}
    for phase in ("train", "infer"):
        if phase in cfg.phases:
            planned[phase] = {side: spec | {"kind": phase} for side, spec in both.items()}
    if "synthesis" in cfg.phases:
        presets = {
            "kxnet" if name == "paper" else f"kxnet_{name}": ours
            | {"kind": "synthesis", "degradation": str(name)}
            for name in cfg.degradations
        }
        pair = {"authors": theirs | {"kind": "synthesis"}} if cfg.compare.authors else {}
        planned["synthesis"] = presets | pair
    if "train" in planned and cfg.compare.checkpointing and not cfg.model.net.checkpoint_stages:
        checkpointed = ours | {"kind": "train", "checkpoint_stages": True}
        planned["train"] = {
            "kxnet": planned["train"]["kxnet"],
            "kxnet_checkpointed": checkpointed,
        } | planned["train"]
    if "hot_spots" in cfg.phases:
        for name in variants.HOT_SPOTS:
            planned[f"hot_spot/{name}"] = {
                side: spec | {"kind": "hot_spot", "hot_spot": name, "dtype": "float32"}
                for side, spec in (("kxnet", ours), ("authors", theirs))
            }
    return planned


def conv_spec(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    return {
        "device": str(device),
        "threads": cfg.threads,
        "scale": int(cfg.scale),
        "batch": int(cfg.batch),
        "lr_size": int(cfg.lr_size),
        "precisions": list(cfg.precisions),
        "warmup": int(cfg.conv.warmup),
        "repeats": int(cfg.conv.repeats),
        "matmul_size": int(cfg.matmul_size),
    }


def profile_specs(cfg: DictConfig, device: torch.device) -> dict[str, dict[str, Any]]:
    """The profile phase: our training step in each precision of ``precisions``."""
    ours, _ = sides(cfg, device, None)
    reps = {"warmup": int(cfg.profile.warmup), "repeats": int(cfg.profile.repeats)}
    return {
        str(precision): ours | reps | {"dtype": str(precision), "compile": False}
        for precision in cfg.precisions
    }


def backend_specs(cfg: DictConfig, device: torch.device) -> dict[str, dict[str, Any]]:
    """The backends phase: one image of ``backends.lr_size``² LR pixels through each backend of
    :data:`kxnet.bench.backends.BACKENDS` (CPU)."""
    ours, theirs = sides(cfg, device, None)
    common = {
        "device": "cpu",
        "image_size": int(cfg.backends.lr_size),
        "warmup": int(cfg.backends.warmup),
        "repeats": int(cfg.backends.repeats),
        "checkpoint_stages": False,
    }
    specs = {}
    for name, (_, backend, dtype, formulation, compiled) in BACKENDS.items():
        side = theirs if formulation == "authors" else ours
        specs[name] = side | common | {"backend": backend, "dtype": dtype, "compile": compiled}
    return specs
