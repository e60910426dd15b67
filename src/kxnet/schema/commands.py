"""Schemas of the primary configs of ``python -m kxnet.eval``, ``kxnet.predict`` and
``kxnet.bench`` (train's: :mod:`kxnet.schema.train`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from kxnet.description import Scale
from kxnet.schema.fields import Backend, EvalPrecision, KernelMode, bounded, path
from kxnet.schema.shared import EvalOptionsConfig, NetConfig, PathsConfig, SettingConfig

__all__ = ["EvalModelConfig", "EvalConfig", "TileConfig", "PredictConfig", "BenchConfig"]


@dataclass
class EvalModelConfig:
    """The network evaluated: its ``net`` options."""

    net: NetConfig = field(default_factory=NetConfig)


@dataclass
class EvalConfig:
    """``python -m kxnet.eval``'s config. ``scale``, ``setting``, ``model.net.stages`` and
    ``model.net.kernel_size`` left at null are the checkpoint's; one that is set must agree."""

    task_name: str = MISSING
    scale: Scale | None = None
    setting: SettingConfig | None = None
    ckpt_path: str | None = path(None)
    weights: str | None = None
    eval: EvalOptionsConfig = field(default_factory=EvalOptionsConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: EvalModelConfig = field(default_factory=EvalModelConfig)


@dataclass
class TileConfig:
    """X-net tile by tile: the largest LR side at once and the context around each tile."""

    size: int = bounded(MISSING, minimum=1)
    # auto (the receptive radius, where tiled = untiled) or a number of LR pixels.
    overlap: Any = "auto"


@dataclass
class PredictConfig:
    """``python -m kxnet.predict``'s config (null model fields: the checkpoint's)."""

    task_name: str = MISSING
    scale: Scale | None = None
    setting: SettingConfig | None = None
    ckpt_path: str | None = path(None)
    weights: str | None = None
    backend: Backend = Backend.torch  # type: ignore[attr-defined]
    input: str = path(MISSING)
    output: str = path(MISSING)
    device: str = "auto"
    save_stages: bool = False
    tile: TileConfig = field(default_factory=TileConfig)
    kernel: KernelMode = KernelMode["global"]  # type: ignore[valid-type]
    self_ensemble: bool = False
    kernel_crop: int = bounded(MISSING, minimum=1)
    max_pixels: int = bounded(MISSING, minimum=1)
    precision: EvalPrecision = EvalPrecision["32"]  # type: ignore[valid-type]
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: EvalModelConfig = field(default_factory=EvalModelConfig)


@dataclass
class BenchInfer:
    image: str = MISSING
    kernel_index: int = bounded(0, minimum=0, maximum=7)


@dataclass
class BenchCompare:
    authors: bool = True
    checkpointing: bool = True
    compile: bool = True


@dataclass
class BenchRepeats:
    warmup: int = bounded(MISSING, minimum=0)
    repeats: int = bounded(MISSING, minimum=1)


@dataclass
class BenchBackends:
    lr_size: int = bounded(MISSING, minimum=1)
    warmup: int = bounded(MISSING, minimum=0)
    repeats: int = bounded(MISSING, minimum=1)


@dataclass
class BenchScaling:
    stages: list[int] = MISSING
    lr_sizes: list[int] = MISSING
    batches: list[int] = MISSING
    checkpointing: list[bool] = MISSING
    precision: str = MISSING
    warmup: int = bounded(MISSING, minimum=0)
    repeats: int = bounded(MISSING, minimum=1)


@dataclass
class BenchLoader:
    folder: str | None = path(None)
    images: int = bounded(MISSING, minimum=1)
    cache_dir: str = path(MISSING)
    batch: int = bounded(MISSING, minimum=1)
    workers: int = bounded(MISSING, minimum=0)
    seconds: float = bounded(MISSING, minimum=0)
    gpu_step_s: float | None = None
    gpu_tflops: float = bounded(MISSING, minimum=0)


@dataclass
class BenchModelConfig:
    net: NetConfig = field(default_factory=NetConfig)


@dataclass
class BenchConfig:
    """``python -m kxnet.bench``'s config."""

    task_name: str = MISSING
    scale: Scale = MISSING  # type: ignore[assignment]
    batch: int = bounded(MISSING, minimum=1)
    lr_size: int = bounded(MISSING, minimum=1)
    device: str = "auto"
    precisions: list[str] = MISSING
    threads: int | None = bounded(None, minimum=1)
    warmup: int = bounded(MISSING, minimum=0)
    repeats: int = bounded(MISSING, minimum=1)
    matmul_size: int = bounded(0, minimum=0)
    seed: int = MISSING
    rss: bool = True
    infer: BenchInfer = field(default_factory=BenchInfer)
    compare: BenchCompare = field(default_factory=BenchCompare)
    degradations: list[str] = MISSING
    phases: list[str] = MISSING
    hot_spots: BenchRepeats = field(default_factory=BenchRepeats)
    profile: BenchRepeats = field(default_factory=BenchRepeats)
    backends: BenchBackends = field(default_factory=BenchBackends)
    conv: BenchRepeats = field(default_factory=BenchRepeats)
    scaling: BenchScaling = field(default_factory=BenchScaling)
    loader: BenchLoader = field(default_factory=BenchLoader)
    paths: PathsConfig = field(default_factory=PathsConfig)
    setting: SettingConfig = field(default_factory=SettingConfig)
    model: BenchModelConfig = field(default_factory=BenchModelConfig)
