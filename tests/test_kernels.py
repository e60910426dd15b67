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
