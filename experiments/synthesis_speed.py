"""Time the training degradations and compare their blur and kernels with kornia's.

    python experiments/synthesis_speed.py --setting aniso --scale 4 --batch 12 --lr-patch 64
        [--threads N]

Prints the time per batch of the paper's :class:`kxnet.data.synthesis.Degradation`, of its parts,
and of the kornia alternatives (``kornia.filters.filter2d`` with per-sample kernels, reflect
border, then the s-fold subsampling; ``kornia.filters.get_gaussian_kernel2d`` for isotropic
kernels), with the largest difference from ours; then the realistic degradation of the shipped
preset (``data/degradation=realistic``) and what each of its operators adds, applied to every
sample. Medians of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import kornia
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kxnet import description, kernels, physics
from kxnet.config import project_root
from kxnet.data.realistic import OPERATORS, realistic_degradation
from kxnet.data.synthesis import paper_degradation, step_generator


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
    parser.add_argument("--setting", default="aniso", choices=description.SETTINGS)
    parser.add_argument("--scale", type=int, default=4, choices=(2, 3, 4))
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--lr-patch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    s, size = args.scale, args.lr_patch * args.scale
    hr = torch.rand(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    hr = hr.to(device)
    degradation = paper_degradation(args.setting, s)
    p = degradation.kernel_size
    gen = step_generator(0, 0, 0, device)
    k, _ = degradation.blur.sample_kernels(args.batch, gen, device, torch.float32)
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
        lambda: degradation.blur.sample_kernels(args.batch, gen, device, torch.float32),
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

    _realistic(args, hr, device)


def _realistic(args, hr: torch.Tensor, device: torch.device) -> None:
    """The shipped realistic preset, then each of its operators alone on every sample."""
    preset = OmegaConf.load(project_root() / "conf/train/data/degradation/realistic.yaml")
    preset.setting, preset.scale = args.setting, args.scale
    preset.kernel_size = description.kernel_size(args.setting, args.scale)
    preset.sigma_range = list(description.train_sigma_range(args.setting, args.scale))
    realistic = instantiate(preset, _convert_="all")
    blur_only = realistic_degradation(args.setting, args.scale)

    def seconds(degradation) -> float:
        return _median_seconds(
            lambda: degradation(hr, step_generator(0, 0, 1, device)), args.repeats, device
        )

    base = seconds(blur_only)
    print(f"realistic preset (data/degradation=realistic) {1e3 * seconds(realistic):8.2f} ms/batch")
    print(f"  blur+downsample, clamp, 8 bit              {1e3 * base:8.2f} ms/batch")
    first = OmegaConf.to_container(preset.first_round)
    for name in OPERATORS:
        alone = realistic_degradation(
            args.setting, args.scale, first_round={name: first[name] | {"p": 1.0}}
        )
        print(f"  + {name:<41} {1e3 * (seconds(alone) - base):8.2f} ms/batch")


if __name__ == "__main__":
    main()
