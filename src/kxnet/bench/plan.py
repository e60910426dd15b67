"""The plan of a :mod:`kxnet.bench` run: its options checked, and every phase's variants as
picklable specs (:mod:`kxnet.bench.variants` builds and measures them)."""

from __future__ import annotations

from typing import Any

import torch

from kxnet import kernels, physics
from kxnet.bench import measure, variants
from kxnet.bench.backends import BACKENDS
from kxnet.config import resolve_path
from kxnet.data.images import read_image
from kxnet.errors import StartupError
from kxnet.schema.commands import BenchConfig

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


def infer_input(config: BenchConfig) -> tuple[torch.Tensor, str]:
    """The benchmark image, mod-cropped, blurred by a test kernel, downsampled, 8-bit: 1×3×h×w."""
    path = resolve_path(
        config.infer.image, resolve_path(config.paths.benchmark_dir, config.paths.root_dir)
    )
    if not path.is_file():
        raise StartupError(
            f"infer.image: {path} does not exist; name an image under paths.benchmark_dir"
        )
    s = config.scale
    bank, _ = kernels.test_bank(config.setting.name, s, dtype=torch.float32)
    index = config.infer.kernel_index
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(bank):
        raise StartupError(f"infer.kernel_index must be in 0…{len(bank) - 1}, got {index}")
    hr = read_image(path).unsqueeze(0)
    hr = hr[..., : hr.shape[-2] // s * s, : hr.shape[-1] // s * s]
    lr = physics.blur_downsample(hr, bank[index : index + 1], s)
    return (lr * 255).round().clamp(0, 255) / 255, str(path)


def check(config: BenchConfig) -> None:
    """Every option that can be checked before measuring: StartupError (one line) if not."""
    phases = config.phases
    if not isinstance(phases, list) or not phases or set(phases) - set(PHASES):
        raise StartupError(f"phases must be a non-empty list of {list(PHASES)}, got {phases}")
    precisions = config.precisions
    if (
        not isinstance(precisions, list)
        or "float32" not in precisions
        or (set(precisions) - set(variants.DTYPES))
    ):
        raise StartupError(
            f"precisions must list float32 and any of {sorted(variants.DTYPES)}, got {precisions}"
        )
    if config.model.net.stages == 0:
        raise StartupError(
            "model.net.stages=0 has no stage to train: set model.net.stages=1 or more"
        )
    if "scaling" in phases:
        _check_scaling(config)
    presets = measure.run_isolated(variants.degradation_presets) if "synthesis" in phases else []
    for name in config.degradations if presets else []:
        if name not in presets:
            raise StartupError(
                f"degradations: no data/degradation preset {name!r} ({', '.join(presets)})"
            )
    p = int(config.model.net.kernel_size)
    if config.lr_size * config.scale <= p // 2:
        raise StartupError(
            f"lr_size={config.lr_size} is too small for kernel size {p} at x{config.scale}: set "
            f"lr_size={(p // 2) // config.scale + 1} or more"
        )


def _check_scaling(config: BenchConfig) -> None:
    """The scaling phase fits two lines: two stage counts, and two batch · LR sizes."""
    spec = config.scaling
    pixels = {config.batch * int(size) ** 2 for size in spec.lr_sizes}
    pixels |= {int(batch) * config.lr_size**2 for batch in spec.batches}
    if len(set(spec.stages)) < 2 or len(pixels) < 2:
        raise StartupError(
            f"scaling fits a line over S and one over batch · LR pixels: give scaling.stages two "
            f"values or more (got {list(spec.stages)}) and scaling.lr_sizes and scaling.batches "
            f"two batch · LR sizes or more between them (got {sorted(pixels)})"
        )


def sides(config: BenchConfig, device: torch.device, infer_lr: torch.Tensor | None) -> tuple:
    """The specs of ours (as configured, float32) and of the authors' formulation."""
    p = int(config.model.net.kernel_size)
    common = {
        "device": str(device),
        "threads": config.threads,
        "seed": int(config.seed),
        "scale": int(config.scale),
        "setting": str(config.setting.name),
        "kernel_size": p,
        "sigma_range": [float(v) for v in config.setting.sigma_range],
        "noise_max": float(config.setting.noise_max),
        "stages": int(config.model.net.stages),
        "batch": int(config.batch),
        "lr_size": int(config.lr_size),
        "dtype": "float32",
        "infer_lr": infer_lr,
        "degradation": "paper",
    }
    ours = common | {
        "formulation": "ours",
        "checkpoint_stages": bool(config.model.net.checkpoint_stages),
        "channels_last": bool(config.model.net.channels_last),
        "recompute_data_terms": bool(config.model.net.recompute_data_terms),
        "compile": config.model.net.compile,
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


def phases(config: BenchConfig, device: torch.device, infer_lr: torch.Tensor) -> dict[str, dict]:
    """Every phase of the run and its variants: ``{phase: {variant: picklable spec}}``."""
    ours, theirs = sides(config, device, infer_lr)
    ours_variants = {}
    for precision in config.precisions:
        compiled = [False, ours["compile"] or True] if config.compare.compile else [ours["compile"]]
        for mode in dict.fromkeys(compiled):
            name = "kxnet" + variants.SHORT[precision] + ("_compiled" if mode else "")
            ours_variants[name] = ours | {"dtype": str(precision), "compile": mode}
    both = ours_variants | ({"authors": theirs} if config.compare.authors else {})
    planned: dict[str, dict[str, dict]] = {}
    for phase in ("train", "infer"):
        if phase in config.phases:
            planned[phase] = {side: spec | {"kind": phase} for side, spec in both.items()}
    if "synthesis" in config.phases:
        presets = {
            "kxnet" if name == "paper" else f"kxnet_{name}": ours
            | {"kind": "synthesis", "degradation": str(name)}
            for name in config.degradations
        }
        pair = {"authors": theirs | {"kind": "synthesis"}} if config.compare.authors else {}
        planned["synthesis"] = presets | pair
    if (
        "train" in planned
        and config.compare.checkpointing
        and not config.model.net.checkpoint_stages
    ):
        checkpointed = ours | {"kind": "train", "checkpoint_stages": True}
        planned["train"] = {
            "kxnet": planned["train"]["kxnet"],
            "kxnet_checkpointed": checkpointed,
        } | planned["train"]
    if "hot_spots" in config.phases:
        for name in variants.HOT_SPOTS:
            planned[f"hot_spot/{name}"] = {
                side: spec | {"kind": "hot_spot", "hot_spot": name, "dtype": "float32"}
                for side, spec in (("kxnet", ours), ("authors", theirs))
            }
    return planned


def conv_spec(config: BenchConfig, device: torch.device) -> dict[str, Any]:
    return {
        "device": str(device),
        "threads": config.threads,
        "scale": int(config.scale),
        "batch": int(config.batch),
        "lr_size": int(config.lr_size),
        "precisions": list(config.precisions),
        "warmup": int(config.conv.warmup),
        "repeats": int(config.conv.repeats),
        "matmul_size": int(config.matmul_size),
    }


def profile_specs(config: BenchConfig, device: torch.device) -> dict[str, dict[str, Any]]:
    """The profile phase: our training step in each precision of ``precisions``."""
    ours, _ = sides(config, device, None)
    reps = {"warmup": int(config.profile.warmup), "repeats": int(config.profile.repeats)}
    return {
        str(precision): ours | reps | {"dtype": str(precision), "compile": False}
        for precision in config.precisions
    }


def backend_specs(config: BenchConfig, device: torch.device) -> dict[str, dict[str, Any]]:
    """The backends phase: one image of ``backends.lr_size``² LR pixels through each backend of
    :data:`kxnet.bench.backends.BACKENDS` (CPU) in one of ``precisions``, the compiled ones only
    with ``compare.compile`` (``precisions=[float32]`` on a CPU without native bfloat16, where
    bfloat16 is emulated and many times slower)."""
    ours, theirs = sides(config, device, None)
    common = {
        "device": "cpu",
        "image_size": int(config.backends.lr_size),
        "warmup": int(config.backends.warmup),
        "repeats": int(config.backends.repeats),
        "checkpoint_stages": False,
    }
    specs = {}
    for name, (_, backend, dtype, formulation, compiled) in BACKENDS.items():
        if dtype not in config.precisions or (compiled and not config.compare.compile):
            continue
        side = theirs if formulation == "authors" else ours
        specs[name] = side | common | {"backend": backend, "dtype": dtype, "compile": compiled}
    return specs
