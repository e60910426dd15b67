"""Measuring a network on the benchmark test sets as the paper's tables do: the setting's
8 test kernels per image, PSNR/SSIM on Y with the scale's border cropped.

:func:`evaluate` runs a model once on every (image, kernel, noise) item of a
:class:`~kxnet.data.benchmarks.BenchmarkSet`, one image per batch, and returns one record per
item; :func:`summarize` averages the records per (setting, scale, noise, dataset).
:func:`check_true_kernel` raises :class:`~kxnet.errors.EvalError`, whose message is one line
naming the option and the fix.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from kxnet import description, metrics
from kxnet.data.benchmarks import BenchmarkSet
from kxnet.errors import EvalError
from kxnet.hardware import PRECISIONS, inference_autocast
from kxnet.nn import KXNet

__all__ = [
    "method_name",
    "check_true_kernel",
    "evaluate",
    "summarize",
    "device_name",
]

log = logging.getLogger(__name__)


def method_name(model: KXNet, true_kernel: bool = False) -> str:
    """The table row name: "Bicubic" for 0 stages, else "KXNet (S=T)" (and ", GT kernel")."""
    if model.num_stages == 0:
        return "Bicubic"
    return f"KXNet (S={model.num_stages}{', GT kernel' if true_kernel else ''})"


def check_true_kernel(model: KXNet, setting: str, scale: int) -> None:
    """X-net can take the test kernels only if they have the model's kernel size."""
    p = description.kernel_size(setting, scale)
    if model.kernel_size != p:
        raise EvalError(
            f"eval.true_kernel=true needs the model's kernel size ({model.kernel_size}) to be the "
            f"test kernels' ({p} in setting {setting} x{scale}): set eval.true_kernel=false"
        )
    if model.num_stages == 0:
        raise EvalError(
            "eval.true_kernel=true with model.net.stages=0: bicubic has no X-net to take the "
            "kernel; pass a checkpoint (ckpt_path=…)"
        )


def _centre_pad(kernel: Tensor, size: int) -> Tensor:
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, [pad] * 4) if pad > 0 else kernel


def _kernel_error(est: Tensor, true: Tensor) -> dict[str, float | None]:
    """Kernel L1 and PSNR; kernels of two sizes are compared on the larger grid (zero-padded)."""
    size = max(est.shape[-1], true.shape[-1])
    error = metrics.kernel_error(_centre_pad(est, size), _centre_pad(true, size))
    return {name: _finite(value.item()) for name, value in error.items()}


def _finite(value: float) -> float | None:
    """``value``, or None for ±inf / NaN (an exact kernel has infinite PSNR), which JSON lacks."""
    return value if math.isfinite(value) else None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def evaluate(
    model: KXNet,
    dataset: BenchmarkSet,
    device: torch.device | str,
    num_workers: int = 0,
    *,
    true_kernel: bool = False,
    warmup: int = 0,
    on_record: Callable[[dict], None] | None = None,
    precision: str = "32",
) -> list[dict]:
    """One record per item of ``dataset``, each item once, batch = one image.

    A record holds the item's keys (dataset, image, setting, scale, noise, kernel_index and the
    kernel's parameters), ``psnr_y``, ``ssim_y``, ``psnr_rgb``, ``kernel_l1`` and
    ``kernel_psnr`` of the final kernel (None where infinite), ``stage_psnr_y`` (PSNR-Y of
    X⁽⁰⁾ … X⁽ᵀ⁾) and ``seconds``, the wall time of the forward pass. ``true_kernel`` feeds the
    item's kernel to X-net in place of K-net's estimate. ``warmup`` forward passes on the first
    item run before timing starts. ``on_record`` is called with each record (a progress bar).
    ``precision``: ``32`` (the paper's numbers), or ``bf16`` (autocast: the proximal networks
    in bfloat16, the data terms in float32).
    """
    device = torch.device(device)
    model = model.eval().to(device)
    loader = DataLoader(dataset, batch_size=1, num_workers=num_workers)
    if precision not in PRECISIONS:
        raise EvalError(f"precision={precision} is not one of {', '.join(PRECISIONS)}")
    cast = inference_autocast(device, precision)
    if warmup and len(dataset):
        lr = dataset[0]["lr"][None].to(device)
        for _ in range(warmup):
            with cast:
                model(lr)
    records = []
    for batch in loader:
        lr, hr = batch["lr"].to(device), batch["hr"].to(device)
        kernel = batch["kernel"].to(device=device, dtype=lr.dtype)
        _synchronize(device)
        start = time.perf_counter()
        with cast:
            out = model(lr, true_kernel=kernel if true_kernel else None)
        _synchronize(device)
        seconds = time.perf_counter() - start
        psnr_y, ssim_y = metrics.psnr_ssim(out.sr, hr, dataset.scale)
        stages = [metrics.psnr(x, hr, dataset.scale).item() for x in out.images[:-1]]
        k = int(batch["kernel_index"][0])
        error = _kernel_error(out.kernel, kernel)
        record = {
            "dataset": batch["dataset"][0],
            "image": batch["image"][0],
            "setting": dataset.setting,
            "scale": dataset.scale,
            "noise": float(batch["noise"][0]),
            "kernel_index": k,
            "kernel": dataset.kernel_params[k],
            "psnr_y": psnr_y.item(),
            "ssim_y": ssim_y.item(),
            "psnr_rgb": metrics.psnr(out.sr, hr, dataset.scale, y_channel=False).item(),
            "kernel_l1": error["l1"],
            "kernel_psnr": error["psnr"],
            "stage_psnr_y": [*stages, psnr_y.item()],
            "seconds": seconds,
        }
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records


def _mean(values: Iterable[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return sum(finite) / len(finite) if finite else None


def summarize(records: Iterable[dict]) -> list[dict]:
    """Averages per (setting, scale, noise, dataset) over every image and kernel.

    Each row holds ``count`` and the mean of every measured value of :func:`evaluate` (the
    stage list element-wise); a kernel PSNR mean skips the items where it is infinite.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["setting"], r["scale"], r["noise"], r["dataset"])].append(r)
    rows = []
    for (setting, scale, noise, dataset), group in groups.items():
        row = {
            "setting": setting,
            "scale": scale,
            "noise": noise,
            "dataset": dataset,
            "count": len(group),
        }
        for key in ("psnr_y", "ssim_y", "psnr_rgb", "kernel_l1", "kernel_psnr", "seconds"):
            row[key] = _mean(r[key] for r in group)
        row["stage_psnr_y"] = [
            _mean(v) for v in zip(*(r["stage_psnr_y"] for r in group), strict=True)
        ]
        rows.append(row)
    return rows


def device_name(device: torch.device) -> str:
    """A readable name of the device that timed the run, e.g. "NVIDIA H100" or "cpu (8 threads)"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"
