"""KXNet: T unrolled stages of K-net and X-net (paper Fig. 2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from kxnet import kernels, physics
from kxnet.description import DEFAULT_STAGES, ModelDescription
from kxnet.nn.stage import Stage
from kxnet.nn.xnet import IMAGE_AUX_CHANNELS

__all__ = ["KXNet", "KXNetOutput"]

_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


@dataclass
class KXNetOutput:
    """Per-stage estimates, stage 0 (bicubic X⁽⁰⁾, Gaussian K⁽⁰⁾) first.

    ``images[t]``: B×3×H×W, ``kernels[t]``: B×p×p, for t = 0 … T.
    """

    images: list[Tensor]
    kernels: list[Tensor]

    @property
    def sr(self) -> Tensor:
        """The final SR image X⁽ᵀ⁾: B×3×H×W."""
        return self.images[-1]

    @property
    def kernel(self) -> Tensor:
        """The final kernel estimate K⁽ᵀ⁾: B×p×p."""
        return self.kernels[-1]


class KXNet(nn.Module):
    """Blind SR network: ``forward(lr)`` with lr B×3×h×w → :class:`KXNetOutput` at h·s×w·s.

    Args:
        scale: SR factor s (2, 3 or 4).
        stages: number of stages T; 0 returns the bicubic initialisation (the paper's S = 0).
        kernel_size: p; defaults to the setting's (21 in Setting 1, 11/15/21 in Setting 2).
        setting: "iso" or "aniso", which picks the initial kernel auxiliary bank.
        checkpoint_stages: recompute each stage in the backward pass instead of storing its
            activations (training memory then grows slowly with T).
        channels_last: run the proximal networks' convolutions in the channels-last layout
            (faster with oneDNN on CPU; results differ from the default layout by rounding).
        recompute_data_terms: in training, recompute the stages' data terms (residuals, data
            gradients, adjuster) in the backward pass instead of storing their intermediates;
            they are cheap to recompute, and their padded full-resolution copies are not small.
            Without effect when ``checkpoint_stages`` recomputes whole stages.
        compile: ``torch.compile`` each stage: ``False``, ``True`` (the default mode) or a mode
            name such as ``"reduce-overhead"`` (CUDA graphs) or ``"max-autotune"``. Parameter
            names and the state dict are those of the eager model.
        operators: the formulation of the data terms (:class:`kxnet.physics.Operators`): ours
            (:data:`~kxnet.physics.OURS`) or the authors' (:mod:`kxnet.bench.authors`).
            Same weights and, up to rounding, the same results.

    Under ``torch.autocast`` only the proximal networks run in the lower precision; the data
    terms, the kernel normalisation and the returned estimates stay in float32.
    """

    def __init__(
        self,
        scale: int,
        stages: int = DEFAULT_STAGES,
        kernel_size: int | None = None,
        setting: str = "iso",
        checkpoint_stages: bool = False,
        channels_last: bool = False,
        recompute_data_terms: bool = False,
        compile: bool | str = False,
        operators: physics.Operators = physics.OURS,
    ) -> None:
        super().__init__()
        description = ModelDescription(scale, setting, stages, kernel_size)
        scale, kernel_size, setting = (
            description.scale,
            description.kernel_size,
            description.setting,
        )
        self.scale = scale
        self.kernel_size = kernel_size
        self.setting = setting
        self.checkpoint_stages = checkpoint_stages
        self.channels_last = channels_last
        recompute = recompute_data_terms and not checkpoint_stages
        self.stages = nn.ModuleList(
            Stage(scale, kernel_size, channels_last, recompute, operators) for _ in range(stages)
        )
        laplacian = torch.tensor(_LAPLACIAN)
        self.aux_x_weight = nn.Parameter(laplacian.repeat(IMAGE_AUX_CHANNELS, 3, 1, 1))
        self.aux_k = nn.Parameter(kernels.auxiliary_bank(setting, kernel_size))
        k0 = kernels.isotropic_gaussian(torch.tensor([1.0], dtype=torch.float64), kernel_size)
        self.register_buffer("k0", k0.float(), persistent=False)
        if channels_last:
            self.stages.to(memory_format=torch.channels_last)
        self.compile_stages(compile)

    def compile_stages(self, compile: bool | str = True) -> None:
        """``torch.compile`` each stage (``compile`` as in the constructor; False: nothing);
        the weights, their names and the results stay those of the eager network.

        Shapes stay static: each new input size compiles again (up to torch's recompile limit,
        then that stage runs eager). Inductor's dynamic shapes fail to lower the stages for some
        sequences of sizes (validation images before training patches, or photos of different
        sizes: an undecidable comparison of padded strides).
        """
        if compile:
            mode = None if compile is True else str(compile)
            for stage in self.stages:
                stage.compile(mode=mode, dynamic=False)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def description(self) -> ModelDescription:
        """Scale, setting, stages and kernel size: what rebuilds this network."""
        return ModelDescription(self.scale, self.setting, self.num_stages, self.kernel_size)

    def paper_parameter_count(self) -> int:
        """Parameters as the paper's Table 3 counts them.

        The authors' model also holds a frozen copy of the initial kernel auxiliary bank as a
        parameter, which their count includes; this model keeps no such copy.
        """
        return sum(p.numel() for p in self.parameters()) + self.aux_k.numel()

    def initial_image(self, lr: Tensor) -> Tensor:
        """X⁽⁰⁾: bicubic upsampling of the LR image, B×3×h×w → B×3×h·s×w·s."""
        return F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)

    def forward(
        self,
        lr: Tensor,
        true_kernel: Tensor | None = None,
        stage_kernels: Sequence[Tensor] | None = None,
        keep_stages: bool = True,
    ) -> KXNetOutput:
        """lr: B×3×h×w in [0, 1] → :class:`KXNetOutput`.

        ``true_kernel`` (B×p×p) replaces K-net's estimate at every stage (the paper's non-blind
        check). ``stage_kernels`` (T tensors of B×p×p, e.g. ``out.kernels[1:]`` of an earlier
        run) replaces it stage by stage, so that X-net alone reproduces a blind run: this is how
        an image is restored tile by tile with the kernels estimated once for the whole image.
        With ``keep_stages=False`` the output holds only the final estimates (``images`` and
        ``kernels`` of length 1), so that inference does not keep every stage's image alive.
        """
        if lr.dim() != 4 or lr.shape[1] != 3:
            raise ValueError(f"KXNet expects B×3×h×w input, got shape {tuple(lr.shape)}")
        fixed = self._fixed_kernels(true_kernel, stage_kernels)
        batch = lr.shape[0]
        x = self.initial_image(lr)
        k = self.k0.to(lr.dtype).expand(batch, -1, -1)
        images, kernels_out = [x], [k]
        if self.stages:
            with physics.full_precision(lr):
                aux_x = F.conv2d(lr, self.aux_x_weight.to(lr.dtype), padding=1)
            aux_k = self.aux_k.to(lr.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
        for stage, stage_kernel in zip(self.stages, fixed, strict=True):
            if self.checkpoint_stages and self.training and torch.is_grad_enabled():
                x, k, aux_x, aux_k = checkpoint(
                    stage, x, lr, k, aux_x, aux_k, stage_kernel, use_reentrant=False
                )
            else:
                x, k, aux_x, aux_k = stage(x, lr, k, aux_x, aux_k, stage_kernel)
            if keep_stages:
                images.append(x)
                kernels_out.append(k)
        if not keep_stages:
            images, kernels_out = [x], [k]
        return KXNetOutput(images, kernels_out)

    def _fixed_kernels(
        self, true_kernel: Tensor | None, stage_kernels: Sequence[Tensor] | None
    ) -> list[Tensor | None]:
        """The kernel each stage's X-net is given instead of K-net's (None: K-net runs)."""
        if stage_kernels is None:
            return [true_kernel] * self.num_stages
        if true_kernel is not None:
            raise ValueError("give true_kernel or stage_kernels, not both")
        if len(stage_kernels) != self.num_stages:
            raise ValueError(
                f"stage_kernels has {len(stage_kernels)} kernels for {self.num_stages} stages"
            )
        return list(stage_kernels)
