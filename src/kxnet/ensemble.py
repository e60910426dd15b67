"""x8 self-ensemble: the network on the eight flips and rotations of the LR image, averaged.

If ``Y = (X ⊗ K)↓s``, a flip or rotation g of Y is ``(gX ⊗ gK)↓s``: the network given gY
estimates gX and gK. Each estimate is mapped back by g⁻¹, the image and the kernel alike, and
the eight are averaged, stage by stage. A kernel given to X-net (``true_kernel``,
``stage_kernels``) is mapped by g on the way in.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kxnet.nn.kxnet import KXNet, KXNetOutput

__all__ = ["TRANSFORMS", "transform", "inverse", "self_ensemble", "SelfEnsemble"]

# (quarter turns, then a left-right flip): the eight symmetries of the square
TRANSFORMS = tuple((turns, flip) for flip in (False, True) for turns in range(4))


def transform(x: Tensor, turns: int, flip: bool) -> Tensor:
    """g x for the last two axes (…×h×w): ``turns`` quarter turns, then a left-right flip."""
    x = x.rot90(turns, (-2, -1))
    return x.flip(-1) if flip else x


def inverse(x: Tensor, turns: int, flip: bool) -> Tensor:
    """g⁻¹ x: undo the flip, then the turns."""
    x = x.flip(-1) if flip else x
    return x.rot90(-turns, (-2, -1))


def self_ensemble(
    net: nn.Module,
    lr: Tensor,
    true_kernel: Tensor | None = None,
    stage_kernels: Sequence[Tensor] | None = None,
    keep_stages: bool = True,
) -> KXNetOutput:
    """The mean over the eight symmetries g of g⁻¹ net(g lr): B×3×h×w → :class:`KXNetOutput`.

    ``net`` is called as KXNet is (``true_kernel`` B×p×p, ``stage_kernels`` T of B×p×p, both
    transformed by g); every stage's image and kernel is mapped back and averaged.
    """
    images: list[Tensor] = []
    kernels: list[Tensor] = []
    for turns, flip in TRANSFORMS:
        out = net(
            transform(lr, turns, flip),
            true_kernel=None if true_kernel is None else transform(true_kernel, turns, flip),
            stage_kernels=None
            if stage_kernels is None
            else [transform(k, turns, flip) for k in stage_kernels],
            keep_stages=keep_stages,
        )
        for sums, estimates in ((images, out.images), (kernels, out.kernels)):
            back = [inverse(x, turns, flip) / len(TRANSFORMS) for x in estimates]
            if sums:
                for total, x in zip(sums, back, strict=True):
                    total += x
            else:
                sums.extend(back)
    return KXNetOutput(images, kernels)


class SelfEnsemble(nn.Module):
    """A KXNet whose forward is :func:`self_ensemble` (8 passes): for evaluation and prediction.

    Holds the network as ``net``; ``scale``, ``kernel_size``, ``setting``, ``num_stages`` and
    ``k0`` are the network's.
    """

    def __init__(self, net: KXNet) -> None:
        super().__init__()
        self.net = net

    scale = property(lambda self: self.net.scale)
    kernel_size = property(lambda self: self.net.kernel_size)
    setting = property(lambda self: self.net.setting)
    num_stages = property(lambda self: self.net.num_stages)
    k0 = property(lambda self: self.net.k0)

    def paper_parameter_count(self) -> int:
        return self.net.paper_parameter_count()

    def forward(
        self,
        lr: Tensor,
        true_kernel: Tensor | None = None,
        stage_kernels: Sequence[Tensor] | None = None,
        keep_stages: bool = True,
    ) -> KXNetOutput:
        return self_ensemble(self.net, lr, true_kernel, stage_kernels, keep_stages)
