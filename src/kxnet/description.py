"""What a KXNet model is: its scale, setting, stage count and kernel size, and what follows.

This module is the one place that knows the valid scales and settings and their defaults. The
network, the kernels, the training data, checkpoints and the config schema take them from here.

The paper's two settings (§5.1):

- Setting 1 (``iso``): isotropic Gaussian kernels, p = 21 at every scale, training widths
  σ ~ U[0.2, s], no noise; tested with "Gaussian8", 8 widths per scale.
- Setting 2 (``aniso``): rotated anisotropic Gaussians, p = 11 / 15 / 21 at x2 / x3 / x4,
  σx, σy ~ U[0.6, 5], θ ~ U[−π, π], training noise σ ~ U[0, 25] (0–255 units); tested with 8
  kernels at noise 0 and 15.

The paper trains S = 19 stages (its Table 3 ablation: 0 to 21).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = [
    "SCALES",
    "SETTINGS",
    "DEFAULT_STAGES",
    "DEFAULT_SCALE",
    "DEFAULT_SETTING",
    "Scale",
    "Setting",
    "kernel_size",
    "train_sigma_range",
    "train_noise_max",
    "test_noise",
    "ModelDescription",
]

SCALES = (2, 3, 4)
SETTINGS = ("iso", "aniso")
DEFAULT_STAGES = 19
# A model built without a checkpoint that names no scale or setting (the bicubic baseline).
DEFAULT_SCALE = 2
DEFAULT_SETTING = "iso"

_ANISO_KERNEL_SIZE = {2: 11, 3: 15, 4: 21}
_ISO_KERNEL_SIZE = 21
_ISO_SIGMA_MIN = 0.2
_ANISO_SIGMA = (0.6, 5.0)
_ANISO_NOISE_MAX = 25.0
_TEST_NOISE = {"iso": (0.0,), "aniso": (0.0, 15.0)}


class Scale(enum.IntEnum):
    """The SR factor s, as a config value: ``scale=2`` (a config takes the number)."""

    x2 = 2
    x3 = 3
    x4 = 4

    def __str__(self) -> str:
        return str(self.value)

    __format__ = int.__format__


class Setting(str, enum.Enum):
    """The paper's setting, as a config value: ``iso`` (Setting 1) or ``aniso`` (Setting 2)."""

    iso = "iso"
    aniso = "aniso"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


assert tuple(Scale) == SCALES and tuple(s.value for s in Setting) == SETTINGS


def _check(setting: str, scale: int) -> None:
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if isinstance(scale, bool) or scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")


def kernel_size(setting: str, scale: int) -> int:
    """Kernel size p of a setting: 21 at every scale in Setting 1, 11/15/21 in Setting 2."""
    _check(str(setting), int(scale))
    return _ISO_KERNEL_SIZE if str(setting) == "iso" else _ANISO_KERNEL_SIZE[int(scale)]


def train_sigma_range(setting: str, scale: int) -> tuple[float, float]:
    """Range of the training kernel widths: σ ∈ [0.2, s] (Setting 1), σx, σy ∈ [0.6, 5]."""
    _check(str(setting), int(scale))
    return (_ISO_SIGMA_MIN, float(scale)) if str(setting) == "iso" else _ANISO_SIGMA


def train_noise_max(setting: str) -> float:
    """The largest training noise σ (0–255 units): 0 in Setting 1, 25 in Setting 2."""
    _check(str(setting), SCALES[0])
    return 0.0 if str(setting) == "iso" else _ANISO_NOISE_MAX


def test_noise(setting: str) -> tuple[float, ...]:
    """Noise levels of the paper's tables: (0,) for Setting 1, (0, 15) for Setting 2."""
    _check(str(setting), SCALES[0])
    return _TEST_NOISE[str(setting)]


@dataclass(frozen=True)
class ModelDescription:
    """What builds a :class:`~kxnet.nn.KXNet`: scale s, setting, stages T (0 is the bicubic
    initialisation) and kernel size p (None: the setting's). Checked on construction
    (``ValueError``); a checkpoint carries it (:meth:`as_dict`)."""

    scale: int = DEFAULT_SCALE
    setting: str = DEFAULT_SETTING
    stages: int = DEFAULT_STAGES
    kernel_size: int | None = None

    def __post_init__(self) -> None:
        _check(str(self.setting), self.scale)
        object.__setattr__(self, "scale", int(self.scale))
        object.__setattr__(self, "setting", str(self.setting))
        if isinstance(self.stages, bool) or not isinstance(self.stages, int) or self.stages < 0:
            raise ValueError(f"stages must be an integer >= 0, got {self.stages!r}")
        p = self.kernel_size
        if p is None:
            object.__setattr__(self, "kernel_size", kernel_size(self.setting, self.scale))
        elif isinstance(p, bool) or not isinstance(p, int) or p < 1 or p % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {p!r}")

    @property
    def sigma_range(self) -> tuple[float, float]:
        """The training kernel widths of the setting and scale."""
        return train_sigma_range(self.setting, self.scale)

    @property
    def noise_max(self) -> float:
        """The training noise's largest σ (0–255 units)."""
        return train_noise_max(self.setting)

    @property
    def test_noise(self) -> tuple[float, ...]:
        """The noise levels of the paper's tables for the setting."""
        return test_noise(self.setting)

    def as_dict(self) -> dict[str, Any]:
        """``{scale, stages, kernel_size, setting}`` as plain values (what a checkpoint stores)."""
        return asdict(self)

    def with_stages(self, stages: int) -> ModelDescription:
        """The same model with ``stages`` stages (0: its bicubic initialisation)."""
        return replace(self, stages=stages)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ModelDescription:
        """From a mapping holding at least ``scale`` (other keys are ignored)."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def disagreement(self, asked: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
        """The first field of ``asked`` (None: unset) that differs from this description:
        ``(field, this value, asked value)``, or None when all agree."""
        for name, value in asked.items():
            if value is not None and getattr(self, name) != value:
                return name, getattr(self, name), value
        return None
