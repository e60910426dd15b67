"""Schemas of ``python -m kxnet.train``'s config: its primary config (:class:`TrainConfig`)
and its groups ``model``, ``data``, ``trainer``, ``optim`` (``callbacks`` and ``logger`` are
named ``_target_`` entries, each with the options of its class)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from kxnet.description import Scale, Setting
from kxnet.schema.fields import (
    Export,
    ImageCheck,
    Precision,
    bounded,
    odd,
    optional_group,
    path,
)
from kxnet.schema.shared import EvalOptionsConfig, NetConfig, PathsConfig, SettingConfig

__all__ = [
    "LossConfig",
    "ModelConfig",
    "DataConfig",
    "TrainerConfig",
    "OptimConfig",
    "TrainConfig",
]


@dataclass
class LossConfig:
    """Eq. 12's weights: α_t (kernel) and β_t (image) for t < T, and the final stage's."""

    kernel_stage_weight: float = bounded(MISSING, minimum=0)
    kernel_final_weight: float = bounded(MISSING, minimum=0)
    image_stage_weight: float = bounded(MISSING, minimum=0)
    image_final_weight: float = bounded(MISSING, minimum=0)


@dataclass
class ModelConfig:
    """The LightningModule, :class:`kxnet.train.module.KXNetModule`."""

    _target_: str = "kxnet.train.module.KXNetModule"
    net: NetConfig = field(default_factory=NetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: Any = MISSING
    scheduler: Any = None
    images_to_log: int = bounded(MISSING, minimum=0)
    stage_metrics: bool = MISSING


@dataclass
class DataConfig:
    """The DataModule, :class:`kxnet.data.datamodule.KXNetDataModule`."""

    _target_: str = "kxnet.data.datamodule.KXNetDataModule"
    _recursive_: bool = False
    # The training degradation (data/degradation: paper or realistic), built by the DataModule.
    degradation: dict[str, Any] = MISSING
    train_dir: str = path(MISSING)
    benchmark_dir: str = path(MISSING)
    cache_dir: str = path(MISSING)
    setting: Setting = MISSING
    scale: Scale = MISSING  # type: ignore[assignment]
    kernel_size: int = odd(MISSING)
    sigma_range: list[float] = MISSING
    noise_max: float = bounded(MISSING, minimum=0)
    lr_patch_size: int = bounded(MISSING, minimum=1)
    batch_size: int = bounded(MISSING, minimum=1)
    num_workers: int = bounded(MISSING, minimum=0)
    seed: int = MISSING
    samples_per_epoch: int | None = bounded(None, minimum=1)
    repeat: int = bounded(MISSING, minimum=1)
    cache_images: bool | None = None
    # header, verify or decode: how much of every training image is read at start-up.
    check: ImageCheck = MISSING  # type: ignore[valid-type]
    val_dir: str | None = path(None)
    val_images: int = bounded(MISSING, minimum=0)
    val_datasets: list[str] = MISSING
    val_noise: list[float] | None = None
    test_datasets: list[str] | None = None
    test_noise: list[float] | None = None
    pin_memory: bool = MISSING
    paper_data: bool = False


@dataclass
class TrainerConfig:
    """Lightning's Trainer: the options the presets set, and those often set with them."""

    _target_: str = "lightning.pytorch.trainer.Trainer"
    default_root_dir: str | None = None
    accelerator: str = "auto"
    strategy: Any = "auto"
    # A count >= 1, -1 (every device), auto, or a list of device indices.
    devices: Any = 1
    num_nodes: int = bounded(1, minimum=1)
    # null: a precision plugin of trainer.plugins decides (Lightning's precision=None).
    precision: Precision | None = Precision["32-true"]  # type: ignore[valid-type]
    max_steps: int = bounded(-1, minimum=-1)
    max_epochs: int | None = bounded(None, minimum=-1)
    max_time: str | None = None
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = bounded(None, minimum=1)
    num_sanity_val_steps: int = bounded(2, minimum=-1)
    log_every_n_steps: int = bounded(50, minimum=1)
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    overfit_batches: Any = 0.0
    fast_dev_run: Any = False
    accumulate_grad_batches: int = bounded(1, minimum=1)
    gradient_clip_val: float | None = bounded(None, minimum=0)
    gradient_clip_algorithm: str | None = None
    deterministic: Any = None
    benchmark: bool | None = None
    detect_anomaly: bool = False
    sync_batchnorm: bool = False
    use_distributed_sampler: bool = True
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None
    profiler: Any = None
    plugins: Any = None


@dataclass
class OptimConfig:
    """The optimiser and its learning-rate schedule (``_target_`` entries of torch.optim)."""

    optimizer: dict[str, Any] = MISSING
    scheduler: dict[str, Any] | None = None


@dataclass
class TrainConfig:
    """``python -m kxnet.train``'s config."""

    task_name: str = MISSING
    tags: list[str] = field(default_factory=list)
    scale: Scale = MISSING  # type: ignore[assignment]
    seed: int = MISSING
    ckpt_path: str | None = path(None)
    paper_data: bool = MISSING
    export: Export = MISSING  # type: ignore[valid-type]
    test: bool = MISSING
    optimized_metric: str | None = None
    # null, or EvalOptionsConfig: typed by kxnet.schema.type_optional_groups once composed
    # (OmegaConf cannot merge a command line's {…} into a dataclass node that is null).
    eval: Any = optional_group(EvalOptionsConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    setting: SettingConfig = field(default_factory=SettingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    callbacks: dict[str, Any] | None = None
    logger: dict[str, Any] | None = None
