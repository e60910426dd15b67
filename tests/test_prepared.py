"""Prepared training folders (kxnet.data.prepared): the same crops as the images they come from,
atomic and resumable preparation, checked folders, and the command."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from kxnet.data.__main__ import main
from kxnet.data.hr_dataset import HRImageFolder
from kxnet.data.prepared import MANIFEST, is_prepared, prepare_folder, prepared_images
from kxnet.errors import ImageFolderError


def _quiet(_):
    pass


@pytest.fixture
def source(tmp_path):
    """Five 8-bit images in two folders, one EXIF-rotated (taller than wide once turned)."""
    root = tmp_path / "src"
    rng = np.random.default_rng(0)
    for k in range(5):
        folder = root / ("b" if k >= 3 else "a")
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(rng.integers(0, 256, (40 + 4 * k, 52, 3), dtype=np.uint8))
        exif = image.getexif()
        if k == 1:
            exif[0x0112] = 6  # rotate 90° clockwise on reading
        image.save(folder / f"img{k}.png", exif=exif)
    return root


def test_prepared_folder_gives_the_crops_of_its_images(source, tmp_path):
    dest = tmp_path / "prepared"
    assert prepare_folder(source, dest, report=_quiet) == (5, 0)
    assert is_prepared(dest) and not is_prepared(source)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.npy")) == [
        "a/img0.npy", "a/img1.npy", "a/img2.npy", "b/img3.npy", "b/img4.npy"
    ]  # fmt: skip
    assert np.load(dest / "a" / "img1.npy").shape == (52, 44, 3)  # EXIF orientation applied
    images = HRImageFolder(source, 24, seed=4, cache_images=False, repeat=3)
    prepared = HRImageFolder(dest, 24, seed=4, repeat=3)
    assert prepared.prepared and not prepared.cached
    assert [p.stem for p in prepared.images] == [p.stem for p in images.images]
    for i in range(2 * len(images)):
        a, b = images[i]["hr"], prepared[i]["hr"]
        assert b.dtype == torch.uint8 and torch.equal(a, b)


def test_preparation_resumes_and_redoes_changed_sources(source, tmp_path):
    dest = tmp_path / "prepared"
    prepare_folder(source, dest, report=_quiet)
    manifest = json.loads((dest / MANIFEST).read_text())
    manifest["images"] = manifest["images"][:3]
    manifest["complete"] = False
    (dest / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ImageFolderError, match="not completely prepared .*prepare .* again"):
        HRImageFolder(dest, 24)
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(source / "a" / "img0.png")
    assert prepare_folder(source, dest, report=_quiet) == (3, 2)  # img0 changed, 2 not listed
    assert np.load(dest / "a" / "img0.npy").shape == (30, 30, 3)
    assert not list(dest.rglob("*.partial"))
    assert len(prepared_images(dest, "verify")) == 5


def test_damaged_prepared_folders_are_refused_with_the_fix(source, tmp_path):
    dest = tmp_path / "prepared"
    prepare_folder(source, dest, report=_quiet)
    (dest / "b" / "img4.npy").write_bytes(b"\x93NUMPY")
    HRImageFolder(dest, 24, check="header")  # the manifest alone is trusted
    with pytest.raises(ImageFolderError, match=r"img4\.npy is missing or truncated: run .*prepare"):
        HRImageFolder(dest, 24, check="verify")
    (dest / MANIFEST).write_text("{")
    with pytest.raises(ImageFolderError, match="not readable"):
        HRImageFolder(dest, 24)


def test_unreadable_sources_are_named_and_the_rest_prepared(source, tmp_path):
    (source / "a" / "bad.png").write_bytes(b"not an image")
    dest = tmp_path / "prepared"
    with pytest.raises(ImageFolderError, match=r"1 unreadable image file.*bad\.png"):
        prepare_folder(source, dest, report=_quiet)
    assert len(list(dest.rglob("*.npy"))) == 5
    assert not json.loads((dest / MANIFEST).read_text())["complete"]


def test_sixteen_bit_images_stay_sixteen_bit(tmp_path):
    src = tmp_path / "src16"
    src.mkdir()
    Image.fromarray(np.full((32, 32), 0x1234, dtype=np.uint16)).save(src / "g.png")
    prepare_folder(src, tmp_path / "p16", report=_quiet)
    assert np.load(tmp_path / "p16" / "g.npy").dtype == np.uint16
    patch = HRImageFolder(tmp_path / "p16", 16)[0]["hr"]
    assert torch.allclose(patch, torch.full_like(patch, 0x1234 / 65535))


def test_the_prepare_command(source, tmp_path, capsys):
    assert main(["prepare", str(source), str(source / "inside")]) != 0
    assert "must lie outside SRC" in capsys.readouterr().err
    assert main(["prepare", str(source), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "5 images" in out and f"paths.train_dir={tmp_path / 'out'}" in out
