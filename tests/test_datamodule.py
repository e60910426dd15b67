from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from kxnet import physics
from kxnet.config import project_root
from kxnet.data.benchmarks import BenchmarkSet
from kxnet.data.datamodule import KXNetDataModule, ShardSampler
from kxnet.errors import StartupError
from trainhelp import compose_train

REPO = project_root()
BUNDLED = REPO / "data" / "benchmarks"


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (100, 90, 3), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
    return folder


def _dm(train_dir, tmp_path, setting="iso", scale=2, **kwargs):
    args = dict(
        train_dir=train_dir,
        benchmark_dir=BUNDLED,
        cache_dir=tmp_path / "cache",
        setting=setting,
        scale=scale,
        lr_patch_size=8,
        batch_size=4,
        num_workers=0,
        pin_memory=False,
        check="header",
        repeat=2,
        val_images=0,
    )
    return KXNetDataModule(**(args | kwargs))


@pytest.mark.parametrize("setting", ["iso", "aniso"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_training_batches_for_every_setting_and_scale(train_dir, tmp_path, setting, scale):
    dm = _dm(train_dir, tmp_path, setting, scale)
    dm.setup("fit")
    hr = next(iter(dm.train_dataloader()))["hr"]
    assert hr.shape == (4, 3, 8 * scale, 8 * scale)
    batch = dm.synthesize(hr, rank=0, step=0)
    p = 21 if setting == "iso" or scale == 4 else {2: 11, 3: 15}[scale]
    assert batch["lr"].shape == (4, 3, 8, 8)
    assert batch["kernel"].shape == (4, p, p)
    assert batch["kernel_params"].shape == (4, 3) and batch["noise"].shape == (4,)
    assert (batch["noise"] > 0).all() == (setting == "aniso")


def test_paper_config_setting2_x4_gives_lr64_from_hr256_with_21x21_kernels(tmp_path):
    cfg = compose_train(tmp_path, "setting=aniso", "scale=4")
    assert (cfg.data.batch_size, cfg.data.lr_patch_size) == (12, 64)
    bundled = REPO / "data" / "train"
    dm = instantiate(
        cfg.data,
        train_dir=str(bundled),
        val_images=0,
        cache_dir=str(tmp_path),
        num_workers=0,
        check="header",
        pin_memory=False,
    )
    assert dm.hr_patch_size == 256
    assert dm.degradation.kernel_size == 21 and dm.degradation[1].sigma == (0.0, 25.0)
    assert dm.degradation.sigma_range == (0.6, 5.0)
    dm.setup("fit")
    hr = next(iter(dm.train_dataloader()))["hr"]
    assert hr.shape == (12, 3, 256, 256)
    batch = dm.synthesize(hr, rank=0, step=0)
    assert batch["lr"].shape == (12, 3, 64, 64)
    assert batch["kernel"].shape == (12, 21, 21)
    assert batch["noise"].max() <= 25


class _Recorder(pl.LightningModule):
    """Records what reaches the steps; learns nothing."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.train_batches, self.val_batches = [], []

    def training_step(self, batch, batch_idx):
        self.train_batches.append({k: v.clone() for k, v in batch.items()})
        return self.weight * batch["lr"].mean()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.val_batches.append(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _trainer(**kwargs):
    args = dict(
        accelerator="cpu",
        devices=1,
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    return pl.Trainer(**(args | kwargs))


def _fit(train_dir, tmp_path, seed, setting="aniso", **kwargs):
    module = _Recorder()
    _trainer().fit(module, datamodule=_dm(train_dir, tmp_path, setting, 2, seed=seed, **kwargs))
    return module.train_batches


def test_trainer_batches_are_degraded_with_fresh_kernels_every_step_and_repeat_per_seed(
    train_dir, tmp_path
):
    batches = _fit(train_dir, tmp_path, seed=3)
    assert len(batches) == 3
    for b in batches:
        assert set(b) == {"lr", "hr", "kernel", "kernel_params", "noise"}
        assert b["lr"].shape == (4, 3, 8, 8) and b["hr"].shape == (4, 3, 16, 16)
        assert (b["noise"] > 0).all()
        blurred = physics.blur_downsample(b["hr"], b["kernel"], 2)
        residual = (b["lr"] - blurred).flatten(1).std(1) * 255
        assert (residual < b["noise"] * 1.5 + 0.5).all()
    params = [tuple(b["kernel_params"].flatten().tolist()) for b in batches]
    assert len(set(params)) == 3
    again = _fit(train_dir, tmp_path, seed=3)
    for x, y in zip(batches, again, strict=True):
        for key in x:
            assert torch.equal(x[key], y[key])
    other = _fit(train_dir, tmp_path, seed=4)
    assert not torch.equal(batches[0]["kernel"], other[0]["kernel"])


def test_the_realistic_config_degrades_the_trainers_batches_reproducibly(train_dir, tmp_path):
    with initialize_config_module("kxnet.conf.train", version_base="1.3"):
        cfg = compose("train", overrides=["data/degradation=realistic"])
    degradation = OmegaConf.to_container(cfg.data.degradation, resolve=True)
    assert degradation["setting"] == "iso" and degradation["scale"] == 2
    batches = _fit(train_dir, tmp_path, seed=3, setting="iso", degradation=degradation)
    for b in batches:
        assert {"lr", "hr", "kernel", "kernel_params", "noise", "jpeg_quality"} <= set(b)
        assert b["lr"].shape == (4, 3, 8, 8) and b["kernel"].shape == (4, 21, 21)
    again = _fit(train_dir, tmp_path, seed=3, setting="iso", degradation=degradation)
    for x, y in zip(batches, again, strict=True):
        for key in x:
            torch.testing.assert_close(x[key], y[key], rtol=0, atol=0, equal_nan=True)
    with pytest.raises(ValueError, match="Degradation at x3"):
        _dm(train_dir, tmp_path, "iso", 3, degradation=degradation)


def test_validation_batches_are_the_cached_benchmark_items_once_each(train_dir, tmp_path):
    dm = _dm(train_dir, tmp_path, "aniso", 3, val_datasets=["Set5", "Missing"])
    module = _Recorder()
    _trainer(limit_val_batches=1.0).validate(module, datamodule=dm)
    assert len(module.val_batches) == 5 * 8 * 2
    b = module.val_batches[0]
    assert b["lr"].shape[0] == 1 and b["dataset"] == ["Set5"]
    assert b["kernel"].shape == (1, 15, 15)
    keys = {(v["image"][0], int(v["kernel_index"]), float(v["noise"])) for v in module.val_batches}
    assert len(keys) == 80
    assert (tmp_path / "cache" / "Set5" / "aniso_x3" / "manifest.json").is_file()


def test_validation_holds_images_out_of_training_when_there_is_no_val_dir(train_dir, tmp_path):
    dm = _dm(train_dir, tmp_path, "aniso", 2, val_images=2, val_dir=tmp_path / "absent")
    dm.setup("fit")
    held = dm.train_set.held_out
    assert len(held) == 2 and not set(held) & set(dm.train_set.images)
    assert len(dm.train_set.images) == 4
    (validation,) = dm.val_sets
    assert validation.name == f"{train_dir.name}_heldout" and validation.files == held
    # one test kernel per image (image i with kernel i mod 8), at noise 0 and 15
    assert [(i, n, k) for i, n, k in validation.items] == [
        (0, 0, 0),
        (0, 15, 0),
        (1, 0, 1),
        (1, 15, 1),
    ]


def test_held_out_images_are_never_drawn_for_training(tmp_path):
    colours = {f"{k}.png": (30 * k, 200 - 20 * k, 9) for k in range(7)}
    folder = tmp_path / "colours"
    folder.mkdir()
    for name, c in colours.items():
        Image.fromarray(np.full((24, 24, 3), c, dtype=np.uint8)).save(folder / name)
    dm = _dm(folder, tmp_path, val_images=3, lr_patch_size=4, repeat=5)
    train_set = dm.load_train_set()
    held = {colours[p.name] for p in train_set.held_out}
    seen = {tuple(train_set[i]["hr"][:, 0, 0].tolist()) for i in range(3 * len(train_set))}
    assert len(held) == 3 and seen == set(colours.values()) - held


def test_validation_takes_the_first_images_of_val_dir(train_dir, tmp_path):
    val_dir = tmp_path / "valid"
    val_dir.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(
            val_dir / f"{801 + i:04d}.png"
        )
    dm = _dm(train_dir, tmp_path, "iso", 2, val_images=3, val_dir=val_dir)
    dm.setup("fit")
    assert dm.train_set.held_out == [] and len(dm.train_set.images) == 6
    (validation,) = dm.val_sets
    assert [p.name for p in validation.files] == ["0801.png", "0802.png", "0803.png"]
    assert len(validation) == 3


def test_the_global_batch_is_divided_over_the_ranks(train_dir, tmp_path):
    dm = _dm(train_dir, tmp_path, batch_size=12)
    assert [dm.rank_batch_size(w) for w in (1, 2, 4)] == [12, 6, 3]
    with pytest.raises(StartupError, match=r"data\.batch_size=12 .* 5 DDP ranks"):
        dm.rank_batch_size(5)


def test_shard_sampler_gives_every_item_to_exactly_one_rank(tmp_path):
    ds = BenchmarkSet(BUNDLED, "Set5", "iso", 4, None, tmp_path)
    shards = [list(ShardSampler(ds, 3, r)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(len(ds)))
    assert [len(ShardSampler(ds, 3, r)) for r in range(3)] == [len(s) for s in shards]


def test_test_setup_without_any_benchmark_folder_fails_clearly(train_dir, tmp_path):
    dm = _dm(train_dir, tmp_path, benchmark_dir=tmp_path / "none", test_datasets=["Set5"])
    with pytest.raises(FileNotFoundError, match="paths.benchmark_dir"):
        dm.setup("test")


class _RankRecorder(_Recorder):
    """Saves each rank's training kernels and validation items to ``out/rank<r>.pt``."""

    def __init__(self, out):
        super().__init__()
        self.out = str(out)

    def on_fit_end(self):
        seen = [
            (v["image"][0], int(v["kernel_index"]), float(v["noise"])) for v in self.val_batches
        ]
        kernels = torch.stack([b["kernel_params"] for b in self.train_batches])
        torch.save({"kernels": kernels, "val": seen}, f"{self.out}/rank{self.global_rank}.pt")


@pytest.mark.slow
def test_two_ddp_ranks_draw_distinct_kernels_and_share_validation(train_dir, tmp_path):
    dm = _dm(train_dir, tmp_path, "iso", 4, val_datasets=["Set5"], repeat=8)
    trainer = _trainer(
        devices=2, strategy="ddp_spawn", limit_val_batches=1.0, val_check_interval=2, max_steps=2
    )
    trainer.fit(_RankRecorder(tmp_path), datamodule=dm)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    # data.batch_size=4 is the global batch: 2 patches a step on each of the 2 ranks
    assert r0["kernels"].shape == r1["kernels"].shape == (2, 2, 3)
    assert not set(r0["kernels"][..., 0].flatten().tolist()) & set(
        r1["kernels"][..., 0].flatten().tolist()
    )
    assert not set(r0["val"]) & set(r1["val"])
    assert len(r0["val"]) + len(r1["val"]) == 5 * 8


@pytest.mark.parametrize("degradation", ["paper", "realistic"])
def test_the_shipped_training_degradations_give_8_bit_lr(tmp_path, train_dir, degradation):
    """Through the shipped data config (data/degradation=paper|realistic), as training builds
    it: the LR images lie on the 8-bit grid, as the authors' training data does."""
    with initialize_config_module("kxnet.conf.train", version_base="1.3"):
        cfg = compose("train", overrides=[f"data/degradation={degradation}", "scale=2"])
    dm = instantiate(cfg.data, train_dir=str(train_dir), cache_dir=str(tmp_path), val_images=0)
    hr = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    lr = dm.synthesize(hr, rank=0, step=0)["lr"]
    assert lr.shape == (4, 3, 16, 16)
    assert torch.equal(lr * 255, (lr * 255).round())
    assert lr.min() >= 0 and lr.max() <= 1


def test_each_rank_loads_its_share_of_the_global_batch(train_dir, tmp_path, caplog):
    """The loader of rank 1 of 2 yields 6 patches a step of data.batch_size=12, as its log line
    says."""
    caplog.set_level("INFO")
    dm = _dm(train_dir, tmp_path, batch_size=12)
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)
    dm.setup("fit")
    hr = next(iter(dm.train_dataloader()))["hr"]
    assert hr.shape[0] == 6
    assert "rank 1 of 2: 6 patches a step of the global batch of 12" in caplog.text


def test_an_epoch_must_hold_one_global_batch(train_dir, tmp_path):
    assert len(_dm(train_dir, tmp_path, batch_size=12).load_train_set()) == 12  # 6 images × 2
    dm = _dm(train_dir, tmp_path, batch_size=13)
    with pytest.raises(StartupError) as refused:
        dm.load_train_set()
    assert str(refused.value) == (
        f"data.batch_size=13 is more than the 12 patches of an epoch (6 images under {train_dir}):"
        " lower data.batch_size, raise data.repeat or data.samples_per_epoch, or add images"
    )
    assert dm.train_set is None


@pytest.mark.parametrize("paper_data", [False, True])
def test_a_paper_run_on_fewer_images_than_the_papers_is_warned_about(
    train_dir, tmp_path, caplog, paper_data
):
    _dm(train_dir, tmp_path, paper_data=paper_data).load_train_set()
    warned = f"paths.train_dir={train_dir} holds 6 usable images; the paper trains on 3450"
    assert (warned in caplog.text) == paper_data
