import math

import pytest
import torch

from kxnet import description, kernels


def _moments(k):
    """Centre of mass (x, y) and covariance of B×p×p kernels in the (x=column, y=row) frame."""
    p = k.shape[-1]
    axis = torch.arange(p, dtype=k.dtype)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    mx = (k * xx).sum((1, 2))
    my = (k * yy).sum((1, 2))
    dx, dy = xx - mx[:, None, None], yy - my[:, None, None]
    cov = torch.stack(
        [
            torch.stack([(k * dx * dx).sum((1, 2)), (k * dx * dy).sum((1, 2))], -1),
            torch.stack([(k * dx * dy).sum((1, 2)), (k * dy * dy).sum((1, 2))], -1),
        ],
        -2,
    )
    return mx, my, cov


def _check_valid(k, p):
    assert k.shape[-2:] == (p, p)
    assert (k >= 0).all()
    torch.testing.assert_close(k.sum((1, 2)), torch.ones(len(k), dtype=k.dtype))
    mx, my, _ = _moments(k)
    torch.testing.assert_close(mx, torch.full_like(mx, p // 2))
    torch.testing.assert_close(my, torch.full_like(my, p // 2))


@pytest.mark.parametrize("p", [11, 15, 21])
def test_random_kernels_are_valid(p):
    g = torch.Generator().manual_seed(3)
    iso, sigma = kernels.random_isotropic(16, p, (0.2, 4.0), g)
    _check_valid(iso, p)
    assert ((sigma >= 0.2) & (sigma <= 4.0)).all()
    aniso, params = kernels.random_anisotropic(16, p, (0.6, 5.0), g)
    _check_valid(aniso, p)
    assert params.shape == (16, 3)
    assert (params[:, 2].abs() <= math.pi).all()


def test_rotated_covariance():
    sx = torch.tensor([1.0, 1.5, 0.8], dtype=torch.float64)
    sy = torch.tensor([2.0, 0.7, 1.6], dtype=torch.float64)
    theta = torch.tensor([0.3, -1.2, 2.5], dtype=torch.float64)
    k = kernels.anisotropic_gaussian(sx, sy, theta, 41)  # wide grid: negligible truncation
    _, _, cov = _moments(k)
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    expected = rot @ torch.diag_embed(torch.stack([sx**2, sy**2], -1)) @ rot.transpose(1, 2)
    # the sampled Gaussian's discrete variance deviates from σ² by ~1e-4 relative for σ < 1
    torch.testing.assert_close(cov, expected, atol=1e-3, rtol=1e-3)


def test_isotropic_is_anisotropic_with_equal_widths():
    sigma = torch.tensor([0.7, 2.2])
    torch.testing.assert_close(
        kernels.isotropic_gaussian(sigma, 15),
        kernels.anisotropic_gaussian(sigma, sigma, torch.tensor([0.4, -2.0]), 15),
    )


def test_same_seed_same_kernels_other_seed_other_kernels():
    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return kernels.random_anisotropic(4, 11, (0.6, 5.0), g)[0]

    torch.testing.assert_close(draw(5), draw(5))
    assert not torch.allclose(draw(5), draw(6))


def test_dtype_and_device_follow_the_request():
    k, sigma = kernels.random_isotropic(2, 11, (1, 2), dtype=torch.float64, device="cpu")
    assert k.dtype == sigma.dtype == torch.float64
    k, _ = kernels.random_anisotropic(2, 11, (1, 2), dtype=torch.float32)
    assert k.dtype == torch.float32


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_test_banks(scale):
    iso, iso_params = kernels.test_bank("iso", scale)
    lo, hi = {2: (0.8, 1.6), 3: (1.35, 2.40), 4: (1.8, 3.2)}[scale]
    assert iso.shape == (8, 21, 21)
    assert [p["sigma"] for p in iso_params] == pytest.approx(torch.linspace(lo, hi, 8).tolist())
    _check_valid(iso, 21)
    aniso, aniso_params = kernels.test_bank("aniso", scale)
    p = {2: 11, 3: 15, 4: 21}[scale]
    assert aniso.shape == (8, p, p)
    _check_valid(aniso, p)
    combos = {(q["sigma_x"], q["sigma_y"], q["theta_deg"]) for q in aniso_params}
    assert combos == {(a, b, t) for a, b in [(0.8, 1.6), (2.0, 4.0)] for t in (0, 45, 90, 135)}
    # θ = 90° swaps the axes of θ = 0°
    torch.testing.assert_close(aniso[2], aniso[0].T)


@pytest.mark.parametrize("setting,p", [("iso", 21), ("aniso", 11), ("aniso", 15), ("aniso", 21)])
def test_auxiliary_banks(setting, p):
    bank = kernels.auxiliary_bank(setting, p)
    assert bank.shape == (24, p, p)
    _check_valid(bank.double(), p)
    assert len({tuple(b.flatten().tolist()) for b in bank}) == 24


def test_per_scale_values_and_errors():
    assert [description.kernel_size("aniso", s) for s in (2, 3, 4)] == [11, 15, 21]
    assert [description.kernel_size("iso", s) for s in (2, 3, 4)] == [21, 21, 21]
    assert description.train_sigma_range("iso", 3) == (0.2, 3.0)
    assert description.train_sigma_range("aniso", 2) == (0.6, 5.0)
    with pytest.raises(ValueError, match="setting"):
        description.kernel_size("gauss", 2)
    with pytest.raises(ValueError, match="scale"):
        description.kernel_size("iso", 5)
    with pytest.raises(ValueError, match="odd"):
        kernels.isotropic_gaussian(torch.tensor([1.0]), 10)


def test_float64_widths_give_float64_kernels_and_integers_float32():
    k = kernels.isotropic_gaussian(torch.tensor([1.0], dtype=torch.float64), 7)
    assert k.dtype == torch.float64
    assert kernels.isotropic_gaussian(torch.tensor([2]), 7).dtype == torch.float32
    a = kernels.anisotropic_gaussian(torch.tensor([1.0], dtype=torch.float64), [2.0], [0.3], 7)
    assert a.dtype == torch.float64
    assert kernels.anisotropic_gaussian(torch.tensor([2]), [3], [0], 7).dtype == torch.float32
    # Python numbers for σy and θ take σx's dtype: 0.3 is not rounded to float32
    exact = kernels.anisotropic_gaussian(
        torch.tensor([1.0], dtype=torch.float64),
        torch.tensor([2.0], dtype=torch.float64),
        torch.tensor([0.3], dtype=torch.float64),
        7,
    )
    assert torch.equal(a, exact)
    _, params = kernels.random_anisotropic(3, 7, (1, 2), dtype=torch.float64)
    assert params.dtype == torch.float64


def test_random_kernels_are_the_gaussians_of_their_drawn_parameters():
    generator = torch.Generator().manual_seed(0)
    k, params = kernels.random_anisotropic(2000, 11, (0.6, 5.0), generator)
    sx, sy, theta = params.unbind(1)
    torch.testing.assert_close(k[:4], kernels.anisotropic_gaussian(sx[:4], sy[:4], theta[:4], 11))
    for values, (low, high) in ((sx, (0.6, 5.0)), (sy, (0.6, 5.0)), (theta, (-math.pi, math.pi))):
        assert low <= values.min() < low + 0.05 * (high - low)
        assert high - 0.05 * (high - low) < values.max() <= high
    first, again = (
        kernels.random_isotropic(5, 11, (0.2, 2.0), torch.Generator().manual_seed(1))[1]
        for _ in range(2)
    )
    assert torch.equal(first, again)
    k, sigma = kernels.random_isotropic(500, 11, (1.5, 1.5), generator)
    assert torch.equal(sigma, torch.full((500,), 1.5))
    with pytest.raises(ValueError, match=r"^empty range \[2, 1\]$"):
        kernels.random_isotropic(2, 11, (2, 1))


def test_gaussian8_labels_are_the_widths_to_six_digits():
    _, params = kernels.test_bank("iso", 2)
    assert [p["sigma"] for p in params] == [
        0.8,
        0.914286,
        1.028571,
        1.142857,
        1.257143,
        1.371429,
        1.485714,
        1.6,
    ]
    bank, _ = kernels.test_bank("aniso", 2, dtype=torch.float32)
    assert bank.dtype == torch.float32
    assert kernels.test_bank("iso", 3, dtype=torch.float32)[0].dtype == torch.float32


def test_auxiliary_banks_are_the_authors_initial_kernels():
    iso = kernels.auxiliary_bank("iso", 21, dtype=torch.float64)
    widths = torch.linspace(0.2, 4.0, 24, dtype=torch.float64)
    torch.testing.assert_close(iso, kernels.isotropic_gaussian(widths, 21))
    aniso = kernels.auxiliary_bank("aniso", 15, dtype=torch.float64)
    combos = [(a, b, t) for a in (1.0, 2.5, 4.0) for b in (3.5, 5.0) for t in (0, 45, 90, 135)]
    sx, sy, deg = (torch.tensor(c, dtype=torch.float64) for c in zip(*combos, strict=True))
    torch.testing.assert_close(aniso, kernels.anisotropic_gaussian(sx, sy, torch.deg2rad(deg), 15))
    assert kernels.auxiliary_bank("iso", 11).dtype == torch.float32
    with pytest.raises(ValueError, match=r"^setting must be one of \('iso', 'aniso'\), got 'x'$"):
        kernels.auxiliary_bank("x", 11)
