"""A small stand-in for the project's DataModule, with the agreed batch formats: random HR
images in memory, training crops synthesised on the device in ``on_after_batch_transfer``
from a generator seeded by (seed, rank, step), benchmark-style validation and test batches."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from kxnet import kernels, physics


class _Crops(Dataset):
    def __init__(self, images: torch.Tensor, patch: int) -> None:
        self.images, self.patch = images, patch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = self.images[index]
        top, left = (int(torch.randint(0, s - self.patch + 1, ())) for s in image.shape[-2:])
        return {"hr": image[:, top : top + self.patch, left : left + self.patch]}


class _Bench(Dataset):
    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


class ToyDataModule(pl.LightningDataModule):
    def __init__(
        self,
        scale: int,
        setting: str,
        kernel_size: int,
        sigma_range,
        noise_max: float = 0.0,
        patch_size: int = 24,
        batch_size: int = 2,
        train_images: int = 6,
        bench_images: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.scale, self.setting, self.p = scale, setting, kernel_size
        self.sigma_range, self.noise_max = tuple(sigma_range), noise_max
        self.patch, self.batch_size, self.seed = patch_size, batch_size, seed
        g = torch.Generator().manual_seed(1234)
        smooth = torch.nn.functional.avg_pool2d
        images = smooth(torch.rand(train_images + bench_images, 3, 48, 48, generator=g), 3, 1, 1)
        self.train_images = images[:train_images]
        hr = images[train_images:, :, : 12 * scale, : 12 * scale]
        bank, _ = kernels.test_bank(setting, scale, dtype=torch.float32)
        self.bench = []
        for i, image in enumerate(hr):
            k = bank[i % len(bank)]
            lr = physics.blur_downsample(image[None], k[None], scale)[0]
            self.bench.append(
                {
                    "lr": torch.round(lr.clamp(0, 1) * 255) / 255,
                    "hr": image,
                    "kernel": k,
                    "dataset": f"Toy{i % 2}",
                    "image": f"img{i}",
                    "kernel_index": i % len(bank),
                    "noise": torch.tensor(0.0),
                }
            )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Crops(self.train_images, self.patch), self.batch_size, shuffle=True)

    def _bench_loaders(self) -> list[DataLoader]:
        """One loader per benchmark set, as the project's DataModule has."""
        return [DataLoader(_Bench(self.bench[i::2]), batch_size=1) for i in range(2)]

    def val_dataloader(self) -> list[DataLoader]:
        return self._bench_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._bench_loaders()

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if "lr" in batch:
            return batch
        hr = batch["hr"]
        step = self.trainer.global_step
        g = torch.Generator(device=hr.device)
        g.manual_seed((self.seed * 1009 + self.trainer.global_rank) * 1_000_003 + step)
        draw = kernels.random_isotropic if self.setting == "iso" else kernels.random_anisotropic
        k, params = draw(hr.shape[0], self.p, self.sigma_range, generator=g, device=hr.device)
        lr = physics.blur_downsample(hr, k, self.scale)
        noise = torch.rand(hr.shape[0], generator=g, device=hr.device) * self.noise_max
        lr = (
            lr
            + torch.randn(lr.shape, generator=g, device=hr.device)
            * noise[:, None, None, None]
            / 255
        )
        if params.dim() == 1:
            params = torch.stack([params, params, torch.zeros_like(params)], 1)
        return {"lr": lr, "hr": hr, "kernel": k, "kernel_params": params, "noise": noise}
