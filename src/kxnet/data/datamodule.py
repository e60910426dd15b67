"""The LightningDataModule: HR crops for training, degraded on the device; benchmark sets.

Training: DataLoader workers read random HR crops of ``lr_patch_size · scale`` pixels
(:class:`~kxnet.data.hr_dataset.HRImageFolder`); ``on_after_batch_transfer`` turns each batch,
already on the device, into ``{"lr", "hr", "kernel", "kernel_params", "noise"}`` with
:class:`~kxnet.data.synthesis.Degradation` (the paper's, or the ``degradation`` config: the
``data/degradation`` group, ``paper`` or ``realistic``), drawing from a generator seeded by (seed,
rank, training batch index), so ranks never share kernels and a resumed run draws what the
uninterrupted one would have; the training loader's place in its epoch is saved with each
checkpoint (:class:`~kxnet.data.resumable.ResumableDataLoader`), so a run resumed in the middle of
an epoch goes on with the batches the uninterrupted run had. ``batch_size`` is the global batch
(the paper's 12): under DDP each rank loads its share.

Validation is never a test set: the first ``val_images`` images of ``val_dir`` (the DIV2K
validation images, as the authors validate) when that folder holds images, else as many images
held out of the training folder, which training then never draws from; each image is degraded
with one test kernel of the setting (image i with kernel i mod 8) at each noise level, once, and
cached like the benchmark sets. ``val_datasets`` adds benchmark sets to it. Validation and test:
one DataLoader per set (batch size 1, every item once; under DDP each rank takes its own share,
without padding).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler

from kxnet.config import resolve_path
from kxnet.data.benchmarks import DATASETS, BenchmarkSet
from kxnet.data.hr_dataset import EpochSampler, HRImageFolder
from kxnet.data.images import list_images, to_float
from kxnet.data.resumable import ResumableDataLoader
from kxnet.data.synthesis import Degradation, paper_degradation, step_generator
from kxnet.errors import StartupError

__all__ = ["KXNetDataModule", "ShardSampler"]

log = logging.getLogger(__name__)

# The paper's training set: DIV2K (800 images) + Flickr2K (2650).
PAPER_TRAIN_IMAGES = 3450


class ShardSampler(DistributedSampler):
    """Indices ``rank, rank + world, …`` of a dataset: every item on exactly one rank, no padding.

    A ``DistributedSampler`` (so Lightning does not wrap it in its own, padding one).
    """

    def __init__(self, dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


class KXNetDataModule(pl.LightningDataModule):
    """Training crops and benchmark test sets of one setting and scale.

    Args:
        train_dir: folder of HR training images (searched recursively).
        benchmark_dir: folder holding the benchmark sets (``Set5/``, ``Set14/``, …).
        cache_dir: where the degraded benchmark LR images are cached.
        setting, scale, kernel_size, sigma_range, noise_max: the paper's training degradation
            (:func:`~kxnet.data.synthesis.paper_degradation`; ``None`` takes the setting's,
            :mod:`kxnet.description`).
        degradation: the training degradation instead, a ``_target_`` mapping that builds a
            :class:`~kxnet.data.synthesis.Degradation` of this scale (the ``data/degradation``
            configs); None: the paper's.
        lr_patch_size: LR training patch side; HR crops are ``lr_patch_size · scale``.
        batch_size: the global training batch, divided over the DDP ranks.
        num_workers: of each rank's training loader.
        seed: seeds the crops, their order and the degradations.
        samples_per_epoch, repeat, cache_images, check: passed to ``HRImageFolder``.
        val_dir: folder of validation HR images (DIV2K's); None or no images there: hold
            ``val_images`` images out of the training folder instead.
        val_images: how many validation images (the first ones of ``val_dir``); 0: none.
        val_datasets: benchmark sets validated on as well (none by default: they are test sets).
        test_datasets: benchmark sets to test on; None: the paper's four, those missing under
            ``benchmark_dir`` skipped with a warning.
        val_noise, test_noise: their noise levels; ``None``: the paper's (0, and 15 in aniso).
        paper_data: the run presents itself as the paper's: a training folder with fewer
            images than DIV2K + Flickr2K is warned about.
    """

    def __init__(
        self,
        train_dir: str | os.PathLike,
        benchmark_dir: str | os.PathLike,
        cache_dir: str | os.PathLike,
        setting: str,
        scale: int,
        kernel_size: int | None = None,
        sigma_range: Sequence[float] | None = None,
        noise_max: float | None = None,
        lr_patch_size: int = 64,
        batch_size: int = 12,
        num_workers: int = 4,
        seed: int = 0,
        samples_per_epoch: int | None = None,
        repeat: int = 1,
        cache_images: bool | None = None,
        check: str = "verify",
        val_dir: str | os.PathLike | None = None,
        val_images: int = 10,
        val_datasets: Sequence[str] = (),
        val_noise: Sequence[float] | None = None,
        test_datasets: Sequence[str] | None = None,
        test_noise: Sequence[float] | None = None,
        pin_memory: bool = True,
        degradation: Mapping | None = None,
        paper_data: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_dir = resolve_path(train_dir)
        self.benchmark_dir = resolve_path(benchmark_dir)
        self.cache_dir = resolve_path(cache_dir)
        self.val_dir = resolve_path(val_dir) if val_dir else None
        self.setting, self.scale, self.seed = str(setting), int(scale), int(seed)
        self.degradation = self._degradation(kernel_size, sigma_range, noise_max)
        self.hr_patch_size = int(lr_patch_size) * self.scale
        self.train_set: HRImageFolder | None = None
        self.val_sets: list[BenchmarkSet] = []
        self.test_sets: list[BenchmarkSet] = []

    def _degradation(self, kernel_size, sigma_range, noise_max) -> Degradation:
        """The ``degradation`` config built, or the paper's degradation of these arguments."""
        config = self.hparams.degradation
        if config is None:
            return paper_degradation(self.setting, self.scale, kernel_size, sigma_range, noise_max)
        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
        degradation = instantiate(dict(config), _convert_="all")
        if not isinstance(degradation, Degradation) or degradation.scale != self.scale:
            raise ValueError(
                f"data.degradation must build a Degradation at x{self.scale}, got {degradation!r}"
            )
        return degradation

    def _val_files(self) -> list | None:
        """The first ``val_images`` images of ``val_dir``, or None if it holds none."""
        try:
            files = list_images(self.val_dir) if self.val_dir is not None else []
        except FileNotFoundError:
            files = []
        return files[: self.hparams.val_images] if files else None

    def _validation_set(self) -> BenchmarkSet | None:
        """The validation images, degraded once with one test kernel each (see the module)."""
        hp = self.hparams
        if not hp.val_images:
            return None
        files = self._val_files()
        name = f"{self.val_dir.name}" if files else None
        if files is None:
            files = self.load_train_set().held_out
            name = f"{self.train_dir.name}_heldout"
        noise = list(hp.val_noise) if hp.val_noise is not None else None
        return BenchmarkSet(
            self.benchmark_dir,
            name,
            self.setting,
            self.scale,
            noise,
            self.cache_dir,
            files=files,
            one_kernel=True,
        )

    def _benchmarks(
        self, names: Sequence[str] | None, noise: Sequence[float] | None
    ) -> list[BenchmarkSet]:
        present = []
        if names is None:
            names = DATASETS
        for name in names:
            if (self.benchmark_dir / name).is_dir():
                present.append(name)
            else:
                log.warning(
                    "skipping benchmark %s: no folder %s (set paths.benchmark_dir)",
                    name,
                    self.benchmark_dir / name,
                )
        return [
            BenchmarkSet(
                self.benchmark_dir,
                name,
                self.setting,
                self.scale,
                list(noise) if noise is not None else None,
                self.cache_dir,
            )
            for name in present
        ]

    def prepare_data(self) -> None:
        """Generate the benchmark caches the trainer's task needs, on one process per node."""
        hp = self.hparams
        task = self.trainer.state.fn if self.trainer is not None else None
        if task in (None, "fit", "validate"):
            self._validation_set()
            self._benchmarks(hp.val_datasets, hp.val_noise)
        if task in (None, "test"):
            self._benchmarks(hp.test_datasets, hp.test_noise)

    def load_train_set(self) -> HRImageFolder:
        """The training images, scanned and checked once (at start-up, or by ``setup``): an
        epoch must hold one global batch (StartupError), and a paper run on fewer images than
        the paper's is warned about."""
        if self.train_set is not None:
            return self.train_set
        hp = self.hparams
        holdout = hp.val_images if self._val_files() is None else 0
        train_set = HRImageFolder(
            self.train_dir,
            self.hr_patch_size,
            samples_per_epoch=hp.samples_per_epoch,
            repeat=hp.repeat,
            seed=self.seed,
            cache_images=hp.cache_images,
            check=hp.check,
            holdout=holdout,
        )
        images = len(train_set.images)
        if len(train_set) < hp.batch_size:
            raise StartupError(
                f"data.batch_size={hp.batch_size} is more than the {len(train_set)} patches of an "
                f"epoch ({images} images under {train_set.root}): lower data.batch_size, raise "
                "data.repeat or data.samples_per_epoch, or add images"
            )
        if hp.paper_data and images < PAPER_TRAIN_IMAGES:
            log.warning(
                "paths.train_dir=%s holds %d usable images; the paper trains on %d (DIV2K + "
                "Flickr2K, `make data`): results will not be the paper's",
                train_set.root,
                images,
                PAPER_TRAIN_IMAGES,
            )
        self.train_set = train_set
        return train_set

    def rank_batch_size(self, world_size: int) -> int:
        """Each rank's share of the global ``batch_size``; StartupError if it does not divide."""
        batch = self.hparams.batch_size
        if batch % world_size:
            raise StartupError(
                f"data.batch_size={batch} is the global batch and does not divide over "
                f"{world_size} DDP ranks: set data.batch_size to a multiple of {world_size} "
                f"(e.g. {batch // world_size * world_size or world_size}) or change trainer.devices"
            )
        return batch // world_size

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in ("fit", None):
            self.load_train_set()
        if stage in ("fit", "validate", None) and not self.val_sets:
            validation = self._validation_set()
            self.val_sets = [validation] * (validation is not None)
            self.val_sets += self._benchmarks(hp.val_datasets, hp.val_noise)
        if stage in ("test", None) and not self.test_sets:
            self.test_sets = self._benchmarks(hp.test_datasets, hp.test_noise)
            if not self.test_sets:
                raise FileNotFoundError(
                    f"none of test_datasets={hp.test_datasets or list(DATASETS)} is under "
                    f"{self.benchmark_dir}: set paths.benchmark_dir"
                )

    def train_dataloader(self) -> ResumableDataLoader:
        """Batches of HR crops; a checkpoint holds the loader's place in its epoch."""
        if self.train_set is None:
            raise RuntimeError("call setup('fit') before train_dataloader()")
        workers = self.hparams.num_workers
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        batch = self.rank_batch_size(world)
        log.info(
            "rank %d of %d: %d patches a step of the global batch of %d (data.batch_size)",
            rank,
            world,
            batch,
            self.hparams.batch_size,
        )
        return ResumableDataLoader(
            self.train_set,
            batch_size=batch,
            sampler=EpochSampler(len(self.train_set), seed=self.seed),
            num_workers=workers,
            pin_memory=self.hparams.pin_memory,
            drop_last=True,
            persistent_workers=workers > 0,
        )

    def _benchmark_loaders(self, sets: list[BenchmarkSet]) -> list[DataLoader]:
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        return [
            DataLoader(
                ds,
                batch_size=1,
                sampler=ShardSampler(ds, world, rank) if world > 1 else None,
                num_workers=min(self.hparams.num_workers, 2),
            )
            for ds in sets
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self._benchmark_loaders(self.val_sets)

    def test_dataloader(self) -> list[DataLoader]:
        return self._benchmark_loaders(self.test_sets)

    def synthesize(self, hr, rank: int, step: int) -> dict:
        """The training batch for HR crops B×3×H×W (uint8, or float in [0, 1]) at (rank, training
        batch index ``step``)."""
        return self.degradation(to_float(hr), step_generator(self.seed, rank, step, hr.device))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches (already on the device) get their degradation; others pass as is."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return batch
        # Batches handed out so far in the whole fit (restored on resume): this batch's index.
        step = trainer.fit_loop.epoch_loop.batch_progress.total.ready
        return self.synthesize(batch["hr"], trainer.global_rank, step)
