from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from kxnet import KXNet, kernels
from kxnet.predict.tiling import (
    central_crop,
    min_input_size,
    plan_tiles,
    receptive_radius,
    run_tile,
)


def _stage_kernels(model, generator):
    sigma = 0.8 + 2 * torch.rand(model.num_stages, 2, generator=generator, dtype=torch.float64)
    theta = torch.rand(model.num_stages, generator=generator, dtype=torch.float64)
    ks = kernels.anisotropic_gaussian(sigma[:, 0], sigma[:, 1], theta, model.kernel_size)
    return [k.unsqueeze(0) for k in ks]


@pytest.mark.parametrize(
    "scale,setting,stages", [(2, "aniso", 1), (2, "iso", 1), (3, "aniso", 2), (4, "iso", 1)]
)
def test_receptive_radius_bounds_the_dependence_and_is_tight_to_one_pixel(scale, setting, stages):
    model = KXNet(scale, stages, setting=setting).double().eval()
    radius = receptive_radius(scale, model.kernel_size, stages)
    size = 2 * radius + 9
    centre = size // 2
    lr = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    out = model(lr, stage_kernels=_stage_kernels(model, torch.Generator().manual_seed(0))).sr
    block = slice(centre * scale, (centre + 1) * scale)
    out[..., block, block].sum().backward()
    reached = (lr.grad.abs().sum((0, 1)) != 0).nonzero() - centre
    assert reached.abs().max() <= radius
    assert reached.abs().max() >= radius - 1


def test_receptive_radius_formula():
    assert receptive_radius(2, 11, 19) == 2 + 19 * (9 + 2 + 3)
    assert receptive_radius(2, 21, 19) == 2 + 19 * (9 + 5 + 5)
    assert receptive_radius(4, 21, 0) == 2
    assert [min_input_size(2, 21, 1), min_input_size(4, 21, 1), min_input_size(2, 11, 0)] == [
        6,
        3,
        1,
    ]


def test_tiles_partition_the_image_and_respect_the_size():
    rows = plan_tiles(50, 23, size=20, overlap=4)
    covered = torch.zeros(50, 23, dtype=torch.int64)
    for row in rows:
        for tile in row:
            top, left, bottom, right = tile.core
            ctop, cleft, cbottom, cright = tile.context
            covered[top:bottom, left:right] += 1
            assert cbottom - ctop <= 20 and cright - cleft <= 20
            assert ctop == max(0, top - 4) and cbottom == min(50, bottom + 4)
    assert (covered == 1).all()
    assert len(rows) == 5 and len(rows[0]) == 2
    assert [[t.core for t in r] for r in plan_tiles(7, 9, size=10, overlap=4)] == [[(0, 0, 7, 9)]]
    with pytest.raises(ValueError, match="no core"):
        plan_tiles(50, 50, size=8, overlap=4)


def tiled_forward(
    model: KXNet, lr: Tensor, stage_kernels: Sequence[Tensor], size: int, overlap: int
) -> list[Tensor]:
    """X⁽⁰⁾ … X⁽ᵀ⁾ of the whole image (B×3×h·s×w·s each), assembled from tiles in memory."""
    s = model.scale
    batch, channels, height, width = lr.shape
    images = [
        lr.new_empty(batch, channels, height * s, width * s) for _ in range(model.num_stages + 1)
    ]
    for row in plan_tiles(height, width, size, overlap):
        for tile in row:
            top, left, bottom, right = tile.core
            parts = run_tile(model, tile.window(lr), tile, stage_kernels)
            for full, part in zip(images, parts, strict=True):
                full[..., top * s : bottom * s, left * s : right * s] = part
    return images


@pytest.mark.parametrize("scale,setting", [(2, "aniso"), (3, "iso"), (4, "aniso")])
def test_tiled_equals_untiled(scale, setting):
    model = KXNet(scale, 1, setting=setting).eval()
    radius = receptive_radius(scale, model.kernel_size, 1)
    height, width, size = 4 * radius + 12, 4 * radius + 19, 4 * radius + 10
    lr = torch.rand(1, 3, height, width)
    assert [len(row) for row in plan_tiles(height, width, size, radius)] == [2, 2]
    with torch.inference_mode():
        whole = model(lr)
        tiled = tiled_forward(model, lr, whole.kernels[1:], size=size, overlap=radius)
        seams = tiled_forward(model, lr, whole.kernels[1:], size=size - 2 * radius, overlap=0)
    for a, b in zip(whole.images, tiled, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert (seams[-1] - whole.sr).abs().max() > 1e-3


def test_central_crop():
    lr = torch.arange(7 * 10.0).reshape(1, 1, 7, 10)
    assert central_crop(lr, 4)[0, 0, 0, 0] == lr[0, 0, 1, 3]
    assert central_crop(lr, 4).shape[-2:] == (4, 4)
    assert central_crop(lr, 100).shape[-2:] == (7, 10)
