"""Field helpers of the config schemas: a default with a range, checked by
:func:`kxnet.schema.check_ranges` once the config is composed."""

from __future__ import annotations

import enum
from dataclasses import field
from typing import Any

__all__ = [
    "bounded",
    "odd",
    "path",
    "optional_group",
    "Precision",
    "EvalPrecision",
    "Export",
    "LogWhen",
    "Backend",
    "KernelMode",
    "ImageCheck",
]


def bounded(default: Any, minimum: float | None = None, maximum: float | None = None) -> Any:
    """A field with ``default`` whose value (when set) must lie in [minimum, maximum]."""
    return field(default=default, metadata={"min": minimum, "max": maximum})


def odd(default: Any, minimum: int = 1) -> Any:
    """A field whose value (when set) must be an odd integer >= ``minimum``."""
    return field(default=default, metadata={"min": minimum, "odd": True})


def path(default: Any) -> Any:
    """A file or folder option: a relative value is taken against ``paths.root_dir``
    (:func:`kxnet.schema.absolute_paths`), ``~`` is the home folder."""
    return field(default=default, metadata={"path": True})


def optional_group(schema: type) -> Any:
    """A group that is null or a node of ``schema`` (a dataclass), typed once composed by
    :func:`kxnet.schema.type_optional_groups`."""
    return field(default=None, metadata={"group": schema})


def _named(cls: type[enum.Enum]) -> type[enum.Enum]:
    """An enum shown (``str``, f-strings, ``--cfg job``) as its value."""
    cls.__str__ = lambda self: str(self.value)  # type: ignore[method-assign]
    cls.__format__ = lambda self, spec: format(str(self.value), spec)  # type: ignore[method-assign]
    return cls


# Lightning's precision names (a config takes 16, 32, 64 as numbers too).
Precision = _named(
    enum.Enum(
        "Precision",
        {
            "32-true": "32-true",
            "32": 32,
            "bf16-mixed": "bf16-mixed",
            "bf16-true": "bf16-true",
            "bf16": "bf16",
            "16-mixed": "16-mixed",
            "16-true": "16-true",
            "16": 16,
            "64-true": "64-true",
            "64": 64,
            "transformer-engine": "transformer-engine",
            "transformer-engine-float16": "transformer-engine-float16",
        },
    )
)
# Inference: 32 (float32, the paper's numbers) or bf16 (the proximal networks in bfloat16).
EvalPrecision = _named(enum.Enum("EvalPrecision", {"32": 32, "bf16": "bf16"}))
# Which checkpoint training exports: the last (the paper's) or the best on validation.
Export = _named(enum.Enum("Export", {"last": "last", "best": "best"}))
# When the plain progress lines are written: auto (not on a terminal), always, never.
LogWhen = _named(enum.Enum("LogWhen", {"auto": "auto", "always": "always", "never": "never"}))
# Predict's inference engine: torch, or onnx (an exported model in onnxruntime).
Backend = _named(enum.Enum("Backend", {"torch": "torch", "onnx": "onnx"}))
# Predict's kernel: global (one per image) or tiled (one per tile).
KernelMode = _named(enum.Enum("KernelMode", {"global": "global", "tiled": "tiled"}))
# How much of every training image is read at start-up: header, verify or decode.
ImageCheck = _named(
    enum.Enum("ImageCheck", {"header": "header", "verify": "verify", "decode": "decode"})
)
