import pytest
import torch

from kxnet import KXNet, physics
from kxnet.bench import authors


def _inputs(s, p, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 12 * s, 12 * s, generator=g, dtype=torch.float64)
    k = torch.rand(2, p, p, generator=g, dtype=torch.float64)
    r = torch.rand(2, 3, 12, 12, generator=g, dtype=torch.float64)
    return x, k / k.sum((1, 2), keepdim=True), r


@pytest.mark.parametrize("s,p", [(2, 11), (3, 15), (4, 21)])
def test_the_authors_forms_compute_what_ours_compute(s, p):
    x, k, r = _inputs(s, p)
    y = physics.blur_downsample(x, k, s)
    torch.testing.assert_close(authors.repeated_blur_downsample(x, k, s), y)
    torch.testing.assert_close(authors.full_blur_downsample(x, k, s), y)
    torch.testing.assert_close(
        authors.unfold_kernel_gradient(x, r, p, s), physics.kernel_gradient(x, r, p, s)
    )
    torch.testing.assert_close(
        authors.repeated_transpose_upsample(r, k, s), physics.transpose_upsample(r, k, s)
    )
    ones = physics.transpose_ones(k, x.shape[-2:], s)
    theirs = authors.transpose_conv_ones(k, x.shape[-2:], s)
    torch.testing.assert_close(theirs, ones.expand(-1, 3, -1, -1))


def test_the_authors_formulation_is_a_variant_of_the_same_network():
    torch.manual_seed(0)
    model = KXNet(scale=2, stages=2, setting="aniso").double()
    theirs_model = KXNet(scale=2, stages=2, setting="aniso", operators=authors.AUTHORS).double()
    theirs_model.load_state_dict(model.state_dict())
    assert theirs_model.stages[0].knet.operators.kernel_gradient is authors.unfold_kernel_gradient
    lr = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    ours, theirs = model(lr), theirs_model(lr)
    for a, b in zip(ours.images + ours.kernels, theirs.images + theirs.kernels, strict=True):
        torch.testing.assert_close(a, b)
    (g_ours,) = torch.autograd.grad(ours.sr.sum(), model.stages[0].knet.gamma)
    (g_theirs,) = torch.autograd.grad(theirs.sr.sum(), theirs_model.stages[0].knet.gamma)
    torch.testing.assert_close(g_ours, g_theirs)
