"""One photo-sized image through each CPU inference backend: the network in PyTorch (float32,
and bfloat16 autocast), the exported model in onnxruntime (:mod:`kxnet.export`), and the
authors' formulation of the same network beside them.

Each backend runs in a fresh process (:func:`measure_backend`): it is built (the network, or the
onnxruntime session), then called ``warmup`` times and timed over ``repeats`` calls; its memory
is the resident-set growth over those calls, which counts onnxruntime's allocations as well as
torch's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kxnet.bench import measure, variants
from kxnet.export import export_onnx
from kxnet.onnx_network import OnnxKXNet

__all__ = ["BACKENDS", "measure_backend", "export_for"]

# name → (label, backend, precision, formulation, torch.compile of each stage)
BACKENDS = {
    "torch": ("PyTorch, float32", "torch", "float32", "ours", False),
    "torch_compiled": ("PyTorch, float32, compiled", "torch", "float32", "ours", True),
    "torch_bf16": ("PyTorch, bfloat16 autocast", "torch", "bfloat16", "ours", False),
    "torch_bf16_compiled": (
        "PyTorch, bfloat16 autocast, compiled",
        "torch",
        "bfloat16",
        "ours",
        True,
    ),
    "onnxruntime": ("onnxruntime, float32", "onnx", "float32", "ours", False),
    "authors": (
        "the authors' formulation, PyTorch float32",
        "torch",
        "float32",
        "authors",
        False,
    ),
}


def export_for(spec: dict[str, Any], path: Path) -> Path:
    """The ONNX model of the spec's network (its weights as :func:`measure_backend` builds them)."""
    return export_onnx(variants.build_model(spec, torch.device("cpu")).eval(), path)


def _call(spec: dict[str, Any]) -> Callable[[], None]:
    lr = torch.rand(1, 3, spec["image_size"], spec["image_size"], generator=torch.Generator())
    if spec["backend"] == "onnx":
        session = OnnxKXNet(spec["onnx_path"], threads=spec["threads"])
        return lambda: session(lr)
    model = variants.build_model(spec, torch.device("cpu")).eval()
    keep = spec["formulation"] == "authors"  # the authors' network returns every stage
    dtype = spec["dtype"]
    cast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if dtype == "bfloat16"
        else contextlib.nullcontext()
    )

    def infer() -> None:
        with torch.inference_mode(), cast:
            model(lr, keep_stages=keep)

    return infer


def measure_backend(spec: dict[str, Any]) -> dict[str, Any]:
    """Time and resident-memory growth of one backend, in this (fresh) process."""
    measure.set_threads(spec["threads"])
    call = _call(spec)
    rss = measure.rss_peak(lambda: call, calls=1)
    timing = measure.time_calls(call, torch.device("cpu"), spec["warmup"], spec["repeats"])
    return timing.summary() | {"rss": rss}
