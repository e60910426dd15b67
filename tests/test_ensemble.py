import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kxnet import physics
from kxnet.ensemble import (
    TRANSFORMS,
    SelfEnsemble,
    inverse,
    reversed_axes,
    self_ensemble,
    transform,
)
from kxnet.nn.kxnet import KXNet, KXNetOutput


class GridInterpolation(nn.Module):
    """A stand-in equivariant in the degradation's sense: each LR pixel put back at the HR pixel
    the degradation kept (0, s, 2s, …) and the pixels between interpolated linearly, the s−1
    after the last ones repeating it, so that ``(x)↓s`` gives the LR again; as its "kernel", the
    LR's channel mean normalised to sum 1 (a square LR of p×p), which turns with the image; a
    kernel given (``true_kernel`` or the last of ``stage_kernels``) is returned."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, lr, true_kernel=None, stage_kernels=None, keep_stages=True):
        s, (h, w) = self.scale, lr.shape[-2:]
        sr = F.interpolate(
            lr, size=((h - 1) * s + 1, (w - 1) * s + 1), mode="bilinear", align_corners=True
        )
        sr = F.pad(sr, (0, s - 1, 0, s - 1), mode="replicate")
        k = lr.mean(1)
        k = k / k.sum((-2, -1), keepdim=True)
        if stage_kernels is not None:
            k = stage_kernels[-1]
        if true_kernel is not None:
            k = true_kernel
        return KXNetOutput([sr], [k])


def test_transforms_are_the_eight_symmetries_and_inverse_undoes_each():
    x = torch.arange(12.0).reshape(1, 3, 4)
    seen = {tuple(transform(x, *g).flatten().tolist()) for g in TRANSFORMS}
    assert len(seen) == 8
    for g in TRANSFORMS:
        assert torch.equal(inverse(transform(x, *g), *g), x)


def _moved_back(x: torch.Tensor, turns: int, flip: bool, scale: int) -> torch.Tensor:
    """g x moved s−1 pixels back along the axes g reverses."""
    x = transform(x, turns, flip)
    for axis, reverse in zip((-2, -1), reversed_axes(turns, flip), strict=True):
        if reverse:
            x = x.roll(1 - scale, axis)
    return x


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_a_flipped_or_turned_lr_is_the_degradation_of_the_moved_hr(scale):
    """The premise of the ensemble: g(x ⊗ k)↓s = (moved g x ⊗ g k)↓s away from the border."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 12 * scale, 10 * scale, dtype=torch.float64)
    k = torch.rand(1, 7, 7, dtype=torch.float64)  # no symmetry: its turns are all different
    k = k / k.sum()
    y = physics.blur_downsample(x, k, scale)
    inner = (..., slice(2, -2), slice(2, -2))  # the padding's rows and columns differ
    moved = 0
    for turns, flip in TRANSFORMS:
        g_y = transform(y, turns, flip)
        moved_y = physics.blur_downsample(
            _moved_back(x, turns, flip, scale), transform(k, turns, flip), scale
        )
        assert torch.allclose(g_y[inner], moved_y[inner], atol=1e-12), (turns, flip)
        moved += any(reversed_axes(turns, flip))
    assert moved == 6  # all but the identity and the transpose reverse an axis


def test_reversed_axes_of_the_eight_symmetries():
    assert reversed_axes(0, False) == (False, False)
    assert reversed_axes(2, False) == (True, True)
    assert reversed_axes(0, True) == (False, True)
    assert reversed_axes(3, True) == (False, False)  # three quarter turns, a flip: the transpose
    assert reversed_axes(1, True) == (True, True)  # the anti-transpose
    assert reversed_axes(1, False) == (True, False)  # rows come from the columns, right to left


@pytest.mark.parametrize("scale", [2, 3])
def test_ensemble_of_an_equivariant_stand_in_is_its_plain_output(scale):
    lr = torch.rand(2, 3, 7, 7)
    net = GridInterpolation(scale)
    plain, ensemble = net(lr), self_ensemble(net, lr)
    assert torch.allclose(ensemble.sr, plain.sr, atol=1e-6)
    # the kernel is not symmetric: equal only if each is mapped back with its image
    assert not torch.allclose(plain.kernel, plain.kernel.flip(-1), atol=1e-3)
    assert torch.allclose(ensemble.kernel, plain.kernel, atol=1e-6)


def test_ensemble_of_the_stand_in_on_a_non_square_image():
    lr = torch.rand(1, 3, 6, 9)
    net = GridInterpolation(4)
    assert torch.allclose(self_ensemble(net, lr).sr, net(lr).sr, atol=1e-6)


def test_an_estimate_kept_centred_instead_of_moved_is_not_the_plain_output():
    """Mapping each estimate back by g⁻¹ alone puts the stand-in's pixels at s−1, 2s−1, … for
    the reversed axes: the mean is then not the plain output, which is what the move is for."""
    lr = torch.rand(1, 3, 7, 7)
    net = GridInterpolation(2)
    centred = sum(inverse(net(transform(lr, *g)).sr, *g) for g in TRANSFORMS) / 8
    assert (centred - net(lr).sr).abs().max() > 0.1


def test_given_kernels_are_transformed_on_the_way_in():
    lr = torch.rand(1, 3, 7, 7)
    k = torch.rand(1, 7, 7)
    for given in ({"stage_kernels": [k]}, {"true_kernel": k}):
        out = self_ensemble(GridInterpolation(2), lr, **given)
        assert torch.allclose(out.kernel, k, atol=1e-6), given


def test_the_stages_kept_are_the_networks():
    lr = torch.rand(1, 3, 8, 8)
    net = KXNet(2, 2, kernel_size=5).eval()
    with torch.inference_mode():
        assert len(self_ensemble(net, lr).images) == 3
        assert len(self_ensemble(net, lr, keep_stages=False).images) == 1


def test_a_kxnet_with_weights_is_not_equivariant():
    lr = torch.rand(1, 3, 12, 10)
    with torch.inference_mode():
        net = KXNet(2, 1, kernel_size=11).eval()
        plain, ensemble = net(lr), SelfEnsemble(net)(lr)
    assert ensemble.sr.shape == plain.sr.shape
    assert len(ensemble.images) == len(plain.images) == 2
    assert (ensemble.sr - plain.sr).abs().max() > 1e-3
    assert not torch.allclose(ensemble.kernel, plain.kernel, atol=1e-5)
    assert torch.allclose(ensemble.kernel.sum((-2, -1)), torch.ones(1))


def test_self_ensemble_keeps_the_networks_properties():
    net = KXNet(3, 2, kernel_size=15)
    wrapped = SelfEnsemble(net)
    assert (wrapped.scale, wrapped.kernel_size, wrapped.num_stages) == (3, 15, 2)
    assert wrapped.paper_parameter_count() == net.paper_parameter_count()
