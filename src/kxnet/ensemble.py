"""x8 self-ensemble: the network on the eight flips and rotations of the LR image, averaged.

The degradation ``Y = (X ⊗ K)↓s`` keeps the HR pixels 0, s, 2s, … of each axis. Reversing an
axis of length N = s·n sends them to N−1, N−1−s, …, i.e. to s−1, 2s−1, …: a flip or rotation g
of Y is the degradation of gX moved s−1 pixels back along every axis that g reverses, by the
kernel gK. The network given gY therefore estimates that moved gX, and gK. Each image estimate is
moved forward again by s−1 pixels along the reversed axes (the s−1 border rows or columns it
leaves unknown are taken from the other symmetries), mapped back by g⁻¹, and the eight are
averaged, stage by stage; each kernel estimate is mapped back by g⁻¹ alone. A kernel given to
X-net (``true_kernel``, ``stage_kernels``) is mapped by g on the way in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kxnet.nn.kxnet import KXNet, KXNetOutput

__all__ = ["TRANSFORMS", "transform", "inverse", "reversed_axes", "self_ensemble", "SelfEnsemble"]

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


def reversed_axes(turns: int, flip: bool) -> tuple[bool, bool]:
    """Whether g's rows and g's columns run against the original axis they come from."""
    rows, cols = torch.meshgrid(torch.arange(2), torch.arange(2), indexing="ij")
    r, c = transform(rows, turns, flip), transform(cols, turns, flip)
    down = r[1, 0] - r[0, 0] + c[1, 0] - c[0, 0]
    right = r[0, 1] - r[0, 0] + c[0, 1] - c[0, 0]
    return bool(down < 0), bool(right < 0)


def _onto_grid(x: Tensor, reversed_: tuple[bool, bool], shift: int) -> tuple[Tensor, Tensor]:
    """An estimate in g's frame moved ``shift`` pixels forward along its reversed axes:
    …×H×W → (…×H×W with zeros where unknown, H×W mask of the known pixels)."""
    known = torch.ones(x.shape[-2:], dtype=x.dtype, device=x.device)
    for axis, reverse in zip((-2, -1), reversed_, strict=True):
        if reverse and shift:
            x = x.roll(shift, axis)
            known.narrow(axis, 0, shift).zero_()
    return x * known, known


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
    weight = lr.new_zeros(())
    for turns, flip in TRANSFORMS:
        g_lr = transform(lr, turns, flip)
        out = net(
            g_lr,
            true_kernel=None if true_kernel is None else transform(true_kernel, turns, flip),
            stage_kernels=None
            if stage_kernels is None
            else [transform(k, turns, flip) for k in stage_kernels],
            keep_stages=keep_stages,
        )
        reverse = reversed_axes(turns, flip)
        shift = out.sr.shape[-1] // g_lr.shape[-1] - 1
        for t, (x, k) in enumerate(zip(out.images, out.kernels, strict=True)):
            x, known = _onto_grid(x, reverse, shift)
            x, k = inverse(x, turns, flip), inverse(k, turns, flip) / len(TRANSFORMS)
            if t == len(images):
                images.append(x)
                kernels.append(k)
            else:
                images[t] += x
                kernels[t] += k
        weight = weight + inverse(known, turns, flip)  # the same for every stage
    return KXNetOutput([x / weight for x in images], kernels)


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
