import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kxnet import metrics
from kxnet.train import metrics as averages


def _ref_prepare(x, crop, y_channel):
    """Independent numpy reference: 8-bit RGB, MATLAB Y, border crop (C×H×W arrays)."""
    q = np.round(np.clip(x.astype(np.float64), 0.0, 1.0) * 255.0)
    if y_channel:
        r, g, b = q / 255.0
        q = (16.0 + 65.481 * r + 128.553 * g + 24.966 * b)[None]
    h, w = q.shape[1:]
    return q[:, crop : h - crop, crop : w - crop]


def _ref_psnr(sr, hr, crop, y_channel):
    a, b = _ref_prepare(sr, crop, y_channel), _ref_prepare(hr, crop, y_channel)
    return 10.0 * np.log10(255.0**2 / np.mean((a - b) ** 2))


def _valid_conv(img, window):
    """2-D valid correlation by sliding sums over the window's taps."""
    n = window.shape[0]
    h, w = img.shape[0] - n + 1, img.shape[1] - n + 1
    out = np.zeros((h, w))
    for u in range(n):
        for v in range(n):
            out += window[u, v] * img[u : u + h, v : v + w]
    return out


def _ref_ssim(sr, hr, crop, y_channel):
    a, b = _ref_prepare(sr, crop, y_channel), _ref_prepare(hr, crop, y_channel)
    x = np.arange(11) - 5.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for ca, cb in zip(a, b, strict=True):
        mu_a, mu_b = _valid_conv(ca, window), _valid_conv(cb, window)
        var_a = _valid_conv(ca * ca, window) - mu_a**2
        var_b = _valid_conv(cb * cb, window) - mu_b**2
        cov = _valid_conv(ca * cb, window) - mu_a * mu_b
        num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
        den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        scores.append(np.mean(num / den))
    return float(np.mean(scores))


def _pair(batch=2, h=40, w=52, noise=0.05, seed=0):
    """Structured HR (smooth gradients + texture) in 8 bit and a degraded, out-of-range SR."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, yy, (xx + yy) / 2]).expand(batch, -1, -1, -1)
    hr = (base + 0.3 * torch.rand(batch, 3, h, w, generator=g)).clamp(0, 1)
    hr = torch.round(hr * 255) / 255
    sr = hr + noise * torch.randn(batch, 3, h, w, generator=g) + 0.02
    return sr, hr


@pytest.mark.parametrize("y_channel", [True, False])
@pytest.mark.parametrize("crop", [0, 2, 4])
def test_psnr_and_ssim_match_numpy_reference(crop, y_channel):
    sr, hr = _pair()
    assert sr.min() < 0 or sr.max() > 1  # clamping is exercised
    p = metrics.psnr(sr, hr, crop, y_channel)
    s = metrics.ssim(sr, hr, crop, y_channel)
    assert p.shape == s.shape == (2,) and p.dtype == s.dtype == torch.float64
    for i in range(2):
        a, b = sr[i].numpy(), hr[i].numpy()
        assert p[i].item() == pytest.approx(_ref_psnr(a, b, crop, y_channel), abs=1e-9)
        assert s[i].item() == pytest.approx(_ref_ssim(a, b, crop, y_channel), abs=1e-9)
    both = metrics.psnr_ssim(sr, hr, crop, y_channel)
    torch.testing.assert_close(both[0], p, rtol=0, atol=1e-12)
    torch.testing.assert_close(both[1], s, rtol=0, atol=1e-12)


def test_ssim_of_images_taller_than_one_filter_strip_matches_reference():
    sr, hr = _pair(batch=1, h=150, w=30)
    expected = _ref_ssim(sr[0].numpy(), hr[0].numpy(), 3, True)
    assert metrics.ssim(sr, hr, 3).item() == pytest.approx(expected, abs=1e-9)


def test_rgb_and_y_differ_and_ssim_orders_by_quality():
    sr_good, hr = _pair(noise=0.01)
    sr_bad, _ = _pair(noise=0.1)
    assert metrics.psnr(sr_good, hr, 2, True)[0] != metrics.psnr(sr_good, hr, 2, False)[0]
    assert (metrics.ssim(sr_good, hr, 2) > metrics.ssim(sr_bad, hr, 2)).all()
    assert (metrics.psnr(sr_good, hr, 2) > metrics.psnr(sr_bad, hr, 2)).all()


def test_metrics_quantise_to_8_bit_first():
    _, hr = _pair(noise=0.0)
    sr = hr + 0.4 / 255  # rounds back to hr
    assert torch.isinf(metrics.psnr(sr, hr, 2)).all()
    torch.testing.assert_close(metrics.ssim(sr, hr, 2), torch.ones(2, dtype=torch.float64))
    sr = hr + 0.6 / 255  # one level up wherever hr < 255
    assert torch.isfinite(metrics.psnr(sr, hr, 2)).all()


def test_y_is_matlab_bt601_and_not_rounded():
    rgb = torch.tensor([[[[255.0]], [[0.0]], [[0.0]]], [[[1.0]], [[2.0]], [[3.0]]]])
    y = metrics.rgb_to_y(rgb.double())
    assert y.shape == (2, 1, 1, 1)
    assert y[0].item() == pytest.approx(16 + 65.481)
    assert y[1].item() == pytest.approx(16 + (65.481 * 1 + 128.553 * 2 + 24.966 * 3) / 255)


def test_bad_inputs_raise_clear_errors():
    sr, hr = _pair()
    with pytest.raises(ValueError, match="one shape"):
        metrics.psnr(sr, hr[..., :-1], 2)
    with pytest.raises(ValueError, match="too small"):
        metrics.ssim(sr[..., :20, :20], hr[..., :20, :20], 5)
    with pytest.raises(ValueError, match="crop"):
        metrics.psnr(sr, hr, -1)


def test_metric_classes_average_per_image_values_not_pooled_mse():
    sr1, hr1 = _pair(batch=2, noise=0.01, seed=1)
    sr2, hr2 = _pair(batch=3, noise=0.2, seed=2)
    per_image = torch.cat([metrics.psnr(sr1, hr1, 2), metrics.psnr(sr2, hr2, 2)])
    m = averages.PSNR(crop=2)
    m.update(sr1, hr1)
    m.update(sr2, hr2)
    assert m.compute().item() == pytest.approx(per_image.mean().item(), abs=1e-12)
    pooled = 10 * math.log10(255**2 / (10 ** (-per_image / 10) * 255**2).mean().item())
    assert abs(m.compute().item() - pooled) > 0.5
    s = averages.SSIM(crop=2, y_channel=False)
    s.update(sr1, hr1)
    s.update(sr2, hr2)
    per_image = torch.cat([metrics.ssim(sr1, hr1, 2, False), metrics.ssim(sr2, hr2, 2, False)])
    assert s.compute().item() == pytest.approx(per_image.mean().item(), abs=1e-12)


def test_kernel_error_and_classes():
    true = torch.zeros(2, 5, 5)
    true[:, 2, 2] = 1.0
    est = true.clone()
    est[0, 2, 2], est[0, 2, 3] = 0.9, 0.1
    est[1, 2, 2], est[1, 1, 2] = 0.5, 0.5
    err = metrics.kernel_error(est, true)
    torch.testing.assert_close(err["l1"], torch.tensor([0.2 / 25, 1.0 / 25], dtype=torch.float64))
    expected = [10 * math.log10(1 / (0.02 / 25)), 10 * math.log10(1 / (0.5 / 25))]
    torch.testing.assert_close(err["psnr"], torch.tensor(expected, dtype=torch.float64))
    l1, kp = averages.KernelL1(), averages.KernelPSNR()
    for i in range(2):
        l1.update(est[i : i + 1], true[i : i + 1])
        kp.update(est[i : i + 1], true[i : i + 1])
    assert l1.compute().item() == pytest.approx(err["l1"].mean().item())
    assert kp.compute().item() == pytest.approx(err["psnr"].mean().item())
    with pytest.raises(ValueError, match="B×p×p"):
        metrics.kernel_error(est, true[:, :3, :3])


def _ddp_worker(rank, world_size, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        sr, hr = _pair(batch=1 + 2 * rank, noise=0.03 * (rank + 1), seed=10 + rank)
        p, s = averages.PSNR(crop=2), averages.SSIM(crop=2)
        p.update(sr, hr)
        s.update(sr, hr)
        values = torch.stack([p.compute(), s.compute()])
        if rank == 0:
            torch.save(values, out_file)
    finally:
        dist.destroy_process_group()


def test_metrics_reduce_across_two_ddp_processes(tmp_path):
    out = tmp_path / "values.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    reduced = torch.load(out)
    sr0, hr0 = _pair(batch=1, noise=0.03, seed=10)
    sr1, hr1 = _pair(batch=3, noise=0.06, seed=11)
    psnr_all = torch.cat([metrics.psnr(sr0, hr0, 2), metrics.psnr(sr1, hr1, 2)])
    ssim_all = torch.cat([metrics.ssim(sr0, hr0, 2), metrics.ssim(sr1, hr1, 2)])
    assert reduced[0].item() == pytest.approx(psnr_all.mean().item(), abs=1e-10)
    assert reduced[1].item() == pytest.approx(ssim_all.mean().item(), abs=1e-10)
    assert reduced[0].item() != pytest.approx(metrics.psnr(sr0, hr0, 2).item(), abs=1e-3)


def test_quantize_leaves_its_input_alone():
    x = torch.tensor([[-0.5, 0.25, 1.5]], dtype=torch.float64).view(1, 1, 1, 3)
    before = x.clone()
    assert metrics.quantize(x).flatten().tolist() == [0.0, 64.0, 255.0]
    assert torch.equal(x, before)


def test_metrics_refuse_what_they_cannot_measure_in_one_line():
    grey = torch.full((1, 1, 16, 16), 0.5)
    with pytest.raises(ValueError, match=r"^metrics need two B×3×H×W images of one shape"):
        metrics.psnr(grey, grey, 0)
    with pytest.raises(ValueError, match=r"^metrics need two B×3×H×W images of one shape"):
        metrics.psnr(torch.rand(3, 16, 16), torch.rand(3, 16, 16), 0)
    wide = torch.rand(1, 3, 14, 30)
    message = r"^image of 14×30 is too small to measure with crop 2 \(needs at least 11 pixels"
    with pytest.raises(ValueError, match=message):
        metrics.ssim(wide, wide, 2)
    # exactly the window left (11 rows) is measured; PSNR needs one pixel
    tall = torch.rand(1, 3, 15, 15)
    assert metrics.ssim(tall, tall, 2).item() == pytest.approx(1.0)
    assert metrics.psnr(tall[..., :3, :3], tall[..., :3, :3] * 0.5, 1).isfinite().all()
