from pathlib import Path

import pytest
import torch

from kxnet import kernels, metrics, physics
from kxnet.checkpoint import load_model
from kxnet.config import project_root
from kxnet.data.images import read_image
from kxnet.ensemble import SelfEnsemble
from kxnet.nn.kxnet import KXNet
from kxnet.predict.kernel_map import (
    blend_band,
    kernel_map_picture,
    ramp,
    tiled_kernel_forward,
)
from kxnet.predict.tiling import plan_tiles

DATA = project_root() / "data"
TRAINED = Path(__file__).parent / "fixtures" / "trained_x2_s2_p11.pt"


def test_ramps_of_neighbouring_tiles_sum_to_one():
    length, scale = 100, 2
    tiles = plan_tiles(length, length, 50, 10)[0]
    band = blend_band([tiles], 10)
    assert band == 5
    total = torch.zeros(length * scale, dtype=torch.float64)
    for tile in tiles:
        core, context = (tile.core[1], tile.core[3]), (tile.context[1], tile.context[3])
        start, end = context[0] * scale, context[1] * scale
        weight = ramp(core, context, length, scale, band)
        assert weight.shape == (end - start,)
        total[start:end] += weight
    assert torch.allclose(total, torch.ones_like(total))


def test_a_model_that_ignores_its_kernel_is_not_changed_by_tiling():
    """Bicubic (S = 0) is the same tile by tile: the blend of equal images is the image."""
    model = KXNet(2, 0, kernel_size=11)
    lr = torch.rand(1, 3, 40, 56)
    result = tiled_kernel_forward(model, lr, 24, 6)
    assert result.kernels.shape[:2] == (len(result.tiles), len(result.tiles[0]))
    assert len(result.tiles) > 1 and len(result.tiles[0]) > 1
    assert torch.allclose(result.sr, model(lr).sr, atol=1e-5)


def test_kernel_map_picture_draws_each_kernel_at_its_tile():
    lr = torch.zeros(3, 64, 64)
    tiles = plan_tiles(64, 64, 40, 4)
    k = torch.zeros(2, 2, 5, 5)
    k[0, 1, 2, 2] = 1  # only the top-right tile has a kernel to draw
    picture = kernel_map_picture(lr, k, tiles)
    bright = picture[0] > 0.5
    rows, cols = bright.nonzero().T
    assert picture.shape[0] == 3 and bright.any()
    assert rows.max() < picture.shape[1] // 2 and cols.min() >= picture.shape[2] // 2


@pytest.fixture(scope="module")
def trained() -> KXNet:
    """A small KXNet (x2, S = 2, p = 11) trained for 1000 steps on isotropic blurs: enough to tell
    a sharp kernel from a wide one (``tests/fixtures/make_trained_x2_s2_p11.py`` made it)."""
    return load_model(TRAINED, scale=2, stages=2, kernel_size=11)


def test_tiled_kernels_beat_the_global_kernel_on_two_differently_blurred_halves(trained):
    model = trained
    hr = read_image(DATA / "benchmarks" / "Set14" / "zebra.png")[None, :, :192, :256]
    sigmas = (0.5, 2.2)
    true = [kernels.isotropic_gaussian(torch.tensor([s]), 11) for s in sigmas]
    halves = [physics.blur_downsample(hr, k, 2) for k in true]
    lr = torch.cat([halves[0][..., :64], halves[1][..., 64:]], -1)
    lr = (lr.clamp(0, 1) * 255).round() / 255  # 96×128, halves of 64 columns

    with torch.inference_mode():
        plain = model(lr)
        tiled = tiled_kernel_forward(model, lr, 96, 16)
    assert [[t.core[1] for t in row] for row in tiled.tiles] == [[0, 64]]  # one tile a half
    global_error = [metrics.kernel_error(plain.kernel, k)["l1"].item() for k in true]
    tile_error = [metrics.kernel_error(tiled.kernels[0, i], true[i])["l1"].item() for i in (0, 1)]
    assert all(t < 0.9 * g for t, g in zip(tile_error, global_error, strict=True)), (
        tile_error,
        global_error,
    )
    tiled_psnr = metrics.psnr(tiled.sr, hr, 2).item()
    global_psnr = metrics.psnr(plain.sr, hr, 2).item()
    print(f"kernel L1 tiled {tile_error} global {global_error}, PSNR {tiled_psnr} {global_psnr}")
    assert tiled_psnr > global_psnr + 0.05, (tiled_psnr, global_psnr)


def test_self_ensemble_of_a_trained_model_gains_psnr(trained):
    """A model trained on the degradation's grid: the eight estimates, each moved back onto it,
    average to a better image than the plain one (mapped back without the move, they lose dB)."""
    hr = read_image(DATA / "benchmarks" / "Set14" / "zebra.png")[None, :, :192, :256]
    k = kernels.isotropic_gaussian(torch.tensor([1.2]), 11)
    lr = (physics.blur_downsample(hr, k, 2).clamp(0, 1) * 255).round() / 255
    with torch.inference_mode():
        plain = metrics.psnr(trained(lr).sr, hr, 2).item()
        ensemble = metrics.psnr(SelfEnsemble(trained)(lr).sr, hr, 2).item()
    print(f"zebra x2 σ 1.2: PSNR plain {plain:.2f}, x8 self-ensemble {ensemble:.2f}")
    assert ensemble > plain + 0.1, (ensemble, plain)
