"""Which formulation of proxNet's 3×3 convolutions runs fastest here, in each precision.

One convolution of proxNet_X (C = 6s² + 35 channels at the LR size, the bulk of KXNet's FLOPs),
forward and backward (the input and weight gradients), in each of:

- ``nchw``: oneDNN's (cuDNN's) convolution on contiguous tensors;
- ``channels_last``: the same on channels-last tensors, what the network uses
  (``model.net.channels_last``);
- ``im2col``: the patches unfolded (``F.unfold``), then one matrix product;
- ``compiled``: ``torch.compile`` of the channels-last convolution.

Each is timed in turns in one process, with its FLOP/s as a share of the matrix-multiply peak of
its precision measured there too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from kxnet.bench import measure
from kxnet.nn.xnet import xnet_channels

__all__ = ["FORMULATIONS", "measure_formulations"]

FORMULATIONS = ("nchw", "channels_last", "im2col", "compiled")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _conv_im2col(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    batch, _, height, width = x.shape
    cols = F.unfold(x, 3, padding=1)
    out = w.reshape(w.shape[0], -1) @ cols + b[:, None]
    return out.reshape(batch, -1, height, width)


def _callable(
    form: str, precision: str, spec: dict[str, Any], device: torch.device
) -> Callable[[], None]:
    generator = torch.Generator(device=device).manual_seed(0)
    channels = xnet_channels(spec["scale"])
    shape = (spec["batch"], channels, spec["lr_size"], spec["lr_size"])
    x = torch.randn(shape, generator=generator, device=device)
    w = torch.randn(channels, channels, 3, 3, generator=generator, device=device) * 0.05
    b = torch.zeros(channels, device=device)
    layout = (
        torch.channels_last if form in ("channels_last", "compiled") else torch.contiguous_format
    )
    x = x.contiguous(memory_format=layout).requires_grad_()
    w = w.contiguous(memory_format=layout).requires_grad_()
    b.requires_grad_()
    if form == "im2col":
        conv = _conv_im2col
    elif form == "compiled":
        conv = torch.compile(F.conv2d)
    else:
        conv = F.conv2d
    cast = torch.autocast(device.type, dtype=DTYPES[precision], enabled=precision != "float32")
    grad = torch.randn(shape, generator=generator, device=device).contiguous(memory_format=layout)

    def call() -> None:
        with cast:
            out = conv(x, w, b) if form == "im2col" else conv(x, w, b, padding=1)
        out.backward(grad.to(out.dtype))
        x.grad = w.grad = b.grad = None

    return call


def measure_formulations(spec: dict[str, Any]) -> dict[str, Any]:
    """Time every formulation in every precision of ``spec["precisions"]``, in this process."""
    measure.set_threads(spec["threads"])
    device = torch.device(spec["device"])
    channels = xnet_channels(spec["scale"])
    # forward and the two gradients: three times the multiply-adds of the forward
    flops = 3 * 2 * spec["batch"] * channels**2 * 9 * spec["lr_size"] ** 2
    fns = {
        f"{form}/{precision}": _callable(form, precision, spec, device)
        for precision in spec["precisions"]
        for form in FORMULATIONS
    }
    timings = measure.time_interleaved(fns, device, spec["warmup"], spec["repeats"])
    peaks = {
        p: measure.matmul_peak(device, DTYPES[p], spec["matmul_size"]) for p in spec["precisions"]
    }
    results = {}
    for name, timing in timings.items():
        precision = name.split("/")[1]
        seconds = timing.summary()["wall_s"]["median"]
        results[name] = {
            "seconds": seconds,
            "flops_per_s": flops / seconds,
            "fraction_of_peak": flops / seconds / peaks[precision],
        }
    return {"channels": channels, "flops": flops, "matmul_peak": peaks, "results": results}
