"""The training loss of KXNet (paper Eq. 12): per-stage L1 on the kernel and on the image."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from kxnet.nn.kxnet import KXNetOutput

__all__ = ["StageLoss", "StageLossValue"]


@dataclass
class StageLossValue:
    """The weighted total and its parts; ``kernel[t]`` and ``image[t]`` are the unweighted L1
    terms of stage t + 1 (stage 0, the initialisation, carries no loss)."""

    total: Tensor
    kernel: list[Tensor]
    image: list[Tensor]


class StageLoss:
    """``Σ_t α_t·‖K − K⁽ᵗ⁾‖₁ + β_t·‖X − X⁽ᵗ⁾‖₁`` over stages t = 1 … T (mean absolute errors).

    α_t = ``kernel_stage_weight`` and β_t = ``image_stage_weight`` for t < T; α_T =
    ``kernel_final_weight`` and β_T = ``image_final_weight`` (paper: 0.1 and 1).
    """

    def __init__(
        self,
        kernel_stage_weight: float = 0.1,
        kernel_final_weight: float = 1.0,
        image_stage_weight: float = 0.1,
        image_final_weight: float = 1.0,
    ) -> None:
        weights = (kernel_stage_weight, kernel_final_weight, image_stage_weight, image_final_weight)
        if min(weights) < 0:
            raise ValueError(f"loss weights must be >= 0, got {weights}")
        self.kernel_weights = (kernel_stage_weight, kernel_final_weight)
        self.image_weights = (image_stage_weight, image_final_weight)

    def __call__(self, output: KXNetOutput, hr: Tensor, kernel: Tensor) -> StageLossValue:
        """output: T + 1 stages of B×3×H×W images and B×p×p kernels; hr B×3×H×W; kernel B×p×p."""
        stages = len(output.images) - 1
        if stages < 1:
            raise ValueError(
                "the loss needs a network with at least one stage (model.net.stages >= 1)"
            )
        kernel_terms = [F.l1_loss(k, kernel) for k in output.kernels[1:]]
        image_terms = [F.l1_loss(x, hr) for x in output.images[1:]]
        total = hr.new_zeros(())
        for t, (k_term, x_term) in enumerate(zip(kernel_terms, image_terms, strict=True), 1):
            last = int(t == stages)
            total = total + self.kernel_weights[last] * k_term + self.image_weights[last] * x_term
        return StageLossValue(total, kernel_terms, image_terms)
