"""HR training patches: start-up checks, crops, the 8 dihedral transforms, seeding over workers."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from kxnet.data.hr_dataset import EpochSampler, HRImageFolder, find_training_images
from kxnet.errors import ImageFolderError


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    """Six 40×56 images with distinct content, two of them in a subfolder."""
    root = tmp_path / "train"
    for k in range(6):
        _save(root / ("sub" if k >= 4 else "") / f"img{k}.png", _noise(40, 56, seed=k))
    return root


def test_patches_have_the_requested_shape_and_range(folder):
    ds = HRImageFolder(folder, 32, seed=1)
    assert len(ds) == 6
    item = ds[3]
    assert set(item) == {"hr"}
    # 8-bit images give uint8 patches (the device converts them to [0, 1])
    assert item["hr"].shape == (3, 32, 32) and item["hr"].dtype == torch.uint8
    assert item["hr"].is_contiguous()


@pytest.mark.parametrize("patch_size", [0, -4, 2.5, True])
def test_bad_patch_size_is_refused(folder, patch_size):
    with pytest.raises(ValueError, match="patch_size must be a positive integer"):
        HRImageFolder(folder, patch_size)


def test_patch_is_a_crop_of_one_image(folder):
    ds = HRImageFolder(folder, 24, augment=False, seed=3)
    images = [torch.from_numpy(_noise(40, 56, seed=k)).permute(2, 0, 1) for k in range(6)]
    for i in range(6):
        patch = ds[i]["hr"]
        hits = [
            (k, t, left)
            for k, img in enumerate(images)
            for t in range(40 - 24 + 1)
            for left in range(56 - 24 + 1)
            if torch.equal(img[:, t : t + 24, left : left + 24], patch)
        ]
        assert len(hits) == 1


def test_all_eight_dihedral_transforms_occur_and_nothing_else(tmp_path):
    arr = _noise(16, 16, seed=7)
    _save(tmp_path / "one" / "a.png", arr)
    ds = HRImageFolder(tmp_path / "one", 16, samples_per_epoch=200, seed=0)
    expected = {}
    for k in range(4):
        for flip in (False, True):
            t = np.rot90(arr, k)
            expected[(np.fliplr(t) if flip else t).tobytes()] = (k, flip)
    seen = set()
    for i in range(200):
        out = ds[i]["hr"].permute(1, 2, 0).numpy()
        assert out.tobytes() in expected
        seen.add(expected[out.tobytes()])
    assert len(expected) == 8 and len(seen) == 8


def test_same_seed_repeats_other_seed_or_epoch_differs(folder):
    a = HRImageFolder(folder, 16, seed=5)
    b = HRImageFolder(folder, 16, seed=5, cache_images=False)
    c = HRImageFolder(folder, 16, seed=6)
    assert a.cached and not b.cached
    for i in range(len(a)):
        assert torch.equal(a[i]["hr"], b[i]["hr"])
    assert any(not torch.equal(a[i]["hr"], c[i]["hr"]) for i in range(len(a)))
    next_epoch = [a[len(a) + i]["hr"] for i in range(len(a))]
    assert any(not torch.equal(a[i]["hr"], next_epoch[i]) for i in range(len(a)))


def _image_of(ds, patch, images):
    """Which image a non-augmented patch comes from (the images are constant colours)."""
    return images.index(tuple(patch[:, 0, 0].tolist()))


def test_each_round_visits_every_image_once(tmp_path):
    images = [(k * 20, 255 - k * 20, 7) for k in range(7)]
    for k, c in enumerate(images):
        _save(tmp_path / "c" / f"{k}.png", np.full((20, 20, 3), c, dtype=np.uint8))
    ds = HRImageFolder(tmp_path / "c", 8, samples_per_epoch=21, augment=False, seed=2)
    for epoch in range(2):
        for r in range(3):
            picks = [_image_of(ds, ds[epoch * 21 + r * 7 + j]["hr"], images) for j in range(7)]
            assert sorted(picks) == list(range(7))
    short = HRImageFolder(tmp_path / "c", 8, samples_per_epoch=3, augment=False, seed=2)
    firsts = {
        tuple(_image_of(short, short[e * 3 + j]["hr"], images) for j in range(3)) for e in range(8)
    }
    assert len(firsts) > 1  # a short epoch does not always take the same images


def test_epoch_sampler_carries_the_epoch_and_repeats(folder):
    sampler = EpochSampler(10, seed=4)
    first = list(sampler)
    assert sorted(first) == list(range(10)) and first != list(range(10))
    assert list(EpochSampler(10, seed=4)) == first
    sampler.set_epoch(3)
    third = list(sampler)
    assert sorted(third) == list(range(30, 40))
    assert list(EpochSampler(10, seed=4, epoch=3)) == third
    assert list(EpochSampler(10, shuffle=False, epoch=1)) == list(range(10, 20))


def _batches(ds, workers, epochs, persistent=False):
    sampler = EpochSampler(len(ds), seed=9)
    loader = DataLoader(
        ds, batch_size=4, sampler=sampler, num_workers=workers, persistent_workers=persistent
    )
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out.append(torch.cat([b["hr"] for b in loader]))
    return out


def test_patches_do_not_depend_on_workers(folder):
    ds = HRImageFolder(folder, 16, samples_per_epoch=12, seed=11)
    alone = _batches(ds, 0, 2)
    assert not torch.equal(alone[0], alone[1])
    for got, want in zip(_batches(ds, 2, 2, persistent=True), alone, strict=True):
        assert torch.equal(got, want)


# --- start-up checks -------------------------------------------------------------------------


def test_images_smaller_than_a_patch_are_skipped_with_one_warning(folder, caplog):
    _save(folder / "tiny.png", _noise(20, 50))
    _save(folder / "sub" / "thin.png", _noise(50, 12))
    with caplog.at_level(logging.WARNING, logger="kxnet.data.hr_dataset"):
        ds = HRImageFolder(folder, 32)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "tiny.png (50×20)" in warnings[0] and "sub/thin.png (12×50)" in warnings[0]
    assert "2 of 8" in warnings[0]
    assert all(p.name not in ("tiny.png", "thin.png") for p in ds.images) and len(ds.images) == 6


def test_no_image_large_enough_is_refused(folder):
    with pytest.raises(ImageFolderError, match="none of the 6 images .* 64×64"):
        HRImageFolder(folder, 64)


def test_empty_folder_is_refused_with_the_fix(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ImageFolderError, match="no image files") as err:
        HRImageFolder(tmp_path / "empty", 16)
    assert "paths.train_dir" in str(err.value) and "make data" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_folder_is_refused_with_the_fix(tmp_path):
    with pytest.raises(
        ImageFolderError,
        match="does not exist: fetch and prepare DIV2K .*make data.* or set paths.train_dir",
    ):
        HRImageFolder(tmp_path / "nowhere", 16)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(ImageFolderError, match="is not a folder"):
        HRImageFolder(tmp_path / "file.png", 16)


@pytest.mark.parametrize("cache", [True, False])
def test_bad_files_stop_start_up_naming_each(folder, cache):
    good = (folder / "img0.png").read_bytes()
    (folder / "sub" / "cut.png").write_bytes(good[: len(good) // 2])
    (folder / "zero.png").touch()
    (folder / "text.png").write_text("hello")
    with pytest.raises(ImageFolderError) as err:
        HRImageFolder(folder, 16, cache_images=cache)
    message = str(err.value)
    assert "\n" not in message
    assert "zero.png: empty file" in message and "text.png: not a readable image" in message
    if cache:  # the cache decodes every image: the truncated one is found too
        assert "sub/cut.png" in message


def test_truncated_file_is_found_by_verify_not_by_header(folder):
    good = (folder / "img0.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    assert len(find_training_images(folder, 16, "header")) == 7
    with pytest.raises(ImageFolderError, match=r"1 unreadable image file\(s\) in .*: cut\.png"):
        find_training_images(folder, 16, "verify")
    with pytest.raises(ImageFolderError, match=r"cut\.png"):
        HRImageFolder(folder, 16, cache_images=False)


def test_sixteen_bit_images_give_full_precision_patches(tmp_path):
    gray = np.full((24, 24), 0x12FF, dtype=np.uint16)
    path = tmp_path / "g" / "g16.png"
    path.parent.mkdir()
    Image.fromarray(gray).save(path)
    for cache in (True, False):
        patch = HRImageFolder(tmp_path / "g", 16, cache_images=cache)[0]["hr"]
        assert torch.allclose(patch, torch.full_like(patch, 0x12FF / 65535))


def test_cache_follows_the_memory_limit(folder):
    assert HRImageFolder(folder, 16).cached
    assert not HRImageFolder(folder, 16, cache_max_bytes=1000).cached


def test_each_epoch_draws_new_crops_of_the_same_image(tmp_path):
    _save(tmp_path / "one" / "a.png", _noise(64, 64, seed=3))
    ds = HRImageFolder(tmp_path / "one", 16, samples_per_epoch=4, augment=False)
    for i in range(4):
        assert not torch.equal(ds[i]["hr"], ds[4 + i]["hr"])


def test_lightning_ddp_wrapper_shards_epochs_over_ranks(folder):
    """Lightning wraps a custom sampler per rank and forwards set_epoch to it."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    ds = HRImageFolder(folder, 16, samples_per_epoch=12, seed=1)
    ranks = [
        DistributedSamplerWrapper(EpochSampler(len(ds), seed=1), num_replicas=2, rank=r)
        for r in range(2)
    ]
    for epoch in (0, 1):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        shards = [list(sampler) for sampler in ranks]
        assert sorted(shards[0] + shards[1]) == list(range(12 * epoch, 12 * epoch + 12))
        patches = [ds[i]["hr"] for i in shards[0]], [ds[i]["hr"] for i in shards[1]]
        assert all(not torch.equal(a, b) for a in patches[0] for b in patches[1])
