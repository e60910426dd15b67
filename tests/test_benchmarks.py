import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from kxnet import kernels, physics
from kxnet.data import benchmarks
from kxnet.data.benchmarks import BenchmarkSet, mod_crop, noise_seed


def _write_png(path, h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], axis=-1) * 200
    img = np.clip(base + rng.uniform(0, 55, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)


@pytest.fixture
def hr_root(tmp_path):
    folder = tmp_path / "bench" / "Tiny"
    folder.mkdir(parents=True)
    _write_png(folder / "a.png", 50, 37, 0)
    _write_png(folder / "b.png", 44, 61, 1)
    return tmp_path / "bench"


def _set(hr_root, tmp_path, setting="iso", scale=3, noise=(0.0,)):
    return BenchmarkSet(hr_root, "Tiny", setting, scale, noise, tmp_path / "cache")


def test_items_follow_the_benchmark_batch_format(hr_root, tmp_path):
    ds = _set(hr_root, tmp_path)
    assert len(ds) == 2 * 8
    batch = next(iter(DataLoader(ds, batch_size=1)))
    assert batch["lr"].shape == (1, 3, 16, 12) and batch["lr"].dtype == torch.float32
    assert batch["hr"].shape == (1, 3, 48, 36)
    assert batch["kernel"].shape == (1, 21, 21)
    assert batch["dataset"] == ["Tiny"] and batch["image"] == ["a"]
    assert batch["kernel_index"].dtype == torch.long and batch["kernel_index"].tolist() == [0]
    assert batch["noise"].shape == (1,) and batch["noise"].item() == 0
    assert torch.equal(batch["lr"] * 255, torch.round(batch["lr"] * 255))
    items = [(ds[i]["image"], ds[i]["kernel_index"]) for i in range(len(ds))]
    assert items == [(s, k) for s in ("a", "b") for k in range(8)]


@pytest.mark.parametrize("setting,scale,noise", [("iso", 2, 0.0), ("aniso", 4, 15.0)])
def test_lr_is_the_paper_degradation_quantised(hr_root, tmp_path, setting, scale, noise):
    ds = _set(hr_root, tmp_path, setting, scale, (noise,))
    bank, _ = kernels.test_bank(setting, scale)
    for i in range(len(ds)):
        item = ds[i]
        hr = torch.from_numpy(np.array(Image.open(ds.files[i // 8]))).permute(2, 0, 1)
        hr = mod_crop(hr.float() / 255, scale)
        assert torch.equal(item["hr"], hr)
        k = item["kernel_index"]
        torch.testing.assert_close(item["kernel"], bank[k].float())
        lr = physics.blur_downsample(hr[None], bank[k : k + 1].float(), scale)[0]
        g = torch.Generator().manual_seed(noise_seed("Tiny", item["image"], k, noise))
        lr = lr + torch.randn(lr.shape, generator=g) * noise / 255
        expected = torch.round(lr.clamp(0, 1) * 255) / 255
        assert torch.equal(item["lr"], expected)


def test_noise_level_and_seeds_are_distinct_per_item(hr_root, tmp_path):
    clean = _set(hr_root, tmp_path, "aniso", 2, (0.0,))
    noisy = _set(hr_root, tmp_path, "aniso", 2, (15.0,))
    diffs = torch.stack([(noisy[i]["lr"] - clean[i]["lr"]) for i in range(8)])
    assert abs(diffs.std().item() * 255 / 15 - 1) < 0.05
    assert not torch.equal(diffs[0], diffs[1])
    seeds = {noise_seed("Tiny", s, k, n) for s in "ab" for k in range(8) for n in (0, 5, 15)}
    assert len(seeds) == 2 * 8 * 3


def test_generation_is_deterministic_across_caches(hr_root, tmp_path):
    a = BenchmarkSet(hr_root, "Tiny", "aniso", 3, (5.0,), tmp_path / "one")
    b = BenchmarkSet(hr_root, "Tiny", "aniso", 3, (5.0,), tmp_path / "two")
    for i in range(len(a)):
        assert a.lr_path(*a.items[i][:1], a.items[i][2], 5.0).read_bytes() == (
            b.lr_path(*b.items[i][:1], b.items[i][2], 5.0).read_bytes()
        )


def test_manifest_records_the_protocol(hr_root, tmp_path):
    ds = _set(hr_root, tmp_path, "aniso", 2, (0.0, 15.0))
    manifest = json.loads((ds.cache / "manifest.json").read_text())
    _, params = kernels.test_bank("aniso", 2)
    assert manifest["kernels"] == params
    assert manifest["protocol"] == benchmarks.PROTOCOL_VERSION
    assert manifest["noise_seed"] == benchmarks.NOISE_SEED
    assert (manifest["setting"], manifest["scale"], manifest["kernel_size"]) == ("aniso", 2, 11)
    assert manifest["noise"] == [0.0, 15.0]
    assert set(manifest["images"]) == {"a.png", "b.png"}
    assert all(len(h) == 64 for h in manifest["images"].values())
    assert not list(ds.cache.glob("*.tmp")) and not list(ds.cache.glob(".*"))


def _forbid_generation(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the cache was regenerated")

    monkeypatch.setattr(benchmarks, "degrade", fail)


def test_second_construction_reuses_the_cache(hr_root, tmp_path, monkeypatch):
    _set(hr_root, tmp_path, "aniso", 2, (0.0, 15.0))
    _forbid_generation(monkeypatch)
    ds = _set(hr_root, tmp_path, "aniso", 2, (15.0, 0.0))
    assert len(ds) == 2 * 2 * 8
    ds = _set(hr_root, tmp_path, "aniso", 2, (15.0,))
    assert ds[0]["noise"].item() == 15


def test_a_new_noise_level_generates_only_that_level(hr_root, tmp_path, monkeypatch):
    _set(hr_root, tmp_path, "aniso", 2, (0.0,))
    calls = []
    real = benchmarks.degrade

    def spy(hr, bank, scale, noise, seeds):
        calls.append(noise)
        return real(hr, bank, scale, noise, seeds)

    monkeypatch.setattr(benchmarks, "degrade", spy)
    ds = _set(hr_root, tmp_path, "aniso", 2, (0.0, 5.0))
    assert calls == [5.0, 5.0]
    assert json.loads((ds.cache / "manifest.json").read_text())["noise"] == [0.0, 5.0]


def test_changed_hr_image_makes_the_cache_stale(hr_root, tmp_path, caplog):
    ds = _set(hr_root, tmp_path)
    before = ds[0]["lr"]
    _write_png(hr_root / "Tiny" / "a.png", 50, 37, 7)
    with caplog.at_level(logging.WARNING):
        ds = _set(hr_root, tmp_path)
    assert "images changed" in caplog.text and str(ds.cache) in caplog.text
    after = ds[0]["lr"]
    assert not torch.equal(before, after)
    hr = ds[0]["hr"][None]
    expected = physics.blur_downsample(hr, ds.kernels[:1], 3)
    assert torch.equal(after, torch.round(expected[0].clamp(0, 1) * 255) / 255)


@pytest.mark.parametrize("key,value", [("protocol", 0), ("noise_seed", 1), ("kernels", [])])
def test_a_manifest_that_differs_is_regenerated(hr_root, tmp_path, key, value, caplog):
    ds = _set(hr_root, tmp_path)
    path = ds.cache / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest[key] = value
    path.write_text(json.dumps(manifest))
    stamp = ds.lr_path(0, 0, 0.0).stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        _set(hr_root, tmp_path)
    assert f"{key} changed" in caplog.text
    assert json.loads(path.read_text())[key] != value
    assert ds.lr_path(0, 0, 0.0).stat().st_mtime_ns != stamp


def test_missing_lr_file_or_broken_manifest_is_regenerated(hr_root, tmp_path):
    ds = _set(hr_root, tmp_path)
    ds.lr_path(1, 3, 0.0).unlink()
    ds = _set(hr_root, tmp_path)
    assert ds.lr_path(1, 3, 0.0).is_file()
    (ds.cache / "manifest.json").write_text("{not json")
    ds = _set(hr_root, tmp_path)
    assert json.loads((ds.cache / "manifest.json").read_text())["noise"] == [0.0]


def test_interrupted_generation_leaves_no_manifest_nor_temp_files(hr_root, tmp_path, monkeypatch):
    real, calls = benchmarks.degrade, []

    def dies_on_second_image(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(benchmarks, "degrade", dies_on_second_image)
    with pytest.raises(KeyboardInterrupt):
        _set(hr_root, tmp_path)
    cache = tmp_path / "cache" / "Tiny" / "iso_x3"
    assert not (cache / "manifest.json").exists()
    assert sorted(p.name for p in cache.iterdir()) == [f"a_k{k}_n0.png" for k in range(8)]
    monkeypatch.setattr(benchmarks, "degrade", real)
    assert len(_set(hr_root, tmp_path)) == 16


def test_bad_folders_and_arguments_raise_clear_errors(tmp_path, hr_root):
    with pytest.raises(FileNotFoundError, match="paths.benchmark_dir"):
        BenchmarkSet(tmp_path / "nowhere", "Set5", "iso", 2, None, tmp_path / "cache")
    (tmp_path / "bench" / "Empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        BenchmarkSet(tmp_path / "bench", "Empty", "iso", 2, None, tmp_path / "cache")
    with pytest.raises(ValueError, match="noise"):
        _set(hr_root, tmp_path, noise=(-5.0,))
    with pytest.raises(ValueError, match="setting"):
        _set(hr_root, tmp_path, setting="gauss")
    broken = hr_root / "Tiny" / "c.png"
    broken.write_text("not an image")
    with pytest.raises(ValueError, match="c.png"):
        _set(hr_root, tmp_path)


def test_default_noise_levels():
    assert benchmarks.default_noise("iso") == (0.0,)
    assert benchmarks.default_noise("aniso") == (0.0, 15.0)


@pytest.mark.parametrize("other", ["a.bmp", "A.png"])
def test_two_images_of_one_cached_name_are_refused(hr_root, tmp_path, other):
    _write_png(hr_root / "Tiny" / other, 40, 40, 2)
    if len(list((hr_root / "Tiny").iterdir())) < 3:
        pytest.skip("this file system ignores case")
    with pytest.raises(ValueError, match=r"share a file stem without regard to case \(.*a\.png"):
        _set(hr_root, tmp_path)
