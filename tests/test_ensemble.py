import torch
import torch.nn.functional as F
from torch import nn

from kxnet.ensemble import TRANSFORMS, SelfEnsemble, inverse, self_ensemble, transform
from kxnet.nn.kxnet import KXNet, KXNetOutput


class KernelFromImage(nn.Module):
    """An equivariant stand-in: bicubic x2 and, as its "kernel", the LR's channel mean normalised
    to sum 1 (the whole p×p image), which turns with the image; a kernel given is returned."""

    scale, kernel_size, num_stages = 2, 7, 1

    def forward(self, lr, true_kernel=None, stage_kernels=None, keep_stages=True):
        sr = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
        k = lr.mean(1)
        k = k / k.sum((-2, -1), keepdim=True)
        if stage_kernels is not None:
            k = stage_kernels[-1]
        return KXNetOutput([sr], [k])


def test_transforms_are_the_eight_symmetries_and_inverse_undoes_each():
    x = torch.arange(12.0).reshape(1, 3, 4)
    seen = {tuple(transform(x, *g).flatten().tolist()) for g in TRANSFORMS}
    assert len(seen) == 8
    for g in TRANSFORMS:
        assert torch.equal(inverse(transform(x, *g), *g), x)


def test_ensemble_of_an_equivariant_stand_in_is_its_plain_output():
    lr = torch.rand(2, 3, 7, 7)
    net = KernelFromImage()
    plain, ensemble = net(lr), self_ensemble(net, lr)
    assert torch.allclose(ensemble.sr, plain.sr, atol=1e-6)
    # the kernel is not symmetric: equal only if each is mapped back with its image
    assert not torch.allclose(plain.kernel, plain.kernel.flip(-1), atol=1e-3)
    assert torch.allclose(ensemble.kernel, plain.kernel, atol=1e-6)


def test_given_kernels_are_transformed_on_the_way_in():
    lr = torch.rand(1, 3, 7, 7)
    k = torch.rand(1, 7, 7)
    out = self_ensemble(KernelFromImage(), lr, stage_kernels=[k])
    assert torch.allclose(out.kernel, k, atol=1e-6)


def test_bicubic_kxnet_is_equivariant_and_a_trained_shape_one_is_not():
    lr = torch.rand(1, 3, 12, 10)
    bicubic = KXNet(2, 0, kernel_size=11).eval()
    with torch.inference_mode():
        assert torch.allclose(SelfEnsemble(bicubic)(lr).sr, bicubic(lr).sr, atol=1e-6)
        net = KXNet(2, 1, kernel_size=11).eval()
        plain, ensemble = net(lr), SelfEnsemble(net)(lr)
    assert ensemble.sr.shape == plain.sr.shape
    assert (ensemble.sr - plain.sr).abs().max() > 1e-3
    assert not torch.allclose(ensemble.kernel, plain.kernel, atol=1e-5)
    assert torch.allclose(ensemble.kernel.sum((-2, -1)), torch.ones(1))


def test_self_ensemble_keeps_the_networks_properties():
    net = KXNet(3, 2, kernel_size=15)
    wrapped = SelfEnsemble(net)
    assert (wrapped.scale, wrapped.kernel_size, wrapped.num_stages) == (3, 15, 2)
    assert wrapped.paper_parameter_count() == net.paper_parameter_count()
