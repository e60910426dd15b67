"""Schemas of the config groups every command composes from: ``paths``, ``setting``, ``net``
(the network, nested as ``model.net``) and the evaluation options (``eval``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from kxnet.description import DEFAULT_STAGES, Scale, Setting
from kxnet.schema.fields import EvalPrecision, bounded, odd, path

__all__ = ["PathsConfig", "SettingConfig", "NetConfig", "EvalOptionsConfig"]


@dataclass
class PathsConfig:
    """Where a run reads and writes. Relative paths are taken against ``root_dir``."""

    root_dir: str = path(MISSING)
    data_dir: str = path(MISSING)
    train_dir: str = path(MISSING)
    val_dir: str | None = path(None)
    bundled_train_dir: str = path(MISSING)
    benchmark_dir: str = path(MISSING)
    cache_dir: str = path(MISSING)
    output_dir: str = path(MISSING)


@dataclass
class SettingConfig:
    """A paper setting and what follows from it at the run's scale (the training kernels)."""

    name: Setting = MISSING
    # None where the scale is not set (eval and predict: the checkpoint's).
    kernel_size: int | None = odd(MISSING)
    sigma_range: list[float] | None = MISSING
    noise_max: float = bounded(MISSING, minimum=0)


@dataclass
class NetConfig:
    """The network, :class:`kxnet.nn.KXNet` (scale, stages, kernel size and setting are its
    :class:`~kxnet.description.ModelDescription`; None: the checkpoint's, where one is given)."""

    _target_: str = "kxnet.nn.KXNet"
    scale: Scale | None = None
    stages: int | None = bounded(DEFAULT_STAGES, minimum=0)
    kernel_size: int | None = odd(None)
    setting: Setting | None = None
    checkpoint_stages: bool = False
    recompute_data_terms: bool = True
    channels_last: bool = True
    # False, True or a torch.compile mode name ("reduce-overhead", "max-autotune").
    compile: Any = False


@dataclass
class EvalOptionsConfig:
    """How a model is evaluated on the benchmark sets (kxnet.eval, and after training)."""

    method: str | None = None
    datasets: list[str] | None = None
    noise: list[float] | None = None
    true_kernel: bool = False
    device: str = "auto"
    num_workers: int = bounded(0, minimum=0)
    warmup: int = bounded(0, minimum=0)
    progress: bool = False
    precision: EvalPrecision = EvalPrecision["32"]  # type: ignore[valid-type]
    self_ensemble: bool = False
    photos: str | None = path(None)
