"""A network on single images, stage by stage and across blur kernels (paper §5.3, Fig. 5).

- :func:`stage_metrics`: PSNR/SSIM-Y of X⁽ᵗ⁾ and the error of K⁽ᵗ⁾ at every stage t (Fig. 5a);
- :func:`kernel_sweep`: PSNR/SSIM-Y of several methods on images degraded by each kernel of a
  sweep of widths and shapes (Fig. 5b), summarised by :func:`sweep_summary`;
- :func:`load_hr_images`, :func:`gaussian_kernel`, :func:`degrade_image`: the test data, made
  as the benchmark test sets are (reflect-padded blur, s-fold downsampling, AWGN,
  8-bit LR);
- :func:`stages_markdown`, :func:`sweep_markdown`: the results as markdown tables.

A kernel is described by its parameters, ``{"sigma": σ}`` (isotropic) or ``{"sigma_x": σx,
"sigma_y": σy, "theta_deg": θ}`` (anisotropic), the records of :func:`kxnet.kernels.test_bank`.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from kxnet import description, kernels, metrics
from kxnet.data.benchmarks import degrade, mod_crop, noise_seed
from kxnet.data.images import list_images, read_image
from kxnet.nn import KXNet, KXNetOutput

__all__ = [
    "Method",
    "gaussian_kernel",
    "kernel_label",
    "test_kernel",
    "robustness_kernels",
    "load_hr_images",
    "degrade_image",
    "stage_metrics",
    "kernel_sweep",
    "sweep_summary",
    "markdown_table",
    "stages_markdown",
    "sweep_markdown",
]

_SWEEP_SEED_NAME = "kernel-sweep"


@dataclass
class Method:
    """A table column: ``model`` run blind, or with the true kernel given to X-net."""

    name: str
    model: KXNet
    true_kernel: bool = False


def gaussian_kernel(params: Mapping[str, float], p: int) -> Tensor:
    """The p×p kernel (float32) of ``{"sigma"}`` or ``{"sigma_x", "sigma_y", "theta_deg"}``."""
    if "sigma" in params:
        return kernels.isotropic_gaussian(torch.tensor([float(params["sigma"])]), p)[0].float()
    try:
        sx, sy, deg = (float(params[k]) for k in ("sigma_x", "sigma_y", "theta_deg"))
    except KeyError as err:
        raise ValueError(
            f"kernel parameters {dict(params)} name neither sigma nor sigma_x, sigma_y, theta_deg"
        ) from err
    theta = torch.tensor([math.radians(deg)], dtype=torch.float64)
    k = kernels.anisotropic_gaussian(torch.tensor([sx], dtype=torch.float64), sy, theta, p)
    return k[0].float()


def kernel_label(params: Mapping[str, float]) -> str:
    """A short name, three significant digits: ``σ=1.37`` or ``σ=(2, 4) θ=45°``."""
    if "sigma" in params:
        return f"σ={params['sigma']:.3g}"
    return f"σ=({params['sigma_x']:.3g}, {params['sigma_y']:.3g}) θ={params['theta_deg']:.3g}°"


def test_kernel(setting: str, scale: int, index: int, p: int) -> tuple[dict, Tensor]:
    """Kernel ``index`` of the setting's test bank (:func:`kxnet.kernels.test_bank`) built
    p×p: (its parameters, p×p float32)."""
    _, params = kernels.test_bank(setting, scale)
    if not 0 <= index < len(params):
        raise ValueError(
            f"test kernel index {index} is out of range: setting {setting} x{scale} has kernels "
            f"0 … {len(params) - 1}"
        )
    return params[index], gaussian_kernel(params[index], p)


def robustness_kernels(setting: str, scale: int) -> list[dict]:
    """Eight kernels of growing width (and, in Setting 2, anisotropy) within the setting's
    training range, for a Fig. 5b sweep.

    Setting 1: σ evenly spaced from 0.5 to the top of the range (2.0 / 3.0 / 4.0 for x2 / x3 /
    x4). Setting 2: three isotropic widths, then rotated kernels of growing elongation.
    """
    _, high = description.train_sigma_range(setting, scale)
    if setting == "iso":
        return [{"sigma": round(float(s), 3)} for s in torch.linspace(0.5, high, 8)]
    shapes = [
        (1.0, 1.0, 0.0),
        (2.5, 2.5, 0.0),
        (4.0, 4.0, 0.0),
        (1.0, 2.0, 0.0),
        (1.0, 3.0, 45.0),
        (2.0, 4.0, 90.0),
        (1.0, 5.0, 135.0),
        (3.0, 5.0, 45.0),
    ]
    return [{"sigma_x": a, "sigma_y": b, "theta_deg": t} for a, b, t in shapes]


def _centre_crop(image: Tensor, size: int) -> Tensor:
    height, width = image.shape[-2:]
    h, w = min(size, height), min(size, width)
    top, left = (height - h) // 2, (width - w) // 2
    return image[..., top : top + h, left : left + w]


def load_hr_images(
    folder: str | os.PathLike,
    scale: int,
    names: Sequence[str] | None = None,
    count: int | None = None,
    crop: int = 0,
) -> list[tuple[str, Tensor]]:
    """``(file stem, 3×H×W HR image)`` of the images in ``folder``, sorted by name.

    ``names`` picks files by stem (in that order), ``count`` keeps the first ones, ``crop`` > 0
    keeps the centre crop×crop of each; every image is then mod-cropped to a multiple of s.
    """
    files = list_images(folder)
    if names is not None:
        by_stem = {p.stem: p for p in files}
        missing = [n for n in names if n not in by_stem]
        if missing:
            raise FileNotFoundError(
                f"{folder} has no image named {', '.join(missing)}: pick from "
                f"{', '.join(sorted(by_stem))}"
            )
        files = [by_stem[n] for n in names]
    if count is not None:
        files = files[:count]
    if not files:
        raise FileNotFoundError(f"no images picked in {folder} (names={names}, count={count})")
    images = []
    for path in files:
        hr = read_image(path)
        if crop > 0:
            hr = _centre_crop(hr, crop)
        images.append((path.stem, mod_crop(hr, scale).contiguous()))
    return images


def degrade_image(
    hr: Tensor, kernel: Tensor, scale: int, noise: float = 0.0, seeds: Sequence[int] = ()
) -> Tensor:
    """LR images of one HR image as the test sets make them: 3×H×W, K×p×p → K×3×(H/s)×(W/s).

    ``(hr ⊗ k)↓s`` per kernel plus N(0, (noise/255)²) drawn from ``seeds[i]`` for kernel i
    (needed when noise > 0), clamped and quantised to 8 bit; returned as float32 in [0, 1].
    """
    if kernel.dim() == 2:
        kernel = kernel[None]
    if noise > 0 and len(seeds) != kernel.shape[0]:
        raise ValueError(f"noise {noise:g} needs one seed per kernel, got {len(seeds)} seeds")
    seeds = list(seeds) or [0] * kernel.shape[0]
    return degrade(hr, kernel, scale, noise, seeds).float() / 255.0


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@torch.inference_mode()
def stage_metrics(
    output: KXNetOutput, hr: Tensor, true_kernel: Tensor, scale: int
) -> list[dict[str, float | None]]:
    """One row per stage t = 0 … T of one image's output: ``stage``, ``psnr_y``, ``ssim_y`` of
    X⁽ᵗ⁾ against ``hr`` (1×3×H×W or 3×H×W, border ``scale`` cropped), ``kernel_l1`` and
    ``kernel_psnr`` of K⁽ᵗ⁾ against ``true_kernel`` (p×p; None where the error is 0)."""
    if output.sr.shape[0] != 1:
        raise ValueError(f"stage_metrics measures one image, got a batch of {output.sr.shape[0]}")
    hr = hr if hr.dim() == 4 else hr[None]
    true = true_kernel.reshape(1, *true_kernel.shape[-2:])
    rows = []
    for t, (x, k) in enumerate(zip(output.images, output.kernels, strict=True)):
        psnr_y, ssim_y = metrics.psnr_ssim(x, hr, scale)
        error = metrics.kernel_error(k, true.to(k.device))
        rows.append(
            {
                "stage": t,
                "psnr_y": psnr_y.item(),
                "ssim_y": ssim_y.item(),
                "kernel_l1": error["l1"].item(),
                "kernel_psnr": _finite(error["psnr"].item()),
            }
        )
    return rows


@torch.inference_mode()
def kernel_sweep(
    methods: Sequence[Method],
    images: Sequence[tuple[str, Tensor]],
    sweep: Sequence[Mapping[str, float]],
    scale: int,
    kernel_size: int,
    noise: float = 0.0,
    batch_size: int = 8,
    on_image: Callable[[str], None] | None = None,
) -> list[dict]:
    """Every method on every image degraded by every kernel of ``sweep`` (built p×p with
    p = ``kernel_size``); one record per (method, image, kernel): ``method``, ``image``,
    ``kernel_index``, ``kernel`` (its parameters), ``label``, ``psnr_y``, ``ssim_y``.

    ``images`` are ``(name, 3×H×W)`` pairs with H, W multiples of s (:func:`load_hr_images`).
    The LR images of one image run ``batch_size`` kernels at a time; the noise of kernel i of an
    image comes from a seed fixed by (image, i, noise). ``on_image`` is called after each image.
    """
    for m in methods:
        if m.model.scale != scale:
            raise ValueError(f"method {m.name} is a x{m.model.scale} model, the sweep is x{scale}")
        if m.true_kernel and (m.model.num_stages == 0 or m.model.kernel_size != kernel_size):
            raise ValueError(
                f"method {m.name} takes the true kernel, so it needs stages (it has "
                f"{m.model.num_stages}) and kernels of its size {m.model.kernel_size} (the sweep "
                f"makes {kernel_size}×{kernel_size})"
            )
    bank = torch.stack([gaussian_kernel(params, kernel_size) for params in sweep])
    records = []
    for name, hr in images:
        seeds = [noise_seed(_SWEEP_SEED_NAME, name, i, noise) for i in range(len(bank))]
        lr_all = degrade_image(hr, bank, scale, noise, seeds)
        for m in methods:
            model = m.model.eval()
            device = next(model.parameters()).device
            for start in range(0, len(bank), batch_size):
                lr = lr_all[start : start + batch_size].to(device)
                k = bank[start : start + batch_size].to(device)
                sr = model(lr, true_kernel=k if m.true_kernel else None).sr
                target = hr.to(device).expand(len(lr), -1, -1, -1)
                psnr_y, ssim_y = metrics.psnr_ssim(sr, target, scale)
                for j in range(len(lr)):
                    i = start + j
                    records.append(
                        {
                            "method": m.name,
                            "image": name,
                            "kernel_index": i,
                            "kernel": dict(sweep[i]),
                            "label": kernel_label(sweep[i]),
                            "psnr_y": psnr_y[j].item(),
                            "ssim_y": ssim_y[j].item(),
                        }
                    )
        if on_image is not None:
            on_image(name)
    return records


def sweep_summary(records: Sequence[dict]) -> list[dict]:
    """Per kernel (in sweep order): ``kernel_index``, ``label``, ``images`` (count) and the mean
    ``psnr_y`` and ``ssim_y`` of each method, as ``{method: value}``."""
    groups: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["kernel_index"]].append(r)
    rows = []
    for index in sorted(groups):
        group = groups[index]
        by_method: dict[str, list[dict]] = defaultdict(list)
        for r in group:
            by_method[r["method"]].append(r)
        rows.append(
            {
                "kernel_index": index,
                "label": group[0]["label"],
                "images": len({r["image"] for r in group}),
                **{
                    key: {m: sum(r[key] for r in rs) / len(rs) for m, rs in by_method.items()}
                    for key in ("psnr_y", "ssim_y")
                },
            }
        )
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table, right-aligned after the first column."""
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def _fmt(value: float | None, digits: int) -> str:
    return "∞" if value is None else f"{value:.{digits}f}"


def stages_markdown(rows: Sequence[dict]) -> str:
    """:func:`stage_metrics` rows as a table: stage, PSNR-Y, SSIM-Y, kernel L1, kernel PSNR."""
    header = ["Stage", "PSNR-Y (dB)", "SSIM-Y", "kernel L1", "kernel PSNR (dB)"]
    body = [
        [
            str(r["stage"]),
            _fmt(r["psnr_y"], 2),
            _fmt(r["ssim_y"], 4),
            f"{r['kernel_l1']:.2e}",
            _fmt(r["kernel_psnr"], 2),
        ]
        for r in rows
    ]
    return markdown_table(header, body)


def sweep_markdown(summary: Sequence[dict], key: str = "psnr_y", digits: int = 2) -> str:
    """:func:`sweep_summary` as a table: a row per kernel, a column per method, then the mean
    over kernels and the spread (max − min) that measures robustness."""
    methods = list(dict.fromkeys(m for row in summary for m in row[key]))
    header = ["Kernel", *methods]
    body = [[row["label"], *(f"{row[key][m]:.{digits}f}" for m in methods)] for row in summary]
    columns = [[row[key][m] for row in summary] for m in methods]
    body.append(["mean", *(f"{sum(v) / len(v):.{digits}f}" for v in columns)])
    body.append(["spread (max − min)", *(f"{max(v) - min(v):.{digits}f}" for v in columns)])
    return markdown_table(header, body)
