import math

import pytest
import torch

from kxnet import physics
from kxnet.data.synthesis import Degradation, step_generator


def _hr(batch, size, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("setting", ["iso", "aniso"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_batch_shapes_and_ranges_for_every_setting_and_scale(setting, scale):
    p = {"iso": 21, "aniso": {2: 11, 3: 15, 4: 21}[scale]}[setting]
    out = Degradation(setting, scale)(_hr(3, 16 * scale), step_generator(0, 0, 0, "cpu"))
    assert set(out) == {"lr", "hr", "kernel", "kernel_params", "noise"}
    assert out["lr"].shape == (3, 3, 16, 16)
    assert out["hr"].shape == (3, 3, 16 * scale, 16 * scale)
    assert out["kernel"].shape == (3, p, p)
    assert out["kernel_params"].shape == (3, 3)
    assert out["noise"].shape == (3,)
    assert all(v.dtype == torch.float32 for v in out.values())
    assert out["lr"].min() >= 0 and out["lr"].max() <= 1
    torch.testing.assert_close(out["kernel"].sum((1, 2)), torch.ones(3))
    if setting == "iso":
        assert (out["noise"] == 0).all()
        expected = physics.blur_downsample(out["hr"], out["kernel"], scale).clamp(0, 1)
        torch.testing.assert_close(out["lr"], (expected * 255).round() / 255)
    else:
        assert (out["noise"] > 0).all() and (out["noise"] <= 25).all()


@pytest.mark.parametrize("setting", ["iso", "aniso"])
def test_training_lr_is_on_the_8_bit_grid_after_noise_and_clamp(setting):
    draw = step_generator(5, 0, 3, "cpu")
    out = Degradation(setting, 2)(_hr(4, 48), draw)
    levels = out["lr"] * 255
    assert torch.equal(levels, levels.round()) and levels.unique().numel() > 50
    raw = Degradation(setting, 2, quantize=False)(_hr(4, 48), step_generator(5, 0, 3, "cpu"))
    assert not torch.equal(raw["lr"] * 255, (raw["lr"] * 255).round())
    torch.testing.assert_close(out["lr"], (raw["lr"] * 255).round() / 255, rtol=0, atol=0)
    torch.testing.assert_close(out["kernel"], raw["kernel"], rtol=0, atol=0)


def test_setting2_x4_paper_sizes_lr64_from_hr256_kernels21_noise_up_to_25():
    out = Degradation("aniso", 4)(_hr(12, 256), step_generator(3, 0, 7, "cpu"))
    assert out["lr"].shape == (12, 3, 64, 64)
    assert out["kernel"].shape == (12, 21, 21)
    assert 0 <= out["noise"].min() and out["noise"].max() <= 25


def test_noise_std_is_within_5_percent_of_the_drawn_level():
    # A flat image stays flat under any normalised blur, so LR − 0.5 is the noise alone.
    hr = torch.full((32, 3, 256, 256), 0.5)
    out = Degradation("aniso", 4, quantize=False)(hr, step_generator(1, 0, 0, "cpu"))
    std = (out["lr"] - 0.5).flatten(1).std(dim=1) * 255
    ratio = std / out["noise"]
    assert out["noise"].min() < 5 and out["noise"].max() > 20  # the draw spans U[0, 25]
    assert ((ratio - 1).abs() < 0.05).all(), ratio
    assert (out["lr"] - 0.5).mean().abs() < 1e-3


def _kernel_covariance(k):
    p = k.shape[-1]
    axis = torch.arange(p, dtype=k.dtype) - p // 2
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    cxx = (k * xx**2).sum((1, 2))
    cyy = (k * yy**2).sum((1, 2))
    cxy = (k * xx * yy).sum((1, 2))
    return cxx, cyy, cxy


def test_anisotropic_kernel_statistics_match_setting2():
    out = Degradation("aniso", 4)(_hr(1000, 24), step_generator(2, 0, 0, "cpu"))
    sx, sy, theta = out["kernel_params"].double().unbind(1)
    for v, (low, high) in ((sx, (0.6, 5.0)), (sy, (0.6, 5.0)), (theta, (-math.pi, math.pi))):
        assert low <= v.min() and v.max() <= high
        assert abs(v.mean().item() - (low + high) / 2) < 0.06 * (high - low)
        assert abs(v.std().item() - (high - low) / math.sqrt(12)) < 0.06 * (high - low)
    assert (out["kernel"] >= 0).all()
    # Kernels narrow enough not to be truncated by the 21×21 window have covariance R·diag·Rᵀ.
    small = (sx < 2.5) & (sy < 2.5)
    cxx, cyy, cxy = _kernel_covariance(out["kernel"][small].double())
    c, s = torch.cos(theta[small]), torch.sin(theta[small])
    a, b = sx[small] ** 2, sy[small] ** 2
    torch.testing.assert_close(cxx, c**2 * a + s**2 * b, rtol=0.02, atol=0.02)
    torch.testing.assert_close(cyy, s**2 * a + c**2 * b, rtol=0.02, atol=0.02)
    torch.testing.assert_close(cxy, c * s * (a - b), rtol=0.02, atol=0.02)


def test_isotropic_kernel_statistics_match_setting1():
    out = Degradation("iso", 2)(_hr(1000, 24), step_generator(2, 0, 0, "cpu"))
    sx, sy, theta = out["kernel_params"].unbind(1)
    assert torch.equal(sx, sy) and (theta == 0).all()
    assert 0.2 <= sx.min() and sx.max() <= 2.0
    assert abs(sx.mean().item() - 1.1) < 0.05
    # Below σ ≈ 0.8 the sampled Gaussian is narrower than σ; above, its variance is σ².
    wide = sx >= 0.8
    cxx, cyy, cxy = _kernel_covariance(out["kernel"][wide].double())
    torch.testing.assert_close(cxx, sx[wide].double() ** 2, rtol=0.01, atol=0.01)
    torch.testing.assert_close(cyy, cxx)
    assert cxy.abs().max() < 1e-6


def test_custom_ranges_are_honoured():
    deg = Degradation("aniso", 2, kernel_size=15, sigma_range=(1.0, 1.5), noise_max=5.0)
    out = deg(_hr(200, 32), step_generator(0, 0, 0, "cpu"))
    assert out["kernel"].shape[-1] == 15
    assert out["kernel_params"][:, :2].min() >= 1.0 and out["kernel_params"][:, :2].max() <= 1.5
    assert out["noise"].max() <= 5.0
    out = Degradation("aniso", 2, noise_max=0.0)(_hr(4, 32), step_generator(0, 0, 0, "cpu"))
    assert (out["noise"] == 0).all()


def test_same_seed_rank_step_repeats_and_any_change_draws_anew():
    deg = Degradation("aniso", 3)
    hr = _hr(4, 48)
    a = deg(hr, step_generator(5, 0, 10, "cpu"))
    b = deg(hr, step_generator(5, 0, 10, "cpu"))
    for key in a:
        assert torch.equal(a[key], b[key])
    for other in (step_generator(6, 0, 10, "cpu"), step_generator(5, 1, 10, "cpu")):
        c = deg(hr, other)
        assert not torch.allclose(a["kernel"], c["kernel"])
    steps = [deg(hr, step_generator(5, 0, t, "cpu"))["kernel_params"] for t in range(20)]
    assert len({tuple(p.flatten().tolist()) for p in steps}) == 20


def test_two_ranks_draw_distinct_kernels_at_every_step():
    deg = Degradation("iso", 4)
    hr = _hr(2, 64)
    for step in range(10):
        r0 = deg(hr, step_generator(0, 0, step, "cpu"))["kernel_params"][:, 0]
        r1 = deg(hr, step_generator(0, 1, step, "cpu"))["kernel_params"][:, 0]
        assert not set(r0.tolist()) & set(r1.tolist())


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="setting"):
        Degradation("gauss", 2)
    with pytest.raises(ValueError, match="kernel_size"):
        Degradation("iso", 2, kernel_size=10)
    with pytest.raises(ValueError, match="noise_max"):
        Degradation("aniso", 2, noise_max=-1)
    with pytest.raises(ValueError, match="B×3×H×W"):
        Degradation("iso", 2)(torch.rand(3, 32, 32), step_generator(0, 0, 0, "cpu"))
