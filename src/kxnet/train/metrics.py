"""The paper's metrics averaged during training: torchmetrics classes whose per-image values
(:mod:`kxnet.metrics`) are summed with their count, so that a dataset score is the mean over its
(image, kernel) pairs as in the paper, on one process or across DDP ranks."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics import Metric

from kxnet.metrics import kernel_error, psnr, ssim

__all__ = ["PSNR", "SSIM", "KernelL1", "KernelPSNR"]


class _PerImageMean(Metric):
    """Mean of a per-image value: sum and count states, summed across processes."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _values(self, preds: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor) -> None:
        values = self._values(preds, target)
        self.total += values.sum().to(self.total.device)
        self.count += values.numel()

    def compute(self) -> Tensor:
        if self.count == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update()")
        return self.total / self.count


class _ImageMean(_PerImageMean):
    """Mean of a per-image measure over images, the border of ``crop`` pixels cropped:
    ``update(sr, hr)`` with B×3×H×W images in [0, 1]."""

    higher_is_better = True
    measure: Callable[[Tensor, Tensor, int, bool], Tensor]

    def __init__(self, crop: int, y_channel: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.crop, self.y_channel = crop, y_channel

    def _values(self, preds: Tensor, target: Tensor) -> Tensor:
        return self.measure(preds, target, self.crop, self.y_channel)


class PSNR(_ImageMean):
    """Mean PSNR-Y over images (border of ``crop`` cropped)."""

    measure = staticmethod(psnr)


class SSIM(_ImageMean):
    """Mean SSIM-Y over images (border of ``crop`` cropped)."""

    measure = staticmethod(ssim)


class KernelL1(_PerImageMean):
    """Mean absolute kernel error over kernels: ``update(est, true)`` with B×p×p kernels."""

    higher_is_better = False

    def _values(self, preds: Tensor, target: Tensor) -> Tensor:
        return kernel_error(preds, target)["l1"]


class KernelPSNR(_PerImageMean):
    """Mean kernel PSNR over kernels (peak = the true kernel's maximum): B×p×p, B×p×p."""

    higher_is_better = True

    def _values(self, preds: Tensor, target: Tensor) -> Tensor:
        return kernel_error(preds, target)["psnr"]
