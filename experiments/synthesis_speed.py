"""Time the training degradation and compare its blur and kernels with kornia's.

    python experiments/synthesis_speed.py --setting aniso --scale 4 --batch 12 --lr-patch 64

Prints the time per batch of :class:`kxnet.data.synthesis.Degradation`, of its parts, and of the
kornia alternatives (``kornia.filters.filter2d`` with per-sample kernels, reflect border, then
the s-fold subsampling; ``kornia.filters.get_gaussian_kernel2d`` for isotropic kernels), with the
largest difference from ours. Medians of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import kornia
import torch

from kxnet import kernels, physics
from kxnet.data.synthesis import Degradation, step_generator


def _median_seconds(fn, repeats: int, device: torch.device) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="aniso", choices=kernels.SETTINGS)
    parser.add_argument("--scale", type=int, default=4, choices=(2, 3, 4))
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--lr-patch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    s, size = args.scale, args.lr_patch * args.scale
    hr = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    hr = hr.to(device)
    degradation = Degradation(args.setting, s)
    p = degradation.kernel_size
    gen = step_generator(0, 0, 0, device)
    k, _ = degradation.sample_kernels(args.batch, gen, device, torch.float32)
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, {args.setting} x{s}, "
        f"batch {args.batch}, HR {size}×{size} → LR {args.lr_patch}×{args.lr_patch}, p={p}"
    )

    def ours_blur():
        return physics.blur_downsample(hr, k, s)

    def kornia_blur():
        return kornia.filters.filter2d(hr, k, border_type="reflect")[..., ::s, ::s]

    diff = (ours_blur() - kornia_blur()).abs().max().item()
    t_ours = _median_seconds(ours_blur, args.repeats, device)
    t_kornia = _median_seconds(kornia_blur, args.repeats, device)
    t_full = _median_seconds(
        lambda: degradation(hr, step_generator(0, 0, 1, device)), args.repeats, device
    )
    t_kernels = _median_seconds(
        lambda: degradation.sample_kernels(args.batch, gen, device, torch.float32),
        args.repeats,
        device,
    )
    print(f"Degradation.forward (kernels, blur, noise)   {1e3 * t_full:8.2f} ms/batch")
    print(f"  kernel sampling                            {1e3 * t_kernels:8.2f} ms/batch")
    print(f"  blur+downsample, strided conv (ours)       {1e3 * t_ours:8.2f} ms/batch")
    print(
        f"  blur+downsample, kornia filter2d + [::s]   {1e3 * t_kornia:8.2f} ms/batch  "
        f"(×{t_kornia / t_ours:.1f} ours; max |diff| {diff:.1e})"
    )

    sigma = torch.rand(args.batch, generator=torch.Generator().manual_seed(1)) * 3.8 + 0.2
    sigma = sigma.to(device)
    ours_iso = kernels.isotropic_gaussian(sigma, p)
    kornia_iso = kornia.filters.get_gaussian_kernel2d(p, sigma[:, None].expand(-1, 2))
    t_iso = _median_seconds(lambda: kernels.isotropic_gaussian(sigma, p), args.repeats, device)
    t_kiso = _median_seconds(
        lambda: kornia.filters.get_gaussian_kernel2d(p, sigma[:, None].expand(-1, 2)),
        args.repeats,
        device,
    )
    print(
        f"isotropic kernels: ours {1e3 * t_iso:.3f} ms, kornia get_gaussian_kernel2d "
        f"{1e3 * t_kiso:.3f} ms (max |diff| {(ours_iso - kornia_iso).abs().max().item():.1e}); "
        "kornia has no rotated anisotropic Gaussian"
    )


if __name__ == "__main__":
    main()
