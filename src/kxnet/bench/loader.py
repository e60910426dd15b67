"""How many HR training crops a second the loader delivers, and how many a GPU step needs.

Three forms of one training folder, each read by the training dataset
(:class:`~kxnet.data.hr_dataset.HRImageFolder`) through a DataLoader with worker processes:

- ``png``: PNG files, each crop decoding its whole image (what a folder over 1 GiB gets);
- ``prepared``: the same images prepared (:mod:`kxnet.data.prepared`), each crop reading its
  rows of a memory-mapped array;
- ``cached``: the images decoded once into memory (what a folder under 1 GiB gets).

Without a folder of its own, the benchmark makes one: DIV2K-sized (2040×1356) PNG images
enlarged from the bundled images, and its prepared form, cached under ``.cache/bench``.

What a GPU needs: the paper's x4 configuration (S = 19, batch 12 of LR 64×64) at a step time
measured by ``make bench-gpu`` where one is given, else estimated from the step's FLOPs
(counted here, linear in the batch and in its LR pixels) at a stated GPU throughput.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from kxnet.atomic import atomic_path
from kxnet.bench.measure import count_flops
from kxnet.data.hr_dataset import EpochSampler, HRImageFolder
from kxnet.data.images import list_images
from kxnet.data.prepared import is_prepared, prepare_folder
from kxnet.loss import StageLoss
from kxnet.nn import KXNet

__all__ = ["FORMS", "div2k_like", "crops_per_second", "paper_step_flops", "measure_loader"]

FORMS = ("png", "prepared", "cached")
DIV2K_SIZE = (2040, 1356)
# The paper's x4 training step: S = 19, batch 12, LR 64×64.
PAPER_STEP = {"scale": 4, "stages": 19, "batch": 12, "lr_size": 64}


def div2k_like(folder: Path, count: int, sources_dir: Path) -> Path:
    """``count`` DIV2K-sized PNG images in ``folder`` (made once, from the images of
    ``sources_dir``)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = list_images(sources_dir)
    for k in range(count):
        path = folder / f"{k:04d}.png"
        if path.is_file():
            continue
        with Image.open(sources[k % len(sources)]) as img:
            big = img.convert("RGB").resize(DIV2K_SIZE, Image.Resampling.BICUBIC)
        with atomic_path(path) as tmp:
            big.save(tmp, format="PNG")
    return folder


def crops_per_second(
    dataset: HRImageFolder, batch: int, workers: int, seconds: float, warmup: int = 2
) -> dict[str, float]:
    """HR crops a second through a DataLoader with ``workers`` processes, after ``warmup``
    batches (the workers' start), over at least ``seconds`` and three batches."""
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=EpochSampler(len(dataset), seed=0),
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=True,
    )
    batches = iter(loader)
    for _ in range(warmup):
        next(batches)
    start, count = time.perf_counter(), 0
    while count < 3 or time.perf_counter() - start < seconds:
        next(batches)
        count += 1
    elapsed = time.perf_counter() - start
    return {"crops_per_s": count * batch / elapsed, "batches": count, "seconds": elapsed}


def paper_step_flops() -> float:
    """FLOPs of one training step (forward, Eq. 12 loss, backward) of the paper's x4
    configuration, from two small counted steps: the FLOPs are ``B·(a + b·h·w)`` (K-net's work
    per sample, X-net's per LR pixel)."""
    p = PAPER_STEP
    torch.manual_seed(0)
    model = KXNet(scale=p["scale"], stages=p["stages"], setting="iso").train()
    loss = StageLoss()

    def counted(side: int) -> float:
        lr = torch.rand(1, 3, side, side)
        hr = torch.rand(1, 3, side * p["scale"], side * p["scale"])
        kernel = torch.full((1, model.kernel_size, model.kernel_size), model.kernel_size**-2)

        def step() -> None:
            loss(model(lr), hr, kernel).total.backward()

        return count_flops(step)["total"]

    small, large = counted(8), counted(16)
    per_pixel = (large - small) / (16**2 - 8**2)
    per_sample = small - per_pixel * 8**2
    return p["batch"] * (per_sample + per_pixel * p["lr_size"] ** 2)


def measure_loader(
    folder: str | None,
    cache_dir: Path,
    sources_dir: Path,
    images: int,
    batch: int,
    workers: int,
    seconds: float,
    gpu_step_s: float | None,
    gpu_flops_per_s: float,
) -> dict[str, Any]:
    """Crops a second of every form in :data:`FORMS` and what the paper's GPU step needs; without
    ``folder``, of DIV2K-sized images made from those of ``sources_dir``."""
    torch.set_num_threads(1)  # as in a DataLoader worker; the workers are the parallelism
    source = Path(folder) if folder else div2k_like(cache_dir / "div2k_like", images, sources_dir)
    prepared = cache_dir / f"{source.name}_prepared"
    if not is_prepared(prepared):
        prepare_folder(source, prepared, report=lambda _: None)
    patch = PAPER_STEP["lr_size"] * PAPER_STEP["scale"]
    datasets = {
        "png": HRImageFolder(source, patch, cache_images=False, check="header", repeat=10**4),
        "prepared": HRImageFolder(prepared, patch, check="header", repeat=10**4),
        "cached": HRImageFolder(source, patch, cache_images=True, check="header", repeat=10**4),
    }
    rates = {
        form: crops_per_second(dataset, batch, workers, seconds)
        for form, dataset in datasets.items()
    }
    flops = paper_step_flops()
    step_s, basis = gpu_step_s, "measured by make bench-gpu"
    if step_s is None or not math.isfinite(step_s):
        step_s = flops / gpu_flops_per_s
        basis = f"{flops / 1e12:.2f} TFLOP a step at {gpu_flops_per_s / 1e12:.0f} TFLOP/s"
    return {
        "folder": str(source),
        "images": len(datasets["png"].images),
        "image_bytes": int(np.mean([p.stat().st_size for p in datasets["png"].images])),
        "patch": patch,
        "batch": batch,
        "workers": workers,
        "forms": rates,
        "prepared_vs_png": rates["prepared"]["crops_per_s"] / rates["png"]["crops_per_s"],
        "paper_step_flops": flops,
        "gpu_step_s": step_s,
        "gpu_step_basis": basis,
        "needed_crops_per_s": PAPER_STEP["batch"] / step_s,
    }
