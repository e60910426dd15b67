"""Deterministic benchmark test sets (each HR image with the setting's 8 test kernels,
:func:`kxnet.kernels.test_bank`, at the paper's noise levels), generated in-process and cached
on disk.

Each HR image of ``<benchmark_dir>/<dataset>/`` is mod-cropped to a multiple of the scale s and
degraded with every kernel of the setting's test bank (Setting 1 "Gaussian8", Setting 2 the
eight rotated kernels), plus AWGN of σ/255 from a seed fixed per (dataset, image, kernel, σ),
clamped to [0, 1] and quantised to 8 bit as if saved to PNG. The LR images are written as PNG
files under ``<cache_dir>/<dataset>/<setting>_x<s>/`` beside a ``manifest.json`` that records the
protocol version, kernel parameters, seed, noise levels and the sha256 of every HR file; a cache
whose manifest or HR files no longer match is regenerated, never used. Every file is written
under a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from kxnet import description, kernels, physics
from kxnet.atomic import atomic_path, atomic_write
from kxnet.data.images import list_images, read_image

__all__ = [
    "DATASETS",
    "PROTOCOL_VERSION",
    "NOISE_SEED",
    "default_noise",
    "mod_crop",
    "noise_seed",
    "degrade",
    "BenchmarkSet",
]

log = logging.getLogger(__name__)

DATASETS = ("Set5", "Set14", "BSD100", "Urban100")
PROTOCOL_VERSION = 1
NOISE_SEED = 2022


def default_noise(setting: str) -> tuple[float, ...]:
    """Noise levels of the paper's tables: (0,) for Setting 1, (0, 15) for Setting 2."""
    return description.test_noise(setting)


def mod_crop(image: Tensor, scale: int) -> Tensor:
    """Crop C×H×W to the largest multiple of ``scale`` on each axis, keeping the upper left."""
    height, width = image.shape[-2:]
    return image[..., : height - height % scale, : width - width % scale]


def noise_seed(dataset: str, image: str, kernel_index: int, noise: float) -> int:
    """The fixed seed of one LR image's noise draw."""
    key = f"{NOISE_SEED}/{dataset}/{image}/{kernel_index}/{float(noise):g}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


def degrade(hr: Tensor, bank: Tensor, scale: int, noise: float, seeds: Sequence[int]) -> Tensor:
    """Test-set LR images of one HR image: 3×H×W, K×p×p → K×3×(H/s)×(W/s) uint8.

    ``(hr ⊗ k)↓s`` for each kernel (as :func:`kxnet.physics.blur_downsample`, run as one
    convolution with the K kernels as output channels, several times faster on a CPU than K
    groups), plus N(0, (noise/255)²) drawn on the CPU from ``seeds[i]`` for kernel i, clamped and
    rounded to 8 bit. Computed in float32.
    """
    physics.check_shapes(hr[None], bank[:1], scale)
    p = bank.shape[-1]
    padded = F.pad(hr.float()[:, None], [p // 2] * 4, mode="reflect")
    lr = F.conv2d(padded, bank.float()[:, None], stride=scale).transpose(0, 1)
    if noise > 0:
        draws = [
            torch.randn(lr.shape[1:], generator=torch.Generator().manual_seed(seed))
            for seed in seeds
        ]
        lr = lr + torch.stack(draws) * (noise / 255.0)
    return torch.round(lr.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _noise_tag(noise: float) -> str:
    return f"n{float(noise):g}"


class BenchmarkSet(Dataset):
    """One benchmark's (image, kernel, noise) items for a setting and scale, from the disk cache.

    Args:
        benchmark_dir: folder holding ``<name>/`` with the HR images.
        name: the dataset, e.g. "Set5" (any sub-folder name works); with ``files``, a label.
        setting: "iso" (Gaussian8) or "aniso" (Setting 2 kernels).
        scale: 2, 3 or 4.
        noise: noise levels σ (0–255 units); ``None`` takes :func:`default_noise`.
        cache_dir: where the LR images and manifest live; missing or stale entries are
            generated on construction.
        files: the HR image files, instead of the images of ``<benchmark_dir>/<name>/`` (a
            validation set: the first DIV2K validation images, or images held out of training).
        one_kernel: degrade image i with kernel i mod 8 only (one item per image and noise
            level, as the authors validate), instead of with every kernel of the bank.

    An item is ``{"lr": 3×h×w (8-bit values), "hr": 3×H×W (mod-cropped), "kernel": p×p,
    "dataset": str, "image": str (file stem), "kernel_index": int, "noise": 0-d tensor}``;
    the default collate at batch size 1 makes it the benchmark batch of the data interface.
    Items run image by image, then noise level, then kernel.
    """

    def __init__(
        self,
        benchmark_dir: str | os.PathLike,
        name: str,
        setting: str,
        scale: int,
        noise: Sequence[float] | None = None,
        cache_dir: str | os.PathLike = ".cache/benchmarks",
        files: Sequence[str | os.PathLike] | None = None,
        one_kernel: bool = False,
    ) -> None:
        self.name, self.setting, self.scale = str(name), str(setting), int(scale)
        self.noise = tuple(
            float(n) for n in (noise if noise is not None else default_noise(setting))
        )
        if any(n < 0 for n in self.noise) or len(set(self.noise)) != len(self.noise):
            raise ValueError(f"noise levels must be distinct and >= 0, got {list(self.noise)}")
        bank, params = kernels.test_bank(self.setting, self.scale)
        self.kernels, self.kernel_params = bank.float(), params
        self.hr_dir = Path(benchmark_dir) / self.name
        if files is not None:
            self.files = [Path(f) for f in files]
        elif not self.hr_dir.is_dir():
            raise FileNotFoundError(
                f"benchmark folder {self.hr_dir} does not exist: put the HR images of "
                f"{self.name} there or set paths.benchmark_dir"
            )
        else:
            self.files = list_images(self.hr_dir)
        if not self.files:
            raise FileNotFoundError(f"benchmark set {self.name} holds no images ({self.hr_dir})")
        stems = [p.stem.casefold() for p in self.files]  # the cached inputs are named by stem
        if len(set(stems)) != len(stems):
            shared = sorted(p.name for p in self.files if stems.count(p.stem.casefold()) > 1)
            raise ValueError(
                f"benchmark set {self.name} has images that share a file stem without regard to "
                f"case ({', '.join(shared[:4])}): rename or remove one of them"
            )
        self.one_kernel = bool(one_kernel)
        self.cache = Path(cache_dir) / self.name / f"{self.setting}_x{self.scale}"
        count = len(bank)
        self.items = [
            (i, n, k)
            for i in range(len(self.files))
            for n in self.noise
            for k in ([i % count] if self.one_kernel else range(count))
        ]
        self._hr = (-1, None)
        self._ensure_cache()

    def __len__(self) -> int:
        return len(self.items)

    def lr_path(self, image: int, kernel_index: int, noise: float) -> Path:
        return self.cache / f"{self.files[image].stem}_k{kernel_index}_{_noise_tag(noise)}.png"

    def _expected_manifest(self, hashes: dict[str, str]) -> dict:
        return {
            "protocol": PROTOCOL_VERSION,
            "dataset": self.name,
            "setting": self.setting,
            "scale": self.scale,
            "kernel_size": int(self.kernels.shape[-1]),
            "kernels": self.kernel_params,
            "noise_seed": NOISE_SEED,
            "quantization": "uint8",
            **({"one_kernel": True} if self.one_kernel else {}),
            "images": hashes,
        }

    def _read_manifest(self) -> dict | None:
        try:
            return json.loads((self.cache / "manifest.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _ensure_cache(self) -> None:
        hashes = {p.name: _sha256(p) for p in self.files}
        expected = self._expected_manifest(hashes)
        manifest = self._read_manifest()
        done: list[float] = []
        if manifest is not None:
            stale = [key for key in expected if manifest.get(key) != expected[key]]
            if stale:
                log.warning(
                    "benchmark cache %s does not match (%s changed): regenerating it",
                    self.cache,
                    ", ".join(stale),
                )
                for old in self.cache.glob("*.png"):
                    old.unlink()
            else:
                done = [float(n) for n in manifest.get("noise", [])]
        missing = [
            n
            for n in self.noise
            if n not in done
            or not all(self.lr_path(i, k, n).is_file() for i, m, k in self.items if m == n)
        ]
        if not missing:
            return
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(
                f"cannot create the benchmark cache {self.cache} ({err}): set paths.cache_dir "
                "to a writable folder"
            ) from err
        log.info(
            "generating %s %s x%d LR images for noise %s in %s",
            self.name,
            self.setting,
            self.scale,
            missing,
            self.cache,
        )
        count = len(self.kernels)
        for i, path in enumerate(self.files):
            hr = mod_crop(read_image(path), self.scale)
            indices = [i % count] if self.one_kernel else list(range(count))
            for n in missing:
                seeds = [noise_seed(self.name, path.stem, k, n) for k in indices]
                lr = degrade(hr, self.kernels[indices], self.scale, n, seeds)
                for k, image in zip(indices, lr.permute(0, 2, 3, 1).numpy(), strict=True):
                    with atomic_path(self.lr_path(i, k, n)) as tmp:
                        Image.fromarray(image).save(tmp, format="PNG", compress_level=1)
        manifest = {**expected, "noise": sorted(set(done) | set(missing))}
        atomic_write(self.cache / "manifest.json", json.dumps(manifest, indent=1))

    def _load_hr(self, image: int) -> Tensor:
        if self._hr[0] != image:
            self._hr = (image, mod_crop(read_image(self.files[image]), self.scale).contiguous())
        return self._hr[1]

    def __getitem__(self, index: int) -> dict:
        image, noise, k = self.items[index]
        return {
            "lr": read_image(self.lr_path(image, k, noise)),
            "hr": self._load_hr(image),
            "kernel": self.kernels[k],
            "dataset": self.name,
            "image": self.files[image].stem,
            "kernel_index": k,
            "noise": torch.tensor(noise),
        }
