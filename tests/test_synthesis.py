import math

import pytest
import torch
from kornia.augmentation import AugmentationBase2D, ImageSequential, RandomGaussianNoise

from kxnet import description, kernels, physics
from kxnet.data.synthesis import (
    Degradation,
    Quantize,
    SeededBlurDownsample,
    SeededGaussianNoise,
    drawn_parameters,
    paper_degradation,
    step_generator,
    uniform,
)


def _hr(batch, size, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("setting", ["iso", "aniso"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_batch_shapes_and_ranges_for_every_setting_and_scale(setting, scale):
    p = {"iso": 21, "aniso": {2: 11, 3: 15, 4: 21}[scale]}[setting]
    out = paper_degradation(setting, scale)(_hr(3, 16 * scale), step_generator(0, 0, 0, "cpu"))
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
    out = paper_degradation(setting, 2)(_hr(4, 48), draw)
    levels = out["lr"] * 255
    assert torch.equal(levels, levels.round()) and levels.unique().numel() > 50
    raw = paper_degradation(setting, 2, quantize=False)(_hr(4, 48), step_generator(5, 0, 3, "cpu"))
    assert not torch.equal(raw["lr"] * 255, (raw["lr"] * 255).round())
    torch.testing.assert_close(out["lr"], (raw["lr"] * 255).round() / 255, rtol=0, atol=0)
    torch.testing.assert_close(out["kernel"], raw["kernel"], rtol=0, atol=0)


def test_setting2_x4_paper_sizes_lr64_from_hr256_kernels21_noise_up_to_25():
    out = paper_degradation("aniso", 4)(_hr(12, 256), step_generator(3, 0, 7, "cpu"))
    assert out["lr"].shape == (12, 3, 64, 64)
    assert out["kernel"].shape == (12, 21, 21)
    assert 0 <= out["noise"].min() and out["noise"].max() <= 25


def test_noise_std_is_within_5_percent_of_the_drawn_level():
    # A flat image stays flat under any normalised blur, so LR − 0.5 is the noise alone.
    hr = torch.full((32, 3, 256, 256), 0.5)
    out = paper_degradation("aniso", 4, quantize=False)(hr, step_generator(1, 0, 0, "cpu"))
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
    out = paper_degradation("aniso", 4)(_hr(1000, 24), step_generator(2, 0, 0, "cpu"))
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
    out = paper_degradation("iso", 2)(_hr(1000, 24), step_generator(2, 0, 0, "cpu"))
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
    deg = paper_degradation("aniso", 2, kernel_size=15, sigma_range=(1.0, 1.5), noise_max=5.0)
    out = deg(_hr(200, 32), step_generator(0, 0, 0, "cpu"))
    assert out["kernel"].shape[-1] == 15
    assert out["kernel_params"][:, :2].min() >= 1.0 and out["kernel_params"][:, :2].max() <= 1.5
    assert out["noise"].max() <= 5.0
    out = paper_degradation("aniso", 2, noise_max=0.0)(_hr(4, 32), step_generator(0, 0, 0, "cpu"))
    assert (out["noise"] == 0).all()


def test_same_seed_rank_step_repeats_and_any_change_draws_anew():
    deg = paper_degradation("aniso", 3)
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
    deg = paper_degradation("iso", 4)
    hr = _hr(2, 64)
    for step in range(10):
        r0 = deg(hr, step_generator(0, 0, step, "cpu"))["kernel_params"][:, 0]
        r1 = deg(hr, step_generator(0, 1, step, "cpu"))["kernel_params"][:, 0]
        assert not set(r0.tolist()) & set(r1.tolist())


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="setting"):
        paper_degradation("gauss", 2)
    with pytest.raises(ValueError, match="kernel_size"):
        paper_degradation("iso", 2, kernel_size=10)
    with pytest.raises(ValueError, match="noise_max"):
        paper_degradation("aniso", 2, noise_max=-1)
    with pytest.raises(ValueError, match="B×3×H×W"):
        paper_degradation("iso", 2)(torch.rand(3, 32, 32), step_generator(0, 0, 0, "cpu"))


def _todays_pairs(hr, setting, scale, generator):
    """The synthesis as it was before the kornia modules, written out: the draw order (kernels,
    then noise levels, then the noise field), blur, noise, clamp, 8-bit rounding."""
    p = description.kernel_size(setting, scale)
    sigma_range = description.train_sigma_range(setting, scale)
    batch = hr.shape[0]
    if setting == "iso":
        k, sigma = kernels.random_isotropic(batch, p, sigma_range, generator)
        params = torch.stack([sigma, sigma, torch.zeros_like(sigma)], dim=1)
    else:
        k, params = kernels.random_anisotropic(batch, p, sigma_range, generator)
    lr = physics.blur_downsample(hr, k, scale)
    noise = torch.zeros(batch)
    if setting == "aniso":
        noise = 25.0 * torch.rand(batch, generator=generator)
        lr = lr + torch.randn(lr.shape, generator=generator) * (noise / 255.0).view(-1, 1, 1, 1)
    lr = (lr.clamp(0, 1) * 255).round() / 255
    return {"lr": lr, "hr": hr, "kernel": k, "kernel_params": params, "noise": noise}


@pytest.mark.parametrize("setting", ["iso", "aniso"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_paper_mode_gives_todays_pairs_bit_for_bit(setting, scale):
    degradation = paper_degradation(setting, scale)
    for seed, rank, step in ((0, 0, 0), (7, 1, 123)):
        hr = _hr(3, 16 * scale, seed=step)
        ours = degradation(hr, step_generator(seed, rank, step, "cpu"))
        todays = _todays_pairs(hr, setting, scale, step_generator(seed, rank, step, "cpu"))
        assert set(ours) == set(todays)
        for key, value in todays.items():
            assert torch.equal(ours[key], value), (key, seed, rank, step)


@pytest.mark.parametrize("setting", ["iso", "aniso"])
def test_paper_mode_is_kornia_augmentations_that_return_and_replay_their_draw(setting):
    degradation = paper_degradation(setting, 2)
    assert isinstance(degradation, ImageSequential)
    assert isinstance(degradation.blur, AugmentationBase2D)
    if setting == "aniso":
        assert isinstance(degradation[1], RandomGaussianNoise)
    hr = _hr(2, 32)
    out = degradation(hr, step_generator(0, 0, 0, "cpu"))
    draw = degradation._params
    assert [item.name for item in draw] == list(dict(degradation.named_children()))
    assert torch.equal(draw[0].data["kernel"], out["kernel"])
    again = degradation(hr, params=draw)
    assert all(torch.equal(out[key], again[key]) for key in out)


def test_synthesis_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    paper_degradation("aniso", 3)(_hr(2, 48), step_generator(0, 0, 0, "cpu"))
    assert torch.equal(torch.get_rng_state(), state)


def test_a_draw_without_an_explicit_generator_is_refused():
    degradation = paper_degradation("aniso", 2)
    with pytest.raises(ValueError, match="explicit torch.Generator"):
        degradation(_hr(2, 32))
    with pytest.raises(ValueError, match="explicit torch.Generator"):
        degradation.blur(_hr(2, 32))


def test_drawn_parameters_name_every_draw_one_value_per_sample():
    out = paper_degradation("aniso", 2)(_hr(3, 32), step_generator(0, 0, 0, "cpu"))
    drawn = drawn_parameters(out)
    assert set(drawn) == {"kernel_sigma_x", "kernel_sigma_y", "kernel_theta", "noise"}
    assert torch.equal(drawn["kernel_theta"], out["kernel_params"][:, 2])
    assert all(v.shape == (3,) for v in drawn.values())


def test_step_seeds_are_fixed_across_versions():
    """A run resumed by another version of kxnet draws the same batches: the seed of a step is
    the 63-bit little-endian BLAKE2b-8 of "seed/rank/step" (values of this version)."""
    assert step_generator(0, 0, 0, "cpu").initial_seed() == 4808561972376111626
    assert step_generator(7, 1, 123, "cpu").initial_seed() == 1792406130180928637


def test_uniform_fills_its_range():
    u = uniform([4000], (2.0, 3.0), step_generator(0, 0, 0, "cpu"), torch.float64)
    assert u.dtype == torch.float64
    assert 2.0 <= u.min() < 2.01 and 2.99 < u.max() <= 3.0


def test_quantize_clamps_both_ends_then_rounds_to_8_bit():
    y = torch.tensor([-0.3, 0.0, 0.2 / 255, 0.7 / 255, 0.5, 1.0, 1.4]).view(1, 1, 1, 7)
    expected = torch.tensor([0.0, 0.0, 0.0, 1 / 255, 128 / 255, 1.0, 1.0]).view(1, 1, 1, 7)
    torch.testing.assert_close(Quantize()(y), expected, rtol=0, atol=1e-7)
    clamped = torch.tensor([0.0, 0.0, 0.2 / 255, 0.7 / 255, 0.5, 1.0, 1.0]).view(1, 1, 1, 7)
    assert torch.equal(Quantize(quantize=False)(y), clamped)
    assert "quantize=False" in repr(Quantize(0))


def test_a_float64_batch_stays_float64_and_integers_become_float32():
    degradation = paper_degradation("aniso", 2)
    out = degradation(_hr(2, 32).double(), step_generator(0, 0, 0, "cpu"))
    assert all(v.dtype == torch.float64 for v in out.values()), {k: v.dtype for k, v in out.items()}
    clean = paper_degradation("iso", 2)(_hr(2, 32).double(), step_generator(0, 0, 0, "cpu"))
    assert all(v.dtype == torch.float64 for v in clean.values())
    levels = (_hr(2, 32) * 255).round().to(torch.uint8)
    out = degradation(levels, step_generator(0, 0, 0, "cpu"))
    assert all(v.dtype == torch.float32 for v in out.values())


def test_a_non_square_batch_gets_noise_of_the_lr_shape():
    out = paper_degradation("aniso", 2)(torch.rand(2, 3, 24, 40), step_generator(0, 0, 0, "cpu"))
    assert out["lr"].shape == (2, 3, 12, 20)


def test_noise_applied_to_some_samples_only_is_zero_and_absent_elsewhere():
    blur = SeededBlurDownsample("iso", 2, kernel_size=5)
    degradation = Degradation(blur, SeededGaussianNoise((5.0, 5.0), p=0.5), Quantize(False))
    hr = torch.full((400, 3, 8, 8), 0.5)
    out = degradation(hr, step_generator(0, 0, 0, "cpu"))
    applied = out["noise"] > 0
    assert 0.4 < applied.float().mean() < 0.6
    assert torch.equal(out["noise"][applied], torch.full((int(applied.sum()),), 5.0))
    assert (out["noise"][~applied] == 0).all()
    flat = (out["lr"] - 0.5).abs().flatten(1).amax(1)
    assert (flat[~applied] < 1e-6).all() and (flat[applied] > 1e-3).all()


def test_a_degradation_starts_with_its_blur_and_takes_rgb_batches():
    with pytest.raises(ValueError, match="^a Degradation starts with the SeededBlurDownsample"):
        Degradation(Quantize())
    with pytest.raises(ValueError, match="^a Degradation starts with the SeededBlurDownsample"):
        Degradation()
    degradation = paper_degradation("iso", 2)
    draw = step_generator(0, 0, 0, "cpu")
    for shape in [(3, 16, 16), (1, 4, 16, 16)]:
        with pytest.raises(ValueError, match=r"B×3×H×W, got \("):
            degradation(torch.rand(shape), draw)
    with pytest.raises(ValueError, match="^a Degradation draws from an explicit torch.Generator$"):
        degradation.forward_parameters(torch.Size((1, 3, 16, 16)))


def test_ranges_are_checked_with_their_names():
    with pytest.raises(ValueError, match=r"^gaussian_noise sigma must be a range \[a, b\] with 0"):
        SeededGaussianNoise((5.0, 1.0))
    assert SeededGaussianNoise((5.0, 5.0)).sigma == (5.0, 5.0)
    with pytest.raises(ValueError, match=r"^sigma_range must satisfy 0 < low <= high, got \[0"):
        SeededBlurDownsample("iso", 2, sigma_range=(0.0, 1.0))
    assert SeededBlurDownsample("iso", 2, sigma_range=(1.5, 1.5)).sigma_range == (1.5, 1.5)
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer, got -1"):
        SeededBlurDownsample("iso", 2, kernel_size=-1)


def test_a_one_tap_kernel_is_plain_subsampling():
    blur = SeededBlurDownsample("iso", 2, kernel_size=1)
    hr = _hr(2, 16)
    out = Degradation(blur, Quantize(False))(hr, step_generator(0, 0, 0, "cpu"))
    torch.testing.assert_close(out["lr"], hr[..., ::2, ::2])


def test_the_generator_is_named_when_a_module_draws_without_one():
    with pytest.raises(
        ValueError, match="^SeededGaussianNoise draws its parameters from an explicit"
    ):
        SeededGaussianNoise((0.0, 5.0)).forward_parameters(torch.Size((1, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"call forward_parameters\(batch_shape, generator\)"):
        SeededGaussianNoise((0.0, 5.0)).forward_parameters(torch.Size((1, 3, 4, 4)))
